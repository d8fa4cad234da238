/**
 * The real agent bundle under fipd.service's sandbox, as far as this machine can build it without
 * systemd as PID 1 (testbed/harness/unit-sandbox.ts: a mount namespace, setpriv, prlimit, and the
 * unit's seccomp filters through libseccomp). First a probe shows that the sandbox bites; then
 * check-config, and a whole cluster whose agents all run in it. Needs root; run it under the bed lock
 * like the other process tests.
 */
import { spawn } from "node:child_process";
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BUNDLE, LocalCluster, type NodeHandle } from "../../testbed/harness/local-cluster.js";
import { agentNodeFlags } from "../../testbed/harness/node-flags.js";
import { parseBytes, readUnit, unitValue } from "../../testbed/harness/unit-file.js";
import { DROPLET_ONLY, EMULATED, sandboxCommand } from "../../testbed/harness/unit-sandbox.js";

/** Stands in for the fipd user, which this machine does not have: an id no account uses. */
const AGENT = { uid: 64_321, gid: 64_321 };

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "halb-sandbox-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command in the sandbox with fresh run and state directories owned by the agent's user. */
function inSandbox(argv: (state: string) => string[], readOnly: string[] = [], timeoutMs = 60_000): Promise<Run> {
  const base = mkdtempSync(join(dir, "run-"));
  const [run, state, scratch] = ["run", "state", "scratch"].map((d) => join(base, d));
  for (const d of [base, run, state, scratch]) {
    mkdirSync(d, { recursive: true, mode: 0o750 });
    chownSync(d, AGENT.uid, AGENT.gid);
  }
  const cmd = sandboxCommand(argv(state), { ...AGENT, readOnly, readWrite: [run, state], scratch });
  return new Promise((done, fail) => {
    const p = spawn(cmd[0], cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"], cwd: "/" });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.once("error", fail);
    p.once("exit", (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr });
    });
  });
}

/** What a Node.js process sees and may do in the sandbox: each probe's result, or its error code. */
const PROBE = String.raw`
const fs = require("node:fs"), os = require("node:os"), dns = require("node:dns"), net = require("node:net");
const [state, hostTmpFile] = process.argv.slice(1);
const attempt = (f) => { try { const v = f(); return v === undefined ? "ok" : v; } catch (e) { return (e.info && e.info.code) || e.code || String(e); } };
const status = fs.readFileSync("/proc/self/status", "utf8");
const field = (k) => new RegExp("^" + k + ":\\s*(.*)$", "m").exec(status)[1];
dns.lookup("localhost", { hints: dns.ADDRCONFIG }, (lookupError) => {
  const server = net.createServer().listen(state + "/probe.sock", () => {
    server.close();
    console.log(JSON.stringify({
      uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(), umask: process.umask(),
      noNewPrivs: field("NoNewPrivs"), capBounding: field("CapBnd"), seccompFilters: field("Seccomp_filters"),
      setPriority: attempt(() => os.setPriority(0, 19)),
      writeEtc: attempt(() => fs.writeFileSync("/etc/halb-probe", "x")),
      writeSys: attempt(() => fs.writeFileSync("/sys/fs/cgroup/halb-probe", "x")),
      writeState: attempt(() => fs.writeFileSync(state + "/f", "x")),
      stateMode: (fs.statSync(state + "/f").mode & 0o777).toString(8),
      chmodSetuid: attempt(() => fs.chmodSync(state + "/f", 0o4700)),
      hostTmpVisible: fs.existsSync(hostTmpFile),
      readRoot: attempt(() => fs.readdirSync("/root")),
      dev: fs.readdirSync("/dev").sort(),
      procPid1: fs.existsSync("/proc/1"), procMeminfo: fs.existsSync("/proc/meminfo"), procSys: fs.existsSync("/proc/sys"),
      loopbackInterface: Object.keys(os.networkInterfaces()).includes("lo"),
      lookupWithAddrconfig: lookupError ? lookupError.code : "ok",
    }));
  });
});
`;

