/**
 * `npx tsx testbed/ident-upgrade.ts [--old-bundle FILE] [--lbs blue,blue,green,green] [--active green] [--no-color-fallback] [--keep-going]`
 *
 * The upgrade of a deployed stack from the shared-key build (bd53a1e: HMAC `peer.key`, wire
 * version 1) to the per-member identity build (this checkout's dist/fipd.cjs: Ed25519, wire
 * version 2), in the network test bed, with the stack's own scripts over SSH, as `pulumi up` runs
 * them: first the cluster is deployed with the old bundle and an old-form payload; then, with a
 * client requesting through the Reserved IP every 50 ms, each droplet in rollingOrder gets the new
 * bundle, its apply-config step (the new payload) and its first-pass restart, and then every
 * droplet's second pass (the leader's handover and restart) and the final color check.
 *
 * Prints each step's outcome, the failed requests, the number of assigns, and the most members that
 * called themselves leader at one time (sampled every 100 ms). Exits 1 when a step failed, a
 * request failed, or two members led at once. Pulumi stops at a failed step (every later step
 * depends on it); --keep-going runs the rest anyway, to see what would follow.
 *
 * Without --old-bundle, the old bundle is built from git history in a temporary directory under
 * /tmp (git archive, npm ci, npm run build: about a minute), removed afterwards. Needs root, like
 * the bed. Not part of `npm test` (too heavy: it needs the registry and about two minutes);
 * test/apply-config.test.ts, test/transport.test.ts and test/status-format.test.ts cover the logic
 * it relies on.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { Color } from "../agent/config.js";
import { haproxyInstallScript } from "../components/haproxy.js";
import { rollingOrder } from "../components/rolling-order.js";
import { applyConfigCommand, bundlePath, leaderRestartScript, rollingRestartScript, switchColorCheckScript } from "../components/scripts.js";
import { BUNDLE, NetBed, downtime } from "./netbed/bed.js";
import { startSsh, type SshBed } from "./netbed/ssh.js";

/** The last commit of the shared-key build. */
export const SHARED_KEY_COMMIT = "bd53a1e";
const BUILD_TIMEOUT_MS = 10 * 60_000;

const { values } = parseArgs({
  options: {
    "old-bundle": { type: "string" },
    lbs: { type: "string", default: "blue,blue,green,green" },
    active: { type: "string", default: "green" },
    "keep-going": { type: "boolean", default: false },
    "no-color-fallback": { type: "boolean", default: false },
    "healthy-timeout": { type: "string", default: "60" },
  },
});
const lbs = values.lbs!.split(",") as Color[];
if (!lbs.length || lbs.some((c) => c !== "blue" && c !== "green")) throw new Error(`--lbs: a comma-separated list of blue and green, got ${values.lbs}`);
const active = values.active as Color;
if (active !== "blue" && active !== "green") throw new Error(`--active: blue or green, got ${values.active}`);
const healthyTimeoutS = Number(values["healthy-timeout"]);
if (!(healthyTimeoutS >= 5 && healthyTimeoutS <= 300)) throw new Error(`--healthy-timeout: 5 to 300 seconds, got ${values["healthy-timeout"]}`);

/** Build the shared-key bundle from git history in a temporary directory; returns its path and a cleanup. */
export function buildOldBundle(repo = resolve(__dirname, "..")): { bundle: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "halb-oldbuild-"));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    const run = (cmd: string, args: string[], input?: Buffer) =>
      execFileSync(cmd, args, { cwd: dir, input, stdio: [input ? "pipe" : "ignore", "pipe", "pipe"], timeout: BUILD_TIMEOUT_MS, maxBuffer: 256 * 1024 * 1024 });
    // The tree of that commit, without touching this repository's worktrees.
    run(
      "tar",
      ["-x"],
      execFileSync("git", ["-C", repo, "archive", "--format=tar", SHARED_KEY_COMMIT], { maxBuffer: 256 * 1024 * 1024, timeout: BUILD_TIMEOUT_MS }),
    );
    run("npm", ["ci", "--no-fund", "--no-audit", "--ignore-scripts"]);
    run("npm", ["run", "build"]);
  } catch (e) {
    cleanup();
    throw e;
  }
  return { bundle: join(dir, "dist", "fipd.cjs"), cleanup };
}

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

interface Step {
  id: string;
  what: string;
  code: number;
  ms: number;
  tail: string;
}

