/**
 * A whole ha-lb cluster on loopback: the DigitalOcean emulator, N load-balancer agents and a
 * witness as real `node dist/fipd.cjs run` processes, each with a stand-in HAProxy health endpoint.
 * Used by the demo and the process tests; no root needed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { AgentConfigInput, Color } from "../../agent/config.js";
import { renderAgentConfig } from "../../agent/config-file.js";
import type { StatusReport } from "../../agent/controller.js";
import { controlRequest } from "../../agent/control.js";
import { ClusterViews } from "./cluster-views.js";
import { startEmulator, type Emulator } from "../emulator/index.js";
import { startFakeHealthEndpoint, type FakeHealthEndpoint } from "./fake-haproxy.js";
import { agentNodeFlags } from "./node-flags.js";
import { freePort } from "./ports.js";

export const BUNDLE = resolve(__dirname, "..", "..", "dist", "fipd.cjs");
export const RESERVED_IP = "198.51.100.100";
const REGION = "nyc3";

export interface LocalClusterOptions {
  /** Colors of the LB nodes, in order: ids become lb-<color>-<n>. */
  lbs: Color[];
  witness?: boolean;
  activeColor?: Color;
  actionDelayMs?: number;
  failover?: AgentConfigInput["failover"];
  /** Called with every agent log line (JSON) if set. */
  onLog?: (node: string, line: string) => void;
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
  port: number;
  configPath: string;
  /** The agent's stand-ins for /run/fipd (the control socket) and /var/lib/fipd (the state file). */
  runDir: string;
  stateDir: string;
  socket: string;
  health: FakeHealthEndpoint | null;
  proc: ChildProcess | null;
  exit: Promise<number | null> | null;
  config: AgentConfigInput;
}

export class LocalCluster extends ClusterViews {
  readonly reservedIp = RESERVED_IP;
  readonly nodes = new Map<string, NodeHandle>();
  private constructor(
    readonly dir: string,
    readonly emulator: Emulator,
    readonly token: string,
    private readonly opts: LocalClusterOptions,
  ) {
    super();
  }

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    const dir = mkdtempSync(join(tmpdir(), "halb-cluster-"));
    const token = `dop_v1_${randomBytes(16).toString("hex")}`;
    const emulator = await startEmulator({ tokens: [token], actionDelayMs: opts.actionDelayMs ?? 0 });
    const cluster = new LocalCluster(dir, emulator, token, opts);
    try {
      await cluster.setup();
    } catch (e) {
      await cluster.close();
      throw e;
    }
    return cluster;
  }

  private async setup(): Promise<void> {
    const { dir, opts } = this;
    const keyFile = join(dir, "peer.key");
    writeFileSync(keyFile, randomBytes(32).toString("hex") + "\n", { mode: 0o600 });
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, this.token + "\n", { mode: 0o600 });
    chmodSync(tokenFile, 0o600);
    this.own(keyFile);
    this.own(tokenFile);
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
      const health = s.role === "lb" ? await startFakeHealthEndpoint() : null;
      members.push({ id: s.id, address: "127.0.0.1", port, role: s.role, ...(s.color ? { color: s.color } : {}) });
      handles.push({
        id: s.id,
        role: s.role,
        color: s.color,
        dropletId: droplet.id,
        port,
        configPath: join(dir, `${s.id}.yaml`),
        runDir: join(dir, s.id, "run"),
        stateDir: join(dir, s.id, "state"),
        socket: join(dir, s.id, "run", "control.sock"),
        health,
        proc: null,
        exit: null,
        config: {} as AgentConfigInput,
      });
    }
    for (const h of handles) {
      h.config = {
        nodeId: h.id,
        members,
        activeColor: opts.activeColor ?? "blue",
        ...(h.role === "lb" ? { reservedIp: RESERVED_IP } : {}),
        listen: { address: "127.0.0.1", port: h.port },
        peerAuth: { keyFile },
        api: { baseUrl: this.emulator.apiUrl, tokenFile, requestTimeoutMs: 2_000, assignDeadlineMs: 60_000, verifyIntervalMs: 60_000 },
        metadata: { baseUrl: this.emulator.metadataUrl(h.dropletId), checkIntervalMs: 200, requestTimeoutMs: 1_000 },
        ...(h.health ? { health: { url: h.health.url, intervalMs: 100, timeoutMs: 250, rise: 2, fall: 2 } } : {}),
        ...(opts.failover ? { failover: opts.failover } : {}),
        metrics: { enabled: false },
        controlSocket: h.socket,
        stateFile: join(h.stateDir, "state.json"),
        logLevel: "info",
      };
      for (const d of [join(dir, h.id), h.runDir, h.stateDir]) {
        mkdirSync(d, { mode: 0o750 });
        this.own(d);
      }
      this.writeConfig(h);
      this.nodes.set(h.id, h);
    }
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

  startNode(id: string): void {
    const h = this.node(id);
    if (h.proc) throw new Error(`${id} is already running`);
    const logs = createWriteStream(join(this.dir, `${id}.log`), { flags: "a" });
    const agent = [process.execPath, ...agentNodeFlags(), BUNDLE, "run", "--config", h.configPath];
    const argv = this.opts.launch ? this.opts.launch(h, agent) : agent;
    const proc = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    h.proc = proc;
    h.exit = new Promise((r) => proc.once("exit", (code, signal) => r(code ?? (signal ? 128 : null))));
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
    proc.once("exit", () => {
      if (h.proc === proc) h.proc = null;
      logs.end();
    });
  }

  startAll(): void {
    for (const id of this.nodes.keys()) this.startNode(id);
  }

  /** Send a signal; resolves when the process has exited (bounded). */
  async stopNode(id: string, signal: NodeJS.Signals = "SIGKILL", timeoutMs = 15_000): Promise<number | null> {
    const h = this.node(id);
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

  async close(): Promise<void> {
    await Promise.all([...this.nodes.keys()].map((id) => this.stopNode(id, "SIGKILL").catch(() => undefined)));
    for (const h of this.nodes.values()) await h.health?.close();
    await this.emulator.close();
    if (!this.opts.keepDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

export function ensureDir(p: string): void {
  mkdirSync(p, { recursive: true });
}
