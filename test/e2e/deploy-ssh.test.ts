/**
 * The commands the stack generates, run for real over SSH in the network test bed, in the order
 * Pulumi runs them: a first deploy, a config change (blue → green), a bundle change (rolling
 * restart), a peer-key rotation, the replacement of a droplet (create before delete: the new one
 * joins, then the old one leaves), the deletion of the leader's droplet, and a destroy. A client
 * opens a new connection every 50 ms throughout the changes: none may fail.
 *
 * The scripts are components/scripts.ts and components/haproxy.ts, byte for byte, with
 * ScriptOptions pointing at each droplet's directories and a pidfile service manager.
 */
import { parsePrivateKey } from "../../agent/identity.js";
import type { PeerKeyStatus } from "../../agent/key-retirement.js";
import type { AgentStatus } from "../../agent/status-format.js";
import { createHash } from "node:crypto";
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { haproxyInstallScript } from "../../components/haproxy.js";
import { rollingOrder } from "../../components/rolling-order.js";
import { applyConfigCommand, bundlePath, deleteScript, leaderRestartScript, rollingRestartScript, switchColorCheckScript } from "../../components/scripts.js";
import { BUNDLE, NetBed, RESERVED_IP, downtime, type ProbeResult } from "../../testbed/netbed/bed.js";
import { startSsh, type SshBed } from "../../testbed/netbed/ssh.js";

let bed: NetBed;
let ssh: SshBed;
const LBS = ["lb-blue-1", "lb-blue-2", "lb-green-1", "lb-green-2"];
/** The members, in the order the bed lists them. */
let ORDER = [...LBS, "witness"];
/** Pulumi's order for the restarts (their dependsOn chain): the stack's rollingOrder. */
const pulumiOrder = (activeColor: "blue" | "green") =>
  rollingOrder(
    ORDER.map((id) => (id === "witness" ? { name: id, role: "witness" as const } : { name: id, color: colorOf(id) as "blue" | "green", role: "lb" as const })),
    activeColor,
  ).map((n) => n.name);
/** A droplet that exists from the start but joins only when it replaces lb-blue-1. */
const REPLACEMENT = "lb-blue-3";
const colorOf = (id: string | null | undefined) => (id ?? "").replace(/^lb-(blue|green)-\d+$/, "$1");
const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

beforeAll(async () => {
  bed = await NetBed.start({ lbs: ["blue", "blue", "green", "green", "blue"], witness: true });
  bed.memberIds = [...ORDER];
  ssh = await startSsh(bed);
}, 120_000);

afterAll(async () => {
  await ssh?.close();
  await bed?.close();
}, 60_000);

async function must(id: string, script: string, stdin?: string): Promise<string> {
  const r = await ssh.run(id, script, stdin);
  if (r.code !== 0) throw new Error(`${id}: exit ${r.code}\n${r.out}\n${r.err}`);
  return r.out;
}

/** The HAProxy install as haproxy's remote.Command runs it (with this bed's reload command). */
async function installHaproxy(id: string): Promise<void> {
  const p = bed.haproxyPaths(id);
  const reload = `if [ -s "${p.pid}" ] && kill -0 "$(cat "${p.pid}")" 2>/dev/null; then haproxy -D -p "${p.pid}" -f "${p.cfg}" -sf "$(cat "${p.pid}")"; else haproxy -D -p "${p.pid}" -f "${p.cfg}"; fi`;
  await must(id, haproxyInstallScript({ configPath: p.cfg, reloadCommand: reload, retries: 3 }), bed.renderHaproxy(id));
}

async function withClient(during: () => Promise<void>): Promise<ProbeResult[]> {
  const client = bed.startClient(50, 1_000);
  await bed.waitFor("the client's first answers", () => client.results.filter((r) => r.ok).length >= 5, 10_000);
  await during();
  await new Promise((r) => setTimeout(r, 1_000));
  return client.stop();
}

let sha = "";
let bundleFile = BUNDLE;

