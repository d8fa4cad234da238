/**
 * A whole ha-lb cluster on loopback: the DigitalOcean emulator, N load-balancer agents and a
 * witness as real `node fipd.cjs run` processes, each with a stand-in HAProxy (fake-haproxy.ts).
 * Used by the demo and the process tests; no root needed.
 *
 * Each node gets a droplet's layout under `<dir>/<id>/`: `etc/fipd.yaml`, `opt/fipd-<build>.cjs` with
 * `opt/fipd.cjs` pointing at the active bundle, and the `bin/fipd` wrapper, laid out by the stack's own
 * install script. So the stack's deploy scripts (components/scripts.ts) run here as they do over SSH
 * (`runScript`, `scriptOptions`), with the harness as their service manager: `systemctl restart fipd`
 * becomes a request to the harness, which restarts the agent it supervises.
 *
 * Options a test or the demo may want:
 * - `peerRelays`: every peer datagram goes through a UDP relay per node (testbed/relay.ts), so that
 *   `partition(id, true)` cuts a node off from its peers without root (the API stays reachable, as in
 *   a partition of the VPC);
 * - `restartAfterMs`: an agent that exits on its own (a crash, `kill -9` from outside) comes back
 *   after that long, as systemd's `Restart=always` brings it back on a droplet.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { newIdentity } from "../identity.js";
import { chownSync, copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { createServer as createNetServer, type Server as NetServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join, resolve } from "node:path";
import type { AgentConfigInput, Color } from "../../agent/config.js";
import { renderAgentConfig } from "../../agent/config-file.js";
import type { StatusReport } from "../../agent/controller.js";
import { controlRequest } from "../../agent/control.js";
import { bundlePath, installAgentScript, type ScriptOptions } from "../../components/scripts.js";
import { ClusterViews } from "./cluster-views.js";
import { startEmulator, type Emulator } from "../emulator/index.js";
import { startUdpRelay, type UdpRelay } from "../relay.js";
import { startFakeHealthEndpoint, type FakeHealthEndpoint } from "./fake-haproxy.js";
import { agentNodeFlags } from "./node-flags.js";
import { freePort } from "./ports.js";

export const BUNDLE = resolve(__dirname, "..", "..", "dist", "fipd.cjs");
export const RESERVED_IP = "198.51.100.100";
const REGION = "nyc3";
/** The unit's TimeoutStopSec: how long a stop waits for SIGTERM's handover before SIGKILL. */
const STOP_TIMEOUT_MS = 20_000;

export const sha256File = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

export interface LocalClusterOptions {
  /** Colors of the LB nodes, in order: ids become lb-<color>-<n>. */
  lbs: Color[];
  witness?: boolean;
  activeColor?: Color;
  actionDelayMs?: number;
  failover?: AgentConfigInput["failover"];
  /** Called with every agent log line (JSON) if set. */
  onLog?: (node: string, line: string) => void;
  /** Called when an agent process starts, exits or is scheduled to restart (a line for a person). */
  onAgentEvent?: (node: string, event: string) => void;
  /** Peer datagrams through one UDP relay per node, so that partition() works. */
  peerRelays?: boolean;
  /** Restart an agent that exits unasked after this long (systemd's Restart=always). Off by default. */
  restartAfterMs?: number;
  keepDir?: boolean;
  /**
   * Runs each agent through this command instead of directly: gets the agent's argv (node, flags,
   * bundle, arguments) and returns the argv to spawn. The agent must keep the spawned process's PID
   * (exec, not fork), so that signals reach it. Used to run agents in the unit's sandbox.
   */
  launch?: (node: NodeHandle, argv: string[]) => string[];
  /** Owner of the files each agent reads and writes (config, secrets, its run and state directories), as apply-config --owner makes them on a droplet. */
  agentOwner?: { uid: number; gid: number };
}

export interface NodeHandle {
  id: string;
  role: "lb" | "witness";
  color: Color | null;
  dropletId: number;
  /** The agent's own UDP port (peers reach it there, or through `relay`). */
  port: number;
  /** The droplet's directories: etc/, opt/, bin/. */
  home: string;
  configPath: string;
  /** The agent's stand-ins for /run/fipd (the control socket) and /var/lib/fipd (the state file). */
  runDir: string;
  stateDir: string;
  socket: string;
  health: FakeHealthEndpoint | null;
  proc: ChildProcess | null;
  exit: Promise<number | null> | null;
  config: AgentConfigInput;
  relay: UdpRelay | null;
  partitioned: boolean;
  /** The agent should be running: an exit nobody asked for is restarted (with restartAfterMs). */
  wanted: boolean;
  restartTimer: NodeJS.Timeout | null;
}

