/** The operator's interface of a real fipd process: bad input, check-config, status, reload. */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { BUNDLE, LocalCluster } from "../../testbed/harness/local-cluster.js";
import { freePort } from "../../testbed/harness/ports.js";
import { get as httpGet } from "node:http";

const run = promisify(execFile);
async function fipd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BUNDLE, ...args], { timeout: 20_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: typeof x.code === "number" ? x.code : 1, stdout: x.stdout, stderr: x.stderr };
  }
}

/** `fipd` with a document on stdin (apply-config), without blocking this process: the emulator runs in it. */
function fipdWithStdin(args: string[], stdin: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BUNDLE, ...args], { stdio: ["pipe", "pipe", "pipe"], timeout: 20_000 });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    p.on("close", (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(stdin);
  });
}

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

/** The HTTP status of GET url, or the error code when nothing answers. */
/**
 * One scrape on a connection of its own, as a Prometheus scrape after a listener move would open:
 * fetch's pool could reuse a keep-alive socket the old listener has just closed (UND_ERR_SOCKET).
 */
function get(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpGet(url, { agent: false, timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? "error");
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe("fipd operator interface", () => {
  it("check-config reports every problem with its path and exits 2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-cfg-"));
    try {
      const file = join(dir, "fipd.yaml");
      writeFileSync(file, "nodeId: lb-blue-1\nmembers:\n  - id: lb-blue-1\n    address: 192.0.2.2\nfailover:\n  leaseMs: 20\n");
      const r = await fipd(["check-config", file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`invalid configuration in ${file}`);
      expect(r.stderr).toContain("members[0].color: is required");
      expect(r.stderr).toMatch(/failover\.leaseMs: .*50/);
      writeFileSync(file, "nodeId: [unclosed\n");
      const y = await fipd(["check-config", file]);
      expect(y.code).toBe(2);
      expect(y.stderr).toMatch(/not valid YAML or JSON \(line \d+, column \d+\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses to start with a token file readable by others, and says how to fix it", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue"], witness: true });
    const h = cluster.node("lb-blue-1");
    const tokenFile = join(cluster.dir, "token");
    chmodSync(tokenFile, 0o644);
    const r = await fipd(["run", "--config", h.configPath]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(tokenFile);
    expect(r.stderr).toMatch(/chmod 600/);
    expect(r.stderr + r.stdout).not.toContain(cluster.token);
    const check = await fipd(["check-config", h.configPath]);
    expect(check.code).toBe(2);
    chmodSync(tokenFile, 0o600);
    expect((await fipd(["check-config", h.configPath])).code).toBe(0);
  });

  it("status shows the cluster; SIGHUP reload with a bad file keeps running and keeps the IP", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue", "blue"], witness: true });
    const c = cluster;
    c.startAll();
    const leader = await c.waitFor("a leader holding the IP", async () => {
      const l = await c.leader();
      return l && c.holder() === l ? l : null;
    });
    const h = c.node(leader);
    await c.waitFor("the leader to see the IP on its droplet", async () => (await c.status(leader))?.reservedIp?.holderIsLeader, 5_000);
    const st = await fipd(["status", "--socket", h.socket]);
    expect(st.code).toBe(0);
    expect(st.stdout).toContain(`node ${leader}: leader`);
    expect(st.stdout).toMatch(/reserved IP 198\.51\.100\.100: on .* \(the leader\)/);
    const wait = await fipd(["status", "--socket", h.socket, "--wait-healthy", "--timeout", "10"]);
    expect(wait.code).toBe(0);
    // Every member reports the bundle it runs: the first 16 hex digits of its SHA-256.
    const build = createHash("sha256").update(readFileSync(BUNDLE)).digest("hex").slice(0, 16);
    expect(st.stdout).toContain(`build ${build}`);
    expect((await c.status(leader))!.members.map((m) => m.build)).toEqual([...c.nodes.keys()].map(() => build));
    // A malformed build id is refused, by the CLI and by the agent, and nothing moves.
    const bad = await fipd(["handover", "--socket", h.socket, "--prefer-build", "v2"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--prefer-build takes a build id of 16 lowercase hex digits");
    expect(await c.request(leader, { cmd: "handover", preferBuild: "v2" })).toMatchObject({
      error: expect.stringContaining("bad handover request: preferBuild: must be a build id: 16 lowercase hex digits"),
    });
    expect(await c.leader()).toBe(leader);

    const good = readFileSync(h.configPath, "utf8");
    writeFileSync(h.configPath, good.replace(/leaseMs: \d+/, "") + "\nbogusKey: 1\n");
    h.proc!.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 500));
    expect(h.proc).not.toBeNull();
    expect(await c.leader()).toBe(leader);
    expect(c.holder()).toBe(leader);
    const reload = (await c.request(leader, { cmd: "reload" })) as { ok: boolean; error?: string };
    expect(reload.ok).toBe(false);
    expect(reload.error).toContain("bogusKey");
    writeFileSync(h.configPath, good);
    expect(((await c.request(leader, { cmd: "reload" })) as { ok: boolean }).ok).toBe(true);
    // The token never reaches the logs.
    const logs = readFileSync(join(c.dir, `${leader}.log`), "utf8");
    expect(logs).not.toContain(c.token);
  });

  it("an older member list is refused on reload (fipd reload, SIGHUP) and by apply-config, naming both versions; the agent keeps the newer one", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue"], witness: true });
    const c = cluster;
    c.startAll();
    const leader = await c.waitFor("a leader holding the IP", async () => {
      const l = await c.leader();
      return l && c.holder() === l ? l : null;
    });
    // Every node moves to membership version 5 (same members), by reload.
    for (const n of c.nodes.values()) {
      n.config = { ...n.config, membershipVersion: 5 };
      c.writeConfig(n);
      expect(await c.request(n.id, { cmd: "reload" }), n.id).toMatchObject({ ok: true });
    }
    const h = c.node(leader);
    const v5 = readFileSync(h.configPath, "utf8");
    const older = /membershipVersion 4 is lower than 5, this agent's running version: refusing an older member list/;
    h.config = { ...h.config, membershipVersion: 4 };
    c.writeConfig(h);
    // fipd reload: refused, exit 1, the reason on stderr.
    const cli = await fipd(["reload", "--socket", h.socket]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(older);
    // SIGHUP: refused and logged.
    h.proc!.kill("SIGHUP");
    const logFile = join(c.dir, `${leader}.log`);
    await c.waitFor(
      "the refusal in the log",
      () =>
        readFileSync(logFile, "utf8")
          .split("\n")
          .some((l) => older.test(l)),
      5_000,
    );
    expect(h.proc).not.toBeNull();
    const st = (await c.status(leader))!;
    expect(st.membershipVersion).toBe(5);
    expect(st.role).toBe("leader");
    expect(c.holder()).toBe(leader);

    // apply-config: the running agent's version is checked before anything is written.
    const dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    try {
      const payload = JSON.stringify({
        config: { ...h.config, membershipVersion: 4 },
        token: c.token,
        identityKey: readFileSync(c.keyFile(h.id), "utf8").trim(),
      });
      const r = await fipdWithStdin(["apply-config", "--dir", dir, "--owner", "root"], payload);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/membershipVersion 4 is lower than 5, the running agent's version: refusing an older member list.*; nothing was written/);
      expect(existsSync(join(dir, "fipd.yaml"))).toBe(false);
      expect(existsSync(join(dir, "token"))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    writeFileSync(h.configPath, v5);
    expect(await c.request(leader, { cmd: "reload" })).toMatchObject({ ok: true });
  });

  it("reload applies metrics (new port, then the stack's move to 0.0.0.0 on the same port), log level and health, and lists what waits for a restart", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue"], witness: true });
    const c = cluster;
    c.startAll();
    await c.waitFor("a leader holding the IP", async () => {
      const l = await c.leader();
      return l && c.holder() === l ? l : null;
    });
    const h = c.node("lb-blue-1");
    let reloads = 0;
    const reload = async (over: Partial<typeof h.config>) => {
      reloads++;
      h.config = { ...h.config, ...over };
      c.writeConfig(h);
      return (await c.request(h.id, { cmd: "reload" })) as { ok: boolean; error?: string; restartPending?: string[] };
    };
    const [p1, p2] = [await freePort(), await freePort()];

    expect(await reload({ metrics: { enabled: true, address: "127.0.0.1", port: p1 } })).toEqual({ ok: true, restartPending: [] });
    expect(await get(`http://127.0.0.1:${p1}/metrics`)).toBe(200);
    expect(await reload({ metrics: { enabled: true, address: "127.0.0.1", port: p2 } })).toEqual({ ok: true, restartPending: [] });
    expect(await get(`http://127.0.0.1:${p2}/metrics`)).toBe(200);
    expect(await get(`http://127.0.0.1:${p1}/metrics`)).toBe("ECONNREFUSED");
    expect(await reload({ metrics: { enabled: true, address: "0.0.0.0", port: p2 } })).toEqual({ ok: true, restartPending: [] });
    expect(await get(`http://127.0.0.1:${p2}/metrics`)).toBe(200);
    expect(await reload({ metrics: { enabled: false } })).toMatchObject({ ok: true });
    expect(await get(`http://127.0.0.1:${p2}/metrics`)).toBe("ECONNREFUSED");

    // logLevel: at "error", the next reload's "configuration reloaded" (info) is not written.
    const reloadedLines = () => (readFileSync(join(c.dir, `${h.id}.log`), "utf8").match(/"msg":"configuration reloaded"/g) ?? []).length;
    // (The log file is fed through a pipe: wait for each line rather than read at once.)
    // Every reload so far was at info: wait until all of their lines are through the pipe, or a late
    // one would be counted as the next reload's.
    await c.waitFor("the earlier reloads to be logged", () => reloadedLines() === reloads, 5_000);
    const before = reloads;
    await reload({ logLevel: "error" });
    await c.waitFor("the reload to be logged (at info, before the level changes)", () => reloadedLines() === before + 1, 5_000);
    await reload({ logLevel: "error", activeColor: "blue" });
    await new Promise((r) => setTimeout(r, 1_000));
    expect(reloadedLines()).toBe(before + 1);
    await reload({ logLevel: "info" }); // logged before the level changes back
    await reload({});
    await c.waitFor("reloads to be logged again at info", () => reloadedLines() === before + 2, 5_000);

    // health.url: the poller restarts on the new URL (nothing listens there: the node turns unhealthy).
    const dead = await freePort();
    await reload({ health: { url: `http://127.0.0.1:${dead}/healthz`, intervalMs: 100, timeoutMs: 250, rise: 2, fall: 2 } });
    await c.waitFor("lb-blue-1 to report the new health URL down", async () => (await c.status(h.id))?.healthy === false, 10_000);

    // A key a reload cannot apply: the answer and `fipd status` say it waits for a restart, until undone.
    const api = h.config.api!;
    expect(await reload({ api: { ...api, requestTimeoutMs: 3_000 } })).toEqual({ ok: true, restartPending: ["api.requestTimeoutMs"] });
    const st = await fipd(["status", "--socket", h.socket]);
    expect(st.stdout).toContain("RESTART PENDING for api.requestTimeoutMs: a reload cannot apply them (systemctl restart fipd)");
    expect(await reload({ api })).toEqual({ ok: true, restartPending: [] });
  }, 90_000);
});