describe("the stack's generated commands over SSH, in Pulumi's order", () => {
  it("every connection pins the droplet's own host key, as the stack's hostKey does: another key is refused before any command runs", async () => {
    const ok = await ssh.runPinnedTo("lb-blue-1", "lb-blue-1", "echo pinned");
    expect(ok).toMatchObject({ code: 0, out: "pinned\n" });
    expect(ssh.hostKey("lb-blue-1")).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+=*$/);
    expect(ssh.hostKey("lb-blue-1")).not.toBe(ssh.hostKey("lb-blue-2"));
    // lb-blue-2's key expected at lb-blue-1's address (someone else answering there): refused.
    const wrong = await ssh.runPinnedTo("lb-blue-1", "lb-blue-2", "echo should-not-run");
    expect(wrong.code).toBe(255);
    expect(wrong.out).toBe("");
    expect(wrong.err).toMatch(/host key .*changed|Host key verification failed/i);
  });

  it("first deploy: bundle, HAProxy, config and secrets on stdin, rolling start, color check", async () => {
    sha = sha256(BUNDLE);
    for (const id of ORDER) {
      const o = ssh.scriptOptions(id);
      // The config directory as cloud-init leaves it (owned by the service user, here nobody): the
      // deploy makes it root's before apply-config writes secrets into it.
      mkdirSync(o.etcDir!, { mode: 0o750 });
      chownSync(o.etcDir!, 65534, 65534);
      await ssh.copy(id, BUNDLE, bundlePath(sha, o.fipdDir));
      if (bed.node(id).role === "lb") await installHaproxy(id);
      const out = await must(id, applyConfigCommand(sha, o), bed.applyPayload(bed.node(id)));
      expect(out).toContain(`wrote ${o.etcDir}/fipd.yaml (node ${bed.node(id).nodeId},`);
      const etc = statSync(o.etcDir!);
      expect([etc.mode & 0o7777, etc.uid, etc.gid], `${o.etcDir} ends root-owned`).toEqual([0o755, 0, 0]);
      // Secrets arrived on stdin only: the files are 0600 and the script text never holds them.
      // Its own identity key, and only its own.
      expect(readFileSync(join(o.etcDir!, "identity.key"), "utf8").trim()).toBe(bed.identity(id).current.privateKeyPem.trim());
      expect(existsSync(join(o.etcDir!, "peer.key"))).toBe(false);
      expect(applyConfigCommand(sha, o)).not.toContain("PRIVATE KEY");
    }
    for (const id of pulumiOrder("blue")) expect(await must(id, rollingRestartScript(sha, 60, ssh.scriptOptions(id)))).toContain("first start");
    for (const id of pulumiOrder("blue"))
      expect(await must(id, leaderRestartScript(sha, 60, ssh.scriptOptions(id)))).toContain(`already runs build ${sha.slice(0, 16)}`);
    const out = await must("lb-blue-1", switchColorCheckScript("blue", 60, ssh.scriptOptions("lb-blue-1")));
    expect(out).toContain("blue is in force and holds the Reserved IP");
    const leader = await bed.waitForStableLeader();
    expect(colorOf(leader)).toBe("blue");
    expect(await bed.curl(RESERVED_IP)).toBe(leader);
  });

  it("a payload the running agent refuses (another Reserved IP): the deploy step fails with the agent's reason, the previous files are back, the agent keeps running", async () => {
    const id = "lb-blue-2";
    const o = ssh.scriptOptions(id);
    const files = () => readdirSync(o.etcDir!).map((f) => [f, readFileSync(join(o.etcDir!, f), "utf8"), statSync(join(o.etcDir!, f)).mode]);
    const before = files();
    const pid = ssh.agentPid(id);
    const doc = JSON.parse(bed.applyPayload(bed.node(id))) as { config: { reservedIp: string } };
    doc.config.reservedIp = "198.51.100.99";
    const r = await ssh.run(id, applyConfigCommand(sha, o), JSON.stringify(doc));
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(
      /the running agent refused the new configuration: reservedIp changed from .* to 198\.51\.100\.99.*\nthe previous files in .* are restored/s,
    );
    expect(files()).toEqual(before);
    expect(ssh.agentPid(id)).toBe(pid);
    expect((await bed.status(id))?.reservedIp?.address).toBe(RESERVED_IP);
  });

  it("config change (activeColor: green): reload, never a restart; the switch check passes; zero failed requests", async () => {
    const pids = ORDER.map((id) => ssh.agentPid(id));
    bed.activeColor = "green";
    const rs = await withClient(async () => {
      for (const id of ORDER) await must(id, applyConfigCommand(sha, ssh.scriptOptions(id)), bed.applyPayload(bed.node(id)));
      const out = await must("lb-green-1", switchColorCheckScript("green", 60, ssh.scriptOptions("lb-green-1")));
      expect(out).toContain("green is in force");
    });
    expect(downtime(rs, 50)).toMatchObject({ failed: 0 });
    expect(colorOf(rs[rs.length - 1].servedBy)).toBe("green");
    expect(ORDER.map((id) => ssh.agentPid(id))).toEqual(pids);
  });

  it("bundle change: a rolling restart in the stack's order, the leader last after a handover to an upgraded node: zero failed requests, one assign", async () => {
    const next = join(bed.dir, "fipd-next.cjs");
    writeFileSync(next, readFileSync(BUNDLE, "utf8") + `\n// rebuilt for the rolling-upgrade test\n`);
    const sha2 = sha256(next);
    expect(sha2).not.toBe(sha);
    const before = new Map(ORDER.map((id) => [id, ssh.agentPid(id)]));
    const log0 = bed.emulator.requestLog().length;
    const rs = await withClient(async () => {
      for (const id of pulumiOrder("green")) {
        const o = ssh.scriptOptions(id);
        await ssh.copy(id, next, bundlePath(sha2, o.fipdDir));
        await must(id, applyConfigCommand(sha2, o), bed.applyPayload(bed.node(id)));
        await must(id, rollingRestartScript(sha2, 60, o));
      }
      // The second pass: only the agent that led during the first one still runs the old build.
      const leader = await bed.waitForStableLeader();
      for (const id of pulumiOrder("green")) {
        const out = await must(id, leaderRestartScript(sha2, 60, ssh.scriptOptions(id)));
        expect(out, id).toContain(id === leader ? "handing over to a droplet running build" : "already runs build");
      }
    });
    const d = downtime(rs, 50);
    expect(d).toMatchObject({ failed: 0 });
    for (const id of ORDER) {
      const o = ssh.scriptOptions(id);
      expect(ssh.agentPid(id)).not.toBe(before.get(id));
      expect(readlinkSync(join(o.fipdDir!, "fipd.cjs"))).toBe(bundlePath(sha2, o.fipdDir));
    }
    sha = sha2;
    bundleFile = next;
    const leader = await bed.waitForStableLeader();
    expect(colorOf(leader)).toBe("green");
    // The IP moved once: the green leader restarted last and handed over to an upgraded green node.
    const assigns = bed.emulator
      .requestLog()
      .slice(log0)
      .filter((r) => r.method === "POST" && r.path.endsWith("/actions"));
    expect(assigns).toHaveLength(1);
    // Every agent tells its peers which bundle it runs.
    const st = (await bed.status(leader))!;
    expect(st.members.map((m) => m.build)).toEqual(st.members.map(() => sha2.slice(0, 16)));
  });

  it("identity key rotation in one pass (old and new identities accepted during the roll): no leader change, zero failed requests", async () => {
    const leader = await bed.waitForStableLeader();
    const term = (await bed.status(leader))!.term;
    bed.rollIdentities();
    const rs = await withClient(async () => {
      for (const id of ORDER) {
        await must(id, applyConfigCommand(sha, ssh.scriptOptions(id)), bed.applyPayload(bed.node(id)));
        await new Promise((r) => setTimeout(r, 300)); // Pulumi's pace: one droplet after another
      }
    });
    expect(downtime(rs, 50)).toMatchObject({ failed: 0 });
    const after = (await bed.status(leader))!;
    expect(after).toMatchObject({ role: "leader", term });
    // Every member got its new identity, so each agent retires the previous ones (one heartbeat).
    const own = parsePrivateKey(bed.identity(leader).current.privateKeyPem, "in the bed");
    const previous = parsePrivateKey(bed.identity(leader).previous!.privateKeyPem, "in the bed");
    let keys: PeerKeyStatus | null = null;
    for (let i = 0; i < 50 && !keys?.retired; i++) {
      keys = ((await bed.status(leader)) as AgentStatus | null)?.peerKeys ?? null;
      if (!keys?.retired) await new Promise((r) => setTimeout(r, 200));
    }
    expect(keys).toMatchObject({ current: own.id, previous: null, retired: { keyId: previous.id } });
  });

  it("replacing a droplet: the new one joins (joint consensus) before the old one hands over and leaves; zero failed requests", async () => {
    const old = "lb-blue-1";
    bed.membershipVersion = 2;
    bed.memberIds = [...ORDER.filter((id) => id !== old), REPLACEMENT];
    const rs = await withClient(async () => {
      // Create before delete: the new droplet is set up and started with the new member list...
      const o = ssh.scriptOptions(REPLACEMENT);
      await ssh.copy(REPLACEMENT, bundleFile, bundlePath(sha, o.fipdDir));
      await installHaproxy(REPLACEMENT);
      await must(REPLACEMENT, applyConfigCommand(sha, o), bed.applyPayload(bed.node(REPLACEMENT)));
      await must(REPLACEMENT, rollingRestartScript(sha, 60, o));
      await must(REPLACEMENT, leaderRestartScript(sha, 60, o));
      // ...the others get the new list as a reload (the old droplet's resources are being deleted)...
      for (const id of ORDER.filter((x) => x !== old)) await must(id, applyConfigCommand(sha, ssh.scriptOptions(id)), bed.applyPayload(bed.node(id)));
      await must("lb-green-1", switchColorCheckScript("green", 60, ssh.scriptOptions("lb-green-1")));
      // ...and only then is the old droplet retired and deleted.
      expect((await ssh.run(old, deleteScript(30, ssh.scriptOptions(old)))).code).toBe(0);
      await bed.stopHaproxy(old);
    });
    expect(downtime(rs, 50)).toMatchObject({ failed: 0 });
    ORDER = ORDER.filter((id) => id !== old).concat(REPLACEMENT);
    const leader = await bed.waitForStableLeader();
    const st = await bed.waitFor(
      "the new member list to be committed",
      async () => {
        const s = await bed.status(leader);
        return s && s.membershipVersion === 2 && s.jointOldMembers === null && s.majorityReachable ? s : null;
      },
      15_000,
    );
    expect(st.members.map((m) => m.id).sort()).toEqual(bed.memberIds!.map((id) => bed.node(id).nodeId).sort());
    expect(ssh.agentPid(old)).toBeNull();
  });

  it("deleting the leader's droplet: its agent hands over and stops first; zero failed requests", async () => {
    const victim = await bed.waitForStableLeader();
    const rs = await withClient(async () => {
      const out = await ssh.run(victim, deleteScript(30, ssh.scriptOptions(victim)));
      expect(out.code).toBe(0);
      await bed.stopHaproxy(victim); // the droplet is gone
    });
    expect(downtime(rs, 50)).toMatchObject({ failed: 0 });
    expect(ssh.agentPid(victim)).toBeNull();
    const h = bed.holder();
    expect(h).not.toBe(victim);
    expect(colorOf(h)).toBe("green");
  });

  it("destroy: every remaining droplet's delete step stops its agent, and exits 0", async () => {
    for (const id of [...ORDER].reverse()) {
      if (ssh.agentPid(id) === null) continue;
      const r = await ssh.run(id, deleteScript(3, ssh.scriptOptions(id)));
      expect(r.code).toBe(0);
      expect(ssh.agentPid(id)).toBeNull();
    }
  });
});