/** `systemctl` for the harness: the stack's scripts call it; the harness (the service manager) answers. */
const SERVICECTL = `// Written by testbed/harness/local-cluster.ts: the scripts' "systemctl", answered by the harness.
const [sock, verb, id] = process.argv.slice(2);
const c = require("node:net").connect(sock);
let answer = "";
c.setTimeout(60000, () => { process.stderr.write("servicectl: no answer within 60 s\\n"); process.exit(1); });
c.on("connect", () => c.write(verb + " " + id + "\\n"));
c.on("data", (d) => (answer += d));
c.on("error", (e) => { process.stderr.write("servicectl: " + e.message + "\\n"); process.exit(1); });
c.on("close", () => {
  const a = answer.trim();
  if (a.startsWith("error")) process.stderr.write("servicectl: " + a + "\\n");
  process.exit(a === "ok" || a === "active" ? 0 : a === "inactive" ? 3 : 1);
});
`;

export class LocalCluster extends ClusterViews {
  readonly reservedIp = RESERVED_IP;
  readonly nodes = new Map<string, NodeHandle>();
  private service: NetServer | null = null;
  /** Scripts still running (their process groups), ended by close(). */
  private readonly scripts = new Set<ChildProcess>();
  private closed = false;
  private constructor(
    readonly dir: string,
    readonly emulator: Emulator,
    readonly token: string,
    /** SHA-256 of the bundle every node starts with (dist/fipd.cjs). */
    readonly initialSha: string,
    private readonly opts: LocalClusterOptions,
  ) {
    super();
  }

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: build the agent bundle first (npm run build)`);
    const initialSha = sha256File(BUNDLE);
    const dir = mkdtempSync(join(tmpdir(), "halb-cluster-"));
    const token = `dop_v1_${randomBytes(16).toString("hex")}`;
    const emulator = await startEmulator({ tokens: [token], actionDelayMs: opts.actionDelayMs ?? 0 });
    const cluster = new LocalCluster(dir, emulator, token, initialSha, opts);
    try {
      await cluster.setup();
    } catch (e) {
      await cluster.close();
      throw e;
    }
    return cluster;
  }

  /** Node `id`'s identity private key (PEM, 0600); its public key is in every node's peerAuth.publicKeys. */
  keyFile(id: string): string {
    return join(this.dir, `${id}.identity.key`);
  }

  private async setup(): Promise<void> {
    const { dir, opts } = this;
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, this.token + "\n", { mode: 0o600 });
    chmodSync(tokenFile, 0o600);
    this.own(tokenFile);
    writeFileSync(join(dir, "servicectl.cjs"), SERVICECTL);
    this.service = await this.startServiceManager(join(dir, "service.sock"));
    const counts: Record<string, number> = {};
    const specs: Array<{ id: string; role: "lb" | "witness"; color: Color | null }> = opts.lbs.map((color) => {
      counts[color] = (counts[color] ?? 0) + 1;
      return { id: `lb-${color}-${counts[color]}`, role: "lb" as const, color };
    });
    if (opts.witness) specs.push({ id: "witness", role: "witness", color: null });
    this.emulator.addReservedIp({ ip: RESERVED_IP, region: REGION });
    const members: NonNullable<AgentConfigInput["members"]> = [];
    const handles: NodeHandle[] = [];
    let n = 0;
    for (const s of specs) {
      n++;
      const port = await freePort();
      const droplet = this.emulator.addDroplet({
        name: s.id,
        region: s.role === "witness" ? "sfo3" : REGION,
        publicIpv4: `203.0.113.${10 + n}`,
        privateIpv4: `192.0.2.${10 + n}`,
        anchorIpv4: `198.51.100.${10 + n}`,
        tags: ["ha-lb"],
      });
      const health = s.role === "lb" ? await startFakeHealthEndpoint("127.0.0.1", s.id) : null;
      // Peers send to the node's relay, which forwards to the node unless a partition cuts either end.
      const relay = opts.peerRelays
        ? await startUdpRelay({
            listenAddress: "127.0.0.1",
            listenPort: 0,
            targetAddress: "127.0.0.1",
            targetPort: port,
            delayMs: 0,
            jitterMs: 0,
            drop: (client) => this.cutOff(s.id, client.port),
          })
        : null;
      members.push({ id: s.id, address: "127.0.0.1", port: relay?.port ?? port, role: s.role, ...(s.color ? { color: s.color } : {}) });
      const home = join(dir, s.id);
      // The agent (which may run as another user: agentOwner) reads etc/ and opt/ and writes run/ and state/.
      mkdirSync(home, { mode: 0o750 });
      this.own(home);
      for (const sub of ["etc", "opt", "bin", "run", "state"]) {
        mkdirSync(join(home, sub), { mode: 0o750 });
        this.own(join(home, sub));
      }
      handles.push({
        id: s.id,
        role: s.role,
        color: s.color,
        dropletId: droplet.id,
        port,
        home,
        configPath: join(home, "etc", "fipd.yaml"),
        runDir: join(home, "run"),
        stateDir: join(home, "state"),
        socket: join(home, "run", "control.sock"),
        health,
        proc: null,
        exit: null,
        config: {} as AgentConfigInput,
        relay,
        partitioned: false,
        wanted: false,
        restartTimer: null,
      });
    }
    // One identity per member: only its own private key on its "droplet", every public key in every config.
    const publicKeys = handles.map((h) => {
      const k = newIdentity();
      writeFileSync(this.keyFile(h.id), k.privateKeyPem, { mode: 0o600 });
      this.own(this.keyFile(h.id));
      return { id: h.id, publicKey: k.publicKey };
    });
    for (const h of handles) {
      h.config = {
        nodeId: h.id,
        members,
        activeColor: opts.activeColor ?? "blue",
        ...(h.role === "lb" ? { reservedIp: RESERVED_IP } : {}),
        listen: { address: "127.0.0.1", port: h.port },
        peerAuth: { keyFile: this.keyFile(h.id), publicKeys },
        api: { baseUrl: this.emulator.apiUrl, tokenFile, requestTimeoutMs: 2_000, assignDeadlineMs: 60_000, verifyIntervalMs: 60_000 },
        metadata: { baseUrl: this.emulator.metadataUrl(h.dropletId), checkIntervalMs: 200, requestTimeoutMs: 1_000 },
        ...(h.health ? { health: { url: h.health.url, intervalMs: 100, timeoutMs: 250, rise: 2, fall: 2 } } : {}),
        ...(opts.failover ? { failover: opts.failover } : {}),
        metrics: { enabled: false },
        controlSocket: h.socket,
        stateFile: join(h.stateDir, "state.json"),
        logLevel: "info",
      };
      this.writeConfig(h);
      this.nodes.set(h.id, h);
    }
    // The first deploy's bundle step, as the stack does it: CopyToRemote, then the install script.
    await Promise.all(
      handles.map(async (h) => {
        this.copyBundle(h.id, BUNDLE);
        const r = await this.runScript(h.id, installAgentScript(this.initialSha, this.scriptOptions(h.id)), "", 30_000);
        if (r.code !== 0) throw new Error(`${h.id}: the install script failed (exit ${r.code}): ${r.err.trim()}`);
      }),
    );
  }

  writeConfig(h: NodeHandle): void {
    writeFileSync(h.configPath, renderAgentConfig(h.config), { mode: 0o600 });
    this.own(h.configPath);
  }

  private own(path: string): void {
    if (this.opts.agentOwner) chownSync(path, this.opts.agentOwner.uid, this.opts.agentOwner.gid);
  }

  node(id: string): NodeHandle {
    const h = this.nodes.get(id);
    if (!h) throw new Error(`no node ${id} (have ${[...this.nodes.keys()].join(", ")})`);
    return h;
  }

  /** Start the agent (the active bundle, opt/fipd.cjs, as the unit's ExecStart). */
  startNode(id: string): void {
    const h = this.node(id);
    if (h.proc) throw new Error(`${id} is already running`);
    if (this.closed) throw new Error(`${id}: the cluster is closed`);
    if (h.restartTimer) clearTimeout(h.restartTimer);
    h.restartTimer = null;
    h.wanted = true;
    const logs = createWriteStream(join(this.dir, `${id}.log`), { flags: "a" });
    const agent = [process.execPath, ...agentNodeFlags(), join(h.home, "opt", "fipd.cjs"), "run", "--config", h.configPath];
    const argv = this.opts.launch ? this.opts.launch(h, agent) : agent;
    const proc = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    h.proc = proc;
    h.exit = new Promise((r) => proc.once("exit", (code, signal) => r(code ?? (signal ? 128 : null))));
    this.opts.onAgentEvent?.(id, `agent started (pid ${proc.pid})`);
    let buf = "";
    proc.stdout!.on("data", (d: Buffer) => {
      logs.write(d);
      if (!this.opts.onLog) return;
      buf += d.toString();
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        this.opts.onLog(id, buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    proc.stderr!.on("data", (d: Buffer) => logs.write(d));
    proc.once("exit", (code, signal) => {
      if (h.proc === proc) h.proc = null;
      logs.end();
      if (this.closed) return;
      this.opts.onAgentEvent?.(id, `agent exited (${signal ?? `code ${code}`})`);
      const after = this.opts.restartAfterMs;
      if (h.wanted && h.proc === null && after !== undefined) {
        this.opts.onAgentEvent?.(id, `restarting in ${after} ms (Restart=always)`);
        h.restartTimer = setTimeout(() => {
          h.restartTimer = null;
          if (h.wanted && !h.proc && !this.closed) this.startNode(id);
        }, after);
      }
    });
  }

  startAll(): void {
    for (const id of this.nodes.keys()) this.startNode(id);
  }

  /** Stop the agent for good (no restart): send a signal; resolves when the process has exited (bounded). */
  async stopNode(id: string, signal: NodeJS.Signals = "SIGKILL", timeoutMs = 15_000): Promise<number | null> {
    const h = this.node(id);
    h.wanted = false;
    if (h.restartTimer) clearTimeout(h.restartTimer);
    h.restartTimer = null;
    if (!h.proc || !h.exit) return null;
    const exit = h.exit;
    h.proc.kill(signal);
    const code = await Promise.race([exit, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutMs))]);
    if (code === "timeout") {
      h.proc?.kill("SIGKILL");
      throw new Error(`${id} did not exit within ${timeoutMs} ms of ${signal}`);
    }
    return code;
  }

  /** A signal from outside the service manager (`kill -9 <pid>`): with restartAfterMs, the agent comes back. */
  killNode(id: string, signal: NodeJS.Signals = "SIGKILL"): number {
    const h = this.node(id);
    if (!h.proc?.pid) throw new Error(`${id}: the agent is not running`);
    h.proc.kill(signal);
    return h.proc.pid;
  }

  /** `systemctl restart fipd`: SIGTERM (the agent hands over if it leads), a bounded wait, then start. */
  async restartNode(id: string): Promise<void> {
    if (this.node(id).proc) await this.stopNode(id, "SIGTERM", STOP_TIMEOUT_MS);
    this.startNode(id);
  }

  /** Cut a node off from its peers (both ways), or heal it. Needs `peerRelays`. */
  partition(id: string, cut: boolean): void {
    if (!this.opts.peerRelays) throw new Error("partition() needs a cluster started with peerRelays: true");
    this.node(id).partitioned = cut;
  }

  /** Whether the relay in front of `target` drops a datagram from (or a reply to) the client at `clientPort`. */
  private cutOff(target: string, clientPort: number): boolean {
    if (this.nodes.get(target)?.partitioned) return true;
    for (const h of this.nodes.values()) if (h.port === clientPort) return h.partitioned;
    return false;
  }

  async status(id: string): Promise<StatusReport | null> {
    const h = this.node(id);
    if (!h.proc) return null;
    try {
      return (await controlRequest(h.socket, { cmd: "status" }, { timeoutMs: 1_000 })) as StatusReport;
    } catch {
      return null;
    }
  }

  async request(id: string, req: Parameters<typeof controlRequest>[1]): Promise<unknown> {
    return controlRequest(this.node(id).socket, req, { timeoutMs: 5_000 });
  }

  // ------------------------------------------------------------ the stack's scripts, run here

  /** ScriptOptions for this node's layout, with the harness as service manager. */
  scriptOptions(id: string): ScriptOptions {
    const h = this.node(id);
    const ctl = (verb: string) => `"${process.execPath}" "${join(this.dir, "servicectl.cjs")}" "${join(this.dir, "service.sock")}" ${verb} ${id}`;
    return {
      node: process.execPath,
      fipdDir: join(h.home, "opt"),
      fipd: join(h.home, "bin", "fipd"),
      etcDir: join(h.home, "etc"),
      owner: userInfo().username,
      service: { isActive: ctl("is-active"), restart: ctl("restart"), stop: ctl("stop"), install: "true" },
    };
  }

  /** Copy a bundle to where the stack's CopyToRemote puts it (opt/fipd-<build>.cjs); returns its SHA-256. */
  copyBundle(id: string, file: string): string {
    const sha = sha256File(file);
    copyFileSync(file, bundlePath(sha, this.scriptOptions(id).fipdDir));
    return sha;
  }

  /** The JSON document the stack pipes into `fipd apply-config` for this node (config and secrets). */
  applyPayload(id: string): string {
    const h = this.node(id);
    return JSON.stringify({
      config: h.config,
      ...(h.role === "lb" ? { token: this.token } : {}),
      identityKey: readFileSync(this.keyFile(id), "utf8").trim(),
    });
  }

  /**
   * Run a generated script on a node, as the stack's remote.Command does over SSH: `sh -c` with stdin,
   * the fipd CLI finding this node's config through FIPD_CONFIG. Killed (with its children) after
   * timeoutMs. `onLine` gets each line of output as it comes.
   */
  runScript(
    id: string,
    script: string,
    stdin = "",
    timeoutMs = 180_000,
    onLine?: (line: string, stream: "out" | "err") => void,
  ): Promise<{ code: number; out: string; err: string }> {
    const h = this.node(id);
    if (this.closed) return Promise.reject(new Error(`${id}: the cluster is closed`));
    return new Promise((done, fail) => {
      const p = spawn("/bin/sh", ["-c", script], { cwd: h.home, env: { ...process.env, FIPD_CONFIG: h.configPath }, detached: true });
      this.scripts.add(p);
      const out = { out: "", err: "" };
      const pending = { out: "", err: "" };
      const take = (stream: "out" | "err") => (d: Buffer) => {
        out[stream] += d.toString();
        if (!onLine) return;
        pending[stream] += d.toString();
        let i;
        while ((i = pending[stream].indexOf("\n")) >= 0) {
          onLine(pending[stream].slice(0, i), stream);
          pending[stream] = pending[stream].slice(i + 1);
        }
      };
      p.stdout.on("data", take("out"));
      p.stderr.on("data", take("err"));
      const timer = setTimeout(() => {
        killGroup(p);
        fail(new Error(`${id}: script still running after ${timeoutMs} ms; killed`));
      }, timeoutMs);
      p.on("error", (e) => {
        clearTimeout(timer);
        fail(e);
      });
      p.on("close", (code) => {
        this.scripts.delete(p);
        clearTimeout(timer);
        done({ code: code ?? 1, ...out });
      });
      p.stdin.on("error", () => undefined); // a script that does not read its stdin
      p.stdin.end(stdin);
    });
  }

  /** The service manager the scripts' `systemctl` talks to: one request line, one answer line. */
  private async startServiceManager(path: string): Promise<NetServer> {
    const server = createNetServer((sock) => {
      let buf = "";
      sock.on("error", () => undefined);
      sock.on("data", (d) => {
        buf += d.toString();
        if (buf.length > 256) return void sock.end("error: request too long\n");
        const nl = buf.indexOf("\n");
        if (nl < 0) return;
        const [verb, id, ...rest] = buf.slice(0, nl).split(" ");
        const answer = async (): Promise<string> => {
          if (rest.length || !id || !this.nodes.has(id)) return `error: expected "<is-active|restart|stop> <node>", got ${JSON.stringify(buf.slice(0, nl))}`;
          if (verb === "is-active") return this.node(id).proc ? "active" : "inactive";
          if (verb === "restart") return this.restartNode(id).then(() => "ok");
          if (verb === "stop") return this.stopNode(id, "SIGTERM", STOP_TIMEOUT_MS).then(() => "ok");
          return `error: unknown verb ${JSON.stringify(verb)}`;
        };
        answer().then(
          (a) => sock.end(a + "\n"),
          (e: unknown) => sock.end(`error: ${(e as Error).message}\n`),
        );
      });
    });
    await new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(path, () => ok());
    });
    return server;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.scripts) killGroup(p);
    for (const h of this.nodes.values()) if (h.restartTimer) clearTimeout(h.restartTimer);
    await Promise.all([...this.nodes.keys()].map((id) => this.stopNode(id, "SIGKILL").catch(() => undefined)));
    for (const h of this.nodes.values()) {
      await h.health?.close();
      await h.relay?.close();
    }
    await new Promise<void>((r) => (this.service ? this.service.close(() => r()) : r()));
    await this.emulator.close();
    if (!this.opts.keepDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** SIGKILL a detached child and everything it started (its process group). */
function killGroup(p: ChildProcess): void {
  try {
    process.kill(-p.pid!, "SIGKILL");
  } catch {
    /* already gone */
  }
}

export function ensureDir(p: string): void {
  mkdirSync(p, { recursive: true });
}