describe("fipd.service's sandbox (emulated without systemd)", () => {
  it("accounts for every [Service] directive: emulated here, or listed in the README as droplet-only", () => {
    const service = readUnit().get("Service")!;
    const readme = readFileSync(resolve(__dirname, "..", "..", "README.md"), "utf8");
    for (const key of service.keys()) expect(key in EMULATED || key in DROPLET_ONLY, `${key}= is neither emulated nor droplet-only`).toBe(true);
    for (const key of Object.keys(DROPLET_ONLY).filter((k) => service.has(k)))
      expect(readme.includes(`\`${key}=\``), `the README does not list ${key}= as droplet-only`).toBe(true);
  });

  it("bites: the agent's user, no privileges, its umask, the file-system view, the system call filter", async () => {
    const hostTmpFile = join(dir, "on-the-host");
    writeFileSync(hostTmpFile, "x");
    const r = await inSandbox((state) => [process.execPath, "-e", PROBE, state, hostTmpFile]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      uid: AGENT.uid,
      gid: AGENT.gid,
      groups: [AGENT.gid],
      umask: Number.parseInt(unitValue(readUnit(), "Service", "UMask")!, 8),
      noNewPrivs: "1",
      capBounding: "0000000000000000",
      // RestrictAddressFamilies & co., then SystemCallFilter.
      seccompFilters: "2",
      // Allowed to any user (a lower priority), but @resources is filtered: EPERM, and the process lives on.
      setPriority: "EPERM",
      writeEtc: "EROFS",
      writeSys: "EROFS",
      writeState: "ok",
      stateMode: "600",
      chmodSetuid: "EPERM",
      hostTmpVisible: false,
      readRoot: "EACCES",
      dev: ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"],
      procPid1: false,
      procMeminfo: false,
      procSys: false,
      loopbackInterface: true,
      lookupWithAddrconfig: "ok",
    });
  });

  it("ends a process that outgrows MemoryMax (here through RLIMIT_DATA: V8 cannot allocate)", async () => {
    const maxMb = parseBytes(unitValue(readUnit(), "Service", "MemoryMax")!) / 2 ** 20;
    const grow = `const a = []; for (let i = 0; i < ${2 * maxMb}; i++) a.push(Buffer.alloc(2 ** 20, 1).toString("latin1") + i); console.log("survived");`;
    const r = await inSandbox(() => [process.execPath, ...agentNodeFlags(), "-e", grow]);
    expect(r.stdout).not.toContain("survived");
    expect(r.code === 0).toBe(false);
  });

  it("check-config passes on a cluster's config, read-only, as the agent's user", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue"], agentOwner: AGENT });
    const h = cluster.node("lb-blue-1");
    const readOnly = [h.configPath, h.config.peerAuth!.keyFile!, h.config.api!.tokenFile!];
    const r = await inSandbox(() => [process.execPath, BUNDLE, "check-config", h.configPath], readOnly);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("runs a cluster: a leader assigns the IP, status and reload over the control socket, a graceful stop hands over", async () => {
    const launch = (h: NodeHandle, argv: string[]) => {
      const scratch = join(h.runDir, "..", "scratch");
      mkdirSync(scratch, { recursive: true });
      // The droplet-like layout lives under the cluster's directory in /tmp, which PrivateTmp hides:
      // the agent's bundle (opt/) must be mounted in, as /opt/fipd is visible on a droplet.
      const readOnly = [h.configPath, h.config.peerAuth!.keyFile!, h.config.api!.tokenFile!, join(h.home, "opt")];
      return sandboxCommand(argv, { ...AGENT, readOnly, readWrite: [h.runDir, h.stateDir], scratch });
    };
    const c = (cluster = await LocalCluster.start({ lbs: ["blue", "blue"], witness: true, agentOwner: AGENT, launch }));
    c.startAll();
    const leader = await c.waitFor("a leader holding the reserved IP", async () => {
      const l = await c.leader();
      return l && c.holder() === l ? l : null;
    });
    const state = statSync(join(c.node(leader).stateDir, "state.json"));
    expect([state.uid, state.mode & 0o777]).toEqual([AGENT.uid, 0o600]);
    expect(await c.request(leader, { cmd: "reload" })).toMatchObject({ ok: true });
    expect(await c.stopNode(leader, "SIGTERM")).toBe(0);
    const other = [...c.nodes.keys()].find((id) => id !== leader && id !== "witness")!;
    await c.waitFor("the other LB to lead and hold the IP", async () => (await c.leader()) === other && c.holder() === other);
  });
});