async function main(): Promise<number> {
  let cleanup = () => {};
  let oldBundle = values["old-bundle"];
  if (!oldBundle) {
    console.log(`building the shared-key bundle from ${SHARED_KEY_COMMIT}…`);
    const b = buildOldBundle();
    oldBundle = b.bundle;
    cleanup = b.cleanup;
  }
  if (!existsSync(oldBundle)) throw new Error(`--old-bundle ${oldBundle}: no such file`);
  const oldSha = sha256(oldBundle);
  const newSha = sha256(BUNDLE);
  let bed: NetBed | null = null;
  let ssh: SshBed | null = null;
  try {
    bed = await NetBed.start({ lbs, witness: true, activeColor: active, ...(values["no-color-fallback"] ? { failover: { colorFallback: false } } : {}) });
    const b = bed;
    const ids = [...b.nodes.keys()];
    b.memberIds = [...ids];
    ssh = await startSsh(b);
    const s = ssh;
    const order = rollingOrder(
      ids.map((id) => (b.node(id).role === "witness" ? { name: id, role: "witness" as const } : { name: id, color: b.node(id).color!, role: "lb" as const })),
      active,
    ).map((n) => n.name);
    const peerKey = randomBytes(32).toString("base64");
    /** The payload the shared-key stack sent: no publicKeys, the shared key instead of an identity. */
    const oldPayload = (id: string) => {
      const doc = JSON.parse(b.applyPayload(b.node(id))) as { config: Record<string, unknown>; identityKey?: string };
      delete doc.config.peerAuth;
      delete doc.identityKey;
      return JSON.stringify({ ...doc, peerKey });
    };
    const steps: Step[] = [];
    let stopped = false;
    const step = async (id: string, what: string, script: string, stdin?: string): Promise<boolean> => {
      if (stopped) return false;
      const t0 = Date.now();
      const r = await s.run(id, script, stdin, (healthyTimeoutS + 60) * 1000);
      const tail = (r.out + r.err).trim().split("\n").slice(-4).join(" | ");
      steps.push({ id, what, code: r.code, ms: Date.now() - t0, tail });
      console.log(`${r.code === 0 ? "ok  " : "FAIL"} ${id} ${what} (${Date.now() - t0} ms): ${tail}`);
      if (r.code !== 0 && !values["keep-going"]) stopped = true;
      return r.code === 0;
    };

    // ---- the deployed stack: the shared-key build
    for (const id of ids) {
      const o = s.scriptOptions(id);
      mkdirSync(o.etcDir!, { mode: 0o750 });
      chownSync(o.etcDir!, 0, 0);
      await s.copy(id, oldBundle, bundlePath(oldSha, o.fipdDir));
      if (b.node(id).role === "lb") {
        const p = b.haproxyPaths(id);
        const reload = `if [ -s "${p.pid}" ] && kill -0 "$(cat "${p.pid}")" 2>/dev/null; then haproxy -D -p "${p.pid}" -f "${p.cfg}" -sf "$(cat "${p.pid}")"; else haproxy -D -p "${p.pid}" -f "${p.cfg}"; fi`;
        await step(id, "haproxy", haproxyInstallScript({ configPath: p.cfg, reloadCommand: reload, retries: 3 }), b.renderHaproxy(id));
      }
      await step(id, "old apply-config", applyConfigCommand(oldSha, o), oldPayload(id));
    }
    for (const id of order) await step(id, "old first start", rollingRestartScript(oldSha, healthyTimeoutS, s.scriptOptions(id)));
    await step(order[0], "old color check", switchColorCheckScript(active, healthyTimeoutS, s.scriptOptions(order[0])));
    if (stopped) throw new Error("the shared-key cluster did not come up");
    const leader0 = await b.waitForStableLeader();
    console.log(`shared-key cluster up: leader ${leader0}, build ${oldSha.slice(0, 16)}; upgrading to ${newSha.slice(0, 16)}`);
    steps.length = 0;

    // ---- the upgrade, as `pulumi up` with the new bundle runs it
    const log0 = b.emulator.requestLog().length;
    let maxLeaders = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const roles = await Promise.all(ids.map(async (id) => (await b.status(id))?.role));
        maxLeaders = Math.max(maxLeaders, roles.filter((r) => r === "leader").length);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const client = b.startClient(50, 1_000);
    await b.waitFor("the client's first answers", () => client.results.filter((r) => r.ok).length >= 5, 10_000);
    for (const id of order) {
      const o = s.scriptOptions(id);
      if (stopped) break;
      await s.copy(id, BUNDLE, bundlePath(newSha, o.fipdDir));
      if (await step(id, "apply-config", applyConfigCommand(newSha, o), b.applyPayload(b.node(id)))) {
        await step(id, "first pass", rollingRestartScript(newSha, healthyTimeoutS, o));
      } else stopped = !values["keep-going"] || stopped;
    }
    for (const id of order) await step(id, "second pass", leaderRestartScript(newSha, healthyTimeoutS, s.scriptOptions(id)));
    await step(order[0], "color check", switchColorCheckScript(active, healthyTimeoutS, s.scriptOptions(order[0])));
    await new Promise((r) => setTimeout(r, 1_000));
    const rs = await client.stop();
    sampling = false;
    await sampler;

    const assigns = b.emulator
      .requestLog()
      .slice(log0)
      .filter((r) => r.method === "POST" && r.path.endsWith("/actions")).length;
    const d = downtime(rs, 50);
    const builds = await Promise.all(ids.map(async (id) => `${id}=${(await b.status(id))?.build ?? "down"}`));
    const failedSteps = steps.filter((x) => x.code !== 0);
    console.log(
      `\nsteps: ${steps.length} run, ${failedSteps.length} failed${failedSteps.length ? ": " + failedSteps.map((x) => `${x.id} ${x.what}`).join(", ") : ""}`,
    );
    console.log(`requests: ${d.total}, failed ${d.failed} (longest run ${d.downtimeMs} ms)`);
    console.log(`assigns: ${assigns}; most members leading at once: ${maxLeaders}; holder now: ${b.holder()}`);
    console.log(`builds now: ${builds.join(" ")}`);
    return failedSteps.length || d.failed || maxLeaders > 1 ? 1 : 0;
  } finally {
    await ssh?.close();
    await bed?.close();
    cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
