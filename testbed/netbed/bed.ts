/**
 * The network test bed: a small DigitalOcean region in Linux network namespaces, with real HAProxy,
 * real fipd processes and the project's DigitalOcean emulator. Used by the end-to-end tests
 * (test/e2e) and the benchmarks (bench/). Needs root, `ip`, `nft` and `haproxy`.
 *
 *   halb-cl  client        203.0.113.130/26 ── router 203.0.113.129
 *   halb-rt  router        bridge "pub": 203.0.113.1/25 + 198.51.100.1/25; bridge "vpc" (L2 only);
 *                          1:1 NAT of the Reserved IP 198.51.100.200 to the holder's anchor address,
 *                          moved by the emulator's assign hook (as DigitalOcean's edge does)
 *   halb-d<n> droplet n    eth0: public 203.0.113.(10+n)/25 + anchor 198.51.100.(10+n)/25;
 *                          eth1: VPC 198.51.100.(140+n)/26; 169.254.169.254:80 → the emulator (DNAT)
 *   halb-w   witness       eth0: public 203.0.113.50/25 ("another region": no VPC)
 *   host     (this process) halb-mg0 203.0.113.253/30 ── router 203.0.113.254: the emulator (API
 *                          and metadata) and the app backend that every HAProxy forwards to
 *
 * Only 203.0.113.0/24 and 198.51.100.0/24 are used: 192.0.2.0/24, the third documentation range, is
 * what CI machines like this one use for their own network.
 *
 * Everything it creates is named `halb-*` (namespaces, the one host-side link) or lives in its own
 * temporary directory, and is removed by name or PID in close(). Every wait is bounded.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { newIdentity, type TestIdentity } from "../identity.js";
import { createServer, type Server } from "node:http";
import { appendFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { AgentConfigInput, Color } from "../../agent/config.js";
import type { StatusReport } from "../../agent/controller.js";
import { controlRequest } from "../../agent/control.js";
import { ClusterViews } from "../harness/cluster-views.js";
import { agentNodeFlags } from "../harness/node-flags.js";
import { METADATA_IPV4 } from "../../agent/ports.js";
import { acmeInstallScript, certificateFiles, haproxyBundle, renderHaproxyConfig, haproxyInstallScript } from "../../components/haproxy.js";
import type { Frontend, PemCertificate, Pool } from "../../components/lb-config.js";
import { acmePayload, nodeIdOf, planCluster, type ClusterPlan, type DropletPlan } from "../../components/plan.js";
import { startEmulator, type Emulator } from "../emulator/index.js";
import { startPebble, type Pebble } from "../pebble.js";

export const BUNDLE = resolve(__dirname, "..", "..", "dist", "fipd.cjs");
export const PROBE_CLIENT = resolve(__dirname, "probe-client.mjs");
export const RESERVED_IP = "198.51.100.200";
export const HOST_IP = "203.0.113.253";
const ROUTER_MG_IP = "203.0.113.254";
export const CLIENT_IP = "203.0.113.130";
const REGION = "nyc3";
const PREFIX = "halb-";
const HOST_LINK = "halb-mg0";

export interface BedOptions {
  /** Colors of the LB droplets, in order: ids lb-<color>-<n>. */
  lbs: Color[];
  witness?: boolean;
  activeColor?: Color;
  actionDelayMs?: number;
  failover?: AgentConfigInput["failover"];
  /** Rendered into every LB's HAProxy config (default [80]). */
  listenPorts?: number[];
  /**
   * The long form instead (components/lb-config.ts): frontends and pools, whose servers may name
   * `@APP@` for the bed's app backend, and the certificates shipped with the config as the stack does.
   */
  lb?: { frontends: Frontend[]; pools: Record<string, Pool>; certificates?: Record<string, PemCertificate> };
  /**
   * Automatic HTTPS (issue 15) against Pebble in the client namespace: its DNS answers the Reserved
   * IP for every name and it validates HTTP-01 on port 80, so validation crosses the router's NAT to
   * the holder's HAProxy and fipd's responder. The bed makes each certificate's keys and a
   * self-signed placeholder (the stack's @pulumi/tls resources), ships the keys as the stack does
   * (plan.ts acmePayload on apply-config's stdin) and serves the placeholder until a chain is issued.
   * An https frontend in `lb` names a certificate here like a PEM one.
   */
  acme?: BedAcmeOptions;
}

export interface BedAcmeOptions {
  certificates: { name: string; domains: string[] }[];
  /** Lifetime of Pebble's certificates, in seconds (default Pebble's). */
  certificateValiditySeconds?: number;
  /** fipd's `acme` timings and renewal fraction (agent/config.ts AcmeSchema): short ones for tests. */
  timing?: Omit<NonNullable<AgentConfigInput["acme"]>, "certificates" | "stateDir" | "keyDir" | "responderPort">;
  /**
   * Run the root-run install (components/haproxy.ts acmeInstallScript) when a chain in a node's
   * state dir changes, as `halb-acme-install.path` does on a droplet (default true). The bed has no
   * systemd: a poll of the state dirs every ACME_WATCH_INTERVAL_MS stands for the path unit.
   */
  install?: boolean;
}

/** How often the bed looks for a changed chain in the LBs' ACME state dirs (the path unit's stand-in). */
const ACME_WATCH_INTERVAL_MS = 250;
/** One ACME certificate's key material, as the stack's acme-keys.ts makes it. */
interface BedAcmeKeys {
  accountKey: string;
  key: string;
  /** The self-signed placeholder chain for its domains, signed with `key`. */
  placeholder: PemCertificate;
}

export interface BedNode {
  /** The droplet's name (lb-blue-1, witness): what the bed and its tests call it, and HAProxy's X-Served-By. */
  id: string;
  /** The agent's node id, as the stack names it (components/plan.ts nodeIdOf: the name plus the droplet ID). */
  nodeId: string;
  ns: string;
  role: "lb" | "witness";
  color: Color | null;
  publicIp: string;
  anchorIp: string | null;
  vpcIp: string | null;
  dropletId: number;
  dir: string;
  agent: ChildProcess | null;
  agentExit: Promise<number | null> | null;
  /** The agent config last sent (before apply-config points it at the files); null before the first. */
  config: AgentConfigInput | null;
}

export interface ProbeResult {
  seq: number;
  at: number;
  ok: boolean;
  status?: number;
  servedBy?: string | null;
  error?: string;
  ms: number;
}

/** Run a command, failing with its stderr. */
export function sh(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"], timeout: 30_000 });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${(err.stderr || err.stdout || err.message).trim()}`);
  }
}
/**
 * The same, without blocking the event loop: anything that may reach the emulator or the app backend
 * (both served by this process) must use this, or it waits for an answer this process cannot give.
 */
export function shAsync(cmd: string, args: string[], input?: string, timeoutMs = 60_000): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolveP) => {
    const p = execFile(cmd, args, { encoding: "utf8", timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
      resolveP({ code, out: stdout, err: stderr });
    });
    // A child that exits without reading its stdin (curl) fails the write with EPIPE: its exit code
    // and stderr tell the story, so the write's error must not become an unhandled one.
    p.stdin!.on("error", () => undefined);
    p.stdin!.end(input ?? "");
  });
}
async function mustAsync(cmd: string, args: string[], input?: string, timeoutMs?: number): Promise<string> {
  const r = await shAsync(cmd, args, input, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ").slice(0, 200)} failed (${r.code}): ${(r.err || r.out).trim()}`);
  return r.out;
}
const ipns = (ns: string, ...args: string[]) => sh("ip", ["-n", ns, ...args]);
const nsExec = (ns: string, cmd: string, args: string[], input?: string) => sh("ip", ["netns", "exec", ns, cmd, ...args], input);

/** Whether `pid` runs (not a zombie) and is the program named `comm` (not a reused PID). */
export function processAlive(pid: number, comm: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return name === comm && state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Whether this machine can run the bed (root, ip, nft, haproxy): CI can, and must. */
export function bedPrerequisites(): string | null {
  if (process.getuid?.() !== 0) return "needs root";
  for (const bin of ["ip", "nft", "haproxy", "curl"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${bin}`], { stdio: "ignore" });
    } catch {
      return `needs ${bin}`;
    }
  }
  if (!existsSync(BUNDLE)) return `needs the agent bundle ${BUNDLE} (npm run build)`;
  return null;
}

/** Namespaces left by an earlier run that was killed: ours by name, so safe to remove. */
function removeStale(): void {
  const list = sh("ip", ["netns", "list"])
    .split("\n")
    .map((l) => l.split(" ")[0])
    .filter((n) => n.startsWith(PREFIX));
  for (const ns of list) {
    for (const pid of sh("ip", ["netns", "pids", ns]).split("\n").filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        /* already gone */
      }
    }
    sh("ip", ["netns", "del", ns]);
  }
  try {
    sh("ip", ["link", "del", HOST_LINK]);
  } catch {
    /* not there */
  }
}

export class NetBed extends ClusterViews {
  readonly reservedIp = RESERVED_IP;
  readonly nodes = new Map<string, BedNode>();
  private readonly namespaces: string[] = [];
  private hostLink = false;
  private readonly children = new Set<ChildProcess>();
  private app: Server | null = null;
  emulator!: Emulator;
  /** Pebble in the client namespace (BedOptions.acme), else null. */
  pebble: Pebble | null = null;
  private readonly acmeKeys = new Map<string, BedAcmeKeys>();
  private acmeWatch: NodeJS.Timeout | null = null;
  /** Per LB: the state dir listing last installed from, and whether an install runs. */
  private readonly acmeSeen = new Map<string, { sig: string; busy: boolean }>();
  /** Each run of the root-run ACME install, per LB, with its exit code (tests count them). */
  readonly acmeInstalls: { id: string; code: number; atMs: number }[] = [];
  appPort = 0;
  readonly token = `dop_v1_${randomBytes(24).toString("hex")}`;
  /** Each droplet's identity by name (made on first use), and its previous one during a key roll. */
  private readonly identities = new Map<string, { current: TestIdentity; previous: TestIdentity | null }>();
  activeColor: Color;
  membershipVersion = 1;
  /** Which droplets are members (null: all). A spare droplet stands for a replacement that joins later. */
  memberIds: string[] | null = null;

  private constructor(
    readonly dir: string,
    readonly opts: BedOptions,
  ) {
    super();
    this.activeColor = opts.activeColor ?? "blue";
  }

  static async start(opts: BedOptions): Promise<NetBed> {
    const why = bedPrerequisites();
    if (why) throw new Error(`the network test bed ${why}`);
    removeStale();
    const bed = new NetBed(mkdtempSync(join(tmpdir(), "halb-bed-")), opts);
    try {
      await bed.build();
    } catch (e) {
      await bed.close();
      throw e;
    }
    return bed;
  }

  private addNs(name: string): string {
    sh("ip", ["netns", "add", name]);
    this.namespaces.push(name);
    ipns(name, "link", "set", "lo", "up");
    return name;
  }

  private async build(): Promise<void> {
    // ---- router and host link
    const rt = this.addNs(`${PREFIX}rt`);
    nsExec(rt, "sysctl", ["-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]);
    for (const br of ["pub", "vpc"]) {
      ipns(rt, "link", "add", br, "type", "bridge");
      ipns(rt, "link", "set", br, "up");
    }
    ipns(rt, "addr", "add", "203.0.113.1/25", "dev", "pub");
    ipns(rt, "addr", "add", "198.51.100.1/25", "dev", "pub");
    sh("ip", ["link", "add", HOST_LINK, "type", "veth", "peer", "name", "mg", "netns", rt]);
    this.hostLink = true;
    sh("ip", ["addr", "add", `${HOST_IP}/30`, "dev", HOST_LINK]);
    sh("ip", ["link", "set", HOST_LINK, "up"]);
    ipns(rt, "addr", "add", `${ROUTER_MG_IP}/30`, "dev", "mg");
    ipns(rt, "link", "set", "mg", "up");
    // Routes on the host exist only while halb-mg0 does: deleting the link removes them.
    for (const net of ["203.0.113.0/25", "203.0.113.128/26", "198.51.100.0/25"]) sh("ip", ["route", "add", net, "via", ROUTER_MG_IP, "dev", HOST_LINK]);
    nsExec(
      rt,
      "nft",
      ["-f", "-"],
      `table ip halb {
  map rip { type ipv4_addr : ipv4_addr; }
  chain pre { type nat hook prerouting priority -100; policy accept; dnat to ip daddr map @rip; }
}
`,
    );

    // ---- client
    const cl = this.addNs(`${PREFIX}cl`);
    sh("ip", ["link", "add", "eth0", "netns", cl, "type", "veth", "peer", "name", "cl", "netns", rt]);
    ipns(cl, "addr", "add", `${CLIENT_IP}/26`, "dev", "eth0");
    ipns(cl, "link", "set", "eth0", "up");
    ipns(cl, "route", "add", "default", "via", "203.0.113.129");
    ipns(rt, "addr", "add", "203.0.113.129/26", "dev", "cl");
    ipns(rt, "link", "set", "cl", "up");

    // ---- emulator and app backend on the host side of halb-mg0
    this.emulator = await startEmulator({ tokens: [this.token], actionDelayMs: this.opts.actionDelayMs ?? 0, host: HOST_IP });
    this.emulator.addReservedIp({ ip: RESERVED_IP, region: REGION });
    this.emulator.onAssign(async (ev) => {
      const to = ev.dropletId === null ? null : ([...this.nodes.values()].find((n) => n.dropletId === ev.dropletId)?.anchorIp ?? null);
      const script = `flush map ip halb rip\n${to ? `add element ip halb rip { ${RESERVED_IP} : ${to} }\n` : ""}`;
      await new Promise<void>((res, rej) => {
        const p = execFile("ip", ["netns", "exec", rt, "nft", "-f", "-"], { timeout: 10_000 }, (err) => (err ? rej(err) : res()));
        p.stdin!.end(script);
      });
    });
    this.app = createServer((req, res) => {
      res.setHeader("content-type", "text/plain");
      res.end("ok\n");
    });
    this.app.keepAliveTimeout = 1000;
    await new Promise<void>((r) => this.app!.listen(0, HOST_IP, () => r()));
    this.appPort = (this.app.address() as AddressInfo).port;
    const mdPort = this.emulator.metadataServer.port;

    // ---- droplets
    const counts: Record<string, number> = {};
    const specs = this.opts.lbs.map((color) => ({ color, id: `lb-${color}-${(counts[color] = (counts[color] ?? 0) + 1)}` }));
    specs.forEach((s, i) => {
      const n = i + 1;
      const ns = this.addNs(`${PREFIX}d${n}`);
      const pub = `203.0.113.${10 + n}`;
      const anchor = `198.51.100.${10 + n}`;
      const vpc = `198.51.100.${140 + n}`;
      sh("ip", ["link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", `d${n}-pub`, "netns", rt]);
      sh("ip", ["link", "add", "eth1", "netns", ns, "type", "veth", "peer", "name", `d${n}-vpc`, "netns", rt]);
      ipns(rt, "link", "set", `d${n}-pub`, "master", "pub", "up");
      ipns(rt, "link", "set", `d${n}-vpc`, "master", "vpc", "up");
      ipns(ns, "addr", "add", `${pub}/25`, "dev", "eth0");
      ipns(ns, "addr", "add", `${anchor}/25`, "dev", "eth0");
      ipns(ns, "addr", "add", `${vpc}/26`, "dev", "eth1");
      ipns(ns, "link", "set", "eth0", "up");
      ipns(ns, "link", "set", "eth1", "up");
      ipns(ns, "route", "add", "default", "via", "203.0.113.1", "src", pub);
      this.metadataDnat(ns, mdPort);
      const { id: dropletId } = this.emulator.addDroplet({
        name: s.id,
        region: REGION,
        publicIpv4: pub,
        privateIpv4: vpc,
        anchorIpv4: anchor,
        sourceAddress: pub,
      });
      const dir = join(this.dir, s.id);
      mkdirSync(dir, { recursive: true });
      this.nodes.set(s.id, {
        id: s.id,
        nodeId: nodeIdOf(s.id, dropletId),
        ns,
        role: "lb",
        color: s.color,
        publicIp: pub,
        anchorIp: anchor,
        vpcIp: vpc,
        dropletId,
        dir,
        agent: null,
        agentExit: null,
        config: null,
      });
    });
    if (this.opts.witness) {
      const ns = this.addNs(`${PREFIX}w`);
      const pub = "203.0.113.50";
      sh("ip", ["link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "w-pub", "netns", rt]);
      ipns(rt, "link", "set", "w-pub", "master", "pub", "up");
      ipns(ns, "addr", "add", `${pub}/25`, "dev", "eth0");
      ipns(ns, "link", "set", "eth0", "up");
      ipns(ns, "route", "add", "default", "via", "203.0.113.1");
      this.metadataDnat(ns, mdPort);
      const { id: dropletId } = this.emulator.addDroplet({
        name: "witness",
        region: "sfo3",
        publicIpv4: pub,
        privateIpv4: "10.9.0.2",
        anchorIpv4: "10.9.0.3",
        sourceAddress: pub,
      });
      const dir = join(this.dir, "witness");
      mkdirSync(dir, { recursive: true });
      this.nodes.set("witness", {
        id: "witness",
        nodeId: nodeIdOf("witness", dropletId),
        ns,
        role: "witness",
        color: null,
        publicIp: pub,
        anchorIp: null,
        vpcIp: null,
        dropletId,
        dir,
        agent: null,
        agentExit: null,
        config: null,
      });
    }
    if (this.opts.acme) await this.startAcme(this.opts.acme);
  }

  // ---------------------------------------------------------------- ACME (issue 15)

  /** Pebble in the client namespace, each certificate's keys and placeholder, and the install watch. */
  private async startAcme(o: BedAcmeOptions): Promise<void> {
    this.pebble = await startPebble({
      ns: `${PREFIX}cl`,
      listenIp: CLIENT_IP,
      dnsTarget: RESERVED_IP,
      httpPort: 80,
      ...(o.certificateValiditySeconds ? { certificateValiditySeconds: o.certificateValiditySeconds } : {}),
    });
    // ECDSA P-256 in SEC1 PEM, as @pulumi/tls writes private_key_pem (components/acme-keys.ts).
    const ecKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "sec1", format: "pem" }) as string;
    for (const c of o.certificates) {
      const key = ecKey();
      const keyFile = join(this.dir, `placeholder-${c.name}.key`);
      writeFileSync(keyFile, key, { mode: 0o600 });
      const certificate = sh("openssl", [
        "req",
        "-x509",
        "-key",
        keyFile,
        "-out",
        "-",
        "-days",
        "3650",
        "-subj",
        `/CN=${c.domains[0]}/O=ha-lb placeholder: the ACME certificate is not issued yet`,
        "-addext",
        `subjectAltName=${c.domains.map((d) => `DNS:${d}`).join(",")}`,
      ]);
      rmSync(keyFile);
      this.acmeKeys.set(c.name, { accountKey: ecKey(), key, placeholder: { certificate, privateKey: key } });
    }
    if (o.install !== false) {
      // The path unit's stand-in (no systemd here): a bounded poll of each LB's state dir; a change
      // runs the stack's root-run install script, one run per LB at a time, as systemd would.
      this.acmeWatch = setInterval(() => {
        for (const n of this.nodes.values()) if (n.role === "lb" && this.haproxyPid(n.id)) void this.acmeInstallIfChanged(n.id);
      }, ACME_WATCH_INTERVAL_MS);
    }
  }

  /**
   * "The CA unreachable": every LB drops its packets to Pebble's ACME port (nft, in each LB's
   * namespace), so requests time out as they would to a CA that is down; Pebble keeps running (its
   * root changes at every start). `false` removes the drop.
   */
  blockAcmeDirectory(block: boolean): void {
    if (!this.pebble) throw new Error("this bed runs no Pebble (BedOptions.acme)");
    const port = new URL(this.pebble.directoryUrl).port;
    for (const n of this.nodes.values()) {
      if (n.role !== "lb") continue;
      try {
        nsExec(n.ns, "nft", ["delete", "table", "ip", "halb_ca"]);
      } catch {
        /* not there */
      }
      if (block)
        nsExec(
          n.ns,
          "nft",
          ["-f", "-"],
          `table ip halb_ca {\n  chain out { type filter hook output priority 0; policy accept; ip daddr ${CLIENT_IP} tcp dport ${port} drop; }\n}\n`,
        );
    }
  }

  /**
   * Pebble's HTTP-01 validation requests to the Reserved IP dropped at the router (before its NAT),
   * so an order hangs in validation; requests to an LB's own address still pass. `false` removes it.
   */
  blockValidation(block: boolean): void {
    const rt = `${PREFIX}rt`;
    try {
      nsExec(rt, "nft", ["delete", "table", "ip", "halb_va"]);
    } catch {
      /* not there */
    }
    if (block)
      nsExec(
        rt,
        "nft",
        ["-f", "-"],
        `table ip halb_va {\n  chain pre { type filter hook prerouting priority -150; policy accept; ip saddr ${CLIENT_IP} ip daddr ${RESERVED_IP} tcp dport 80 drop; }\n}\n`,
      );
  }

  /** PIDs of ACME children (fipd-acme.cjs) running in this node's namespace. */
  acmeChildren(id: string): number[] {
    return sh("ip", ["netns", "pids", this.node(id).ns])
      .split("\n")
      .filter(Boolean)
      .map(Number)
      .filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("fipd-acme.cjs");
        } catch {
          return false;
        }
      });
  }

  /** Where a node's fipd writes issued chains, and where apply-config puts the ACME keys. */
  acmeStateDir(id: string): string {
    return join(this.node(id).dir, "acme-state");
  }
  acmeKeyDir(id: string): string {
    return join(this.node(id).dir, "etc", "acme");
  }

  /** The chain this node's fipd holds for `name` (PEM), or null. */
  acmeChain(id: string, name: string): string | null {
    const f = join(this.acmeStateDir(id), `${name}.chain.pem`);
    return existsSync(f) ? readFileSync(f, "utf8") : null;
  }

  /** The placeholder HAProxy serves for `name` before a chain is issued. */
  acmePlaceholder(name: string): PemCertificate {
    const k = this.acmeKeys.get(name);
    if (!k) throw new Error(`no ACME certificate ${name} in this bed (have ${[...this.acmeKeys.keys()].join(", ") || "none"})`);
    return k.placeholder;
  }

  private async acmeInstallIfChanged(id: string): Promise<void> {
    const seen = this.acmeSeen.get(id) ?? { sig: "", busy: false };
    this.acmeSeen.set(id, seen);
    if (seen.busy) return;
    const dir = this.acmeStateDir(id);
    let sig = "";
    try {
      sig = readdirSync(dir)
        .filter((f) => f.endsWith(".chain.pem"))
        .map((f) => {
          const st = statSync(join(dir, f));
          return `${f}:${st.mtimeMs}:${st.size}`;
        })
        .join(",");
    } catch {
      return; // no state dir yet
    }
    if (sig === "" || sig === seen.sig) return;
    seen.sig = sig;
    seen.busy = true;
    try {
      await this.acmeInstall(id);
    } finally {
      seen.busy = false;
    }
  }

  /** Run the stack's root-run ACME install (halb-acme-install.service's script) on this LB; its output goes to acme-install.log. */
  async acmeInstall(id: string): Promise<{ code: number; out: string }> {
    const n = this.node(id);
    const script = acmeInstallScript({
      configPath: this.haproxyPaths(id).cfg,
      reloadCommand: this.haproxyReloadCommand(id),
      acmeStateDir: this.acmeStateDir(id),
      acmeKeyDir: this.acmeKeyDir(id),
      lockWaitS: 30,
    });
    const r = await shAsync("ip", ["netns", "exec", n.ns, "sh", "-c", script], "", 60_000);
    const out = r.out + r.err;
    // The bed may be closing (its directory gone) while a watched install ends: the log is best effort.
    if (existsSync(n.dir)) appendFileSync(join(n.dir, "acme-install.log"), `--- ${new Date().toISOString()} exit ${r.code}\n${out}`);
    this.acmeInstalls.push({ id, code: r.code, atMs: Date.now() });
    return { code: r.code, out };
  }

  private metadataDnat(ns: string, port: number): void {
    nsExec(
      ns,
      "nft",
      ["-f", "-"],
      `table ip halb_md {
  chain out { type nat hook output priority -100; policy accept; ip daddr ${METADATA_IPV4} tcp dport 80 dnat to ${HOST_IP}:${port}; }
}
`,
    );
  }

  /**
   * What the stack would plan for this bed (components/plan.ts, the same function): the member
   * droplets' names, IDs and addresses, the bed's backend, and its key material by value.
   */
  plan(): ClusterPlan<string> {
    const members = [...this.nodes.values()].filter((n) => this.memberIds === null || this.memberIds.includes(n.id));
    const witness = members.find((n) => n.role === "witness");
    return planCluster({
      config: {
        activeColor: this.activeColor,
        metricsCidrs: [],
        ...(this.opts.failover ? { failover: this.opts.failover } : {}),
        listenPorts: this.opts.listenPorts ?? [80],
        backends: [`${HOST_IP}:${this.appPort}`],
        ...(this.opts.lb ? { frontends: this.opts.lb.frontends, pools: this.appPools(this.opts.lb.pools) } : {}),
        ...(this.opts.acme && this.pebble
          ? {
              acme: this.opts.acme.certificates.map((c) => ({
                name: c.name,
                domains: [...c.domains],
                email: "ops@example.com",
                directoryUrl: this.pebble!.directoryUrl,
                directoryCaPem: readFileSync(this.pebble!.caFile, "utf8"),
              })),
            }
          : {}),
      },
      lbs: members
        .filter((n) => n.role === "lb")
        .map((n) => ({ name: n.id, color: n.color!, dropletId: n.dropletId, publicAddress: n.publicIp, vpcAddress: n.vpcIp! })),
      witness: witness ? { name: witness.id, dropletId: witness.dropletId, publicAddress: witness.publicIp } : null,
      reservedIp: RESERVED_IP,
      membershipVersion: this.membershipVersion,
      keys: {
        agentToken: this.token,
        ...(this.acmeKeys.size ? { acme: Object.fromEntries([...this.acmeKeys].map(([name, k]) => [name, { accountKey: k.accountKey, key: k.key }])) } : {}),
        identities: Object.fromEntries(
          members.map((n) => {
            const k = this.identity(n.id);
            return [
              n.id,
              {
                publicKey: k.current.publicKey,
                key: k.current.privateKeyPem,
                ...(k.previous ? { previous: { publicKey: k.previous.publicKey, key: k.previous.privateKeyPem } } : {}),
              },
            ];
          }),
        ),
      },
    });
  }

  /** Droplet `name`'s identity keys (made on first use). */
  identity(name: string): { current: TestIdentity; previous: TestIdentity | null } {
    let k = this.identities.get(name);
    if (!k) this.identities.set(name, (k = { current: newIdentity(), previous: null }));
    return k;
  }

  /** A key roll, as `peerKeyGeneration` + 1 does: every droplet a new identity, the current one kept as previous; `finish` drops the previous ones. */
  rollIdentities(o: { finish?: boolean } = {}): void {
    for (const [name, k] of this.identities)
      this.identities.set(name, o.finish ? { current: k.current, previous: null } : { current: newIdentity(), previous: k.current });
  }

  /** The pools with `@APP@` replaced by the bed's app backend address. */
  private appPools(pools: Record<string, Pool>): Record<string, Pool> {
    const app = `${HOST_IP}:${this.appPort}`;
    return Object.fromEntries(
      Object.entries(pools).map(([k, p]) => [k, { ...p, ...(p.servers ? { servers: p.servers.map((x) => x.replace("@APP@", app)) } : {}) }]),
    );
  }

  /** This droplet's part of the plan; it must be a member. */
  planFor(n: BedNode): DropletPlan<string> {
    const d = this.plan().droplets.find((x) => x.name === n.id);
    if (!d) throw new Error(`${n.id} is not a member (members: ${this.memberIds?.join(", ") ?? "all"}): the stack plans nothing for it`);
    return d;
  }

  /** The planned agent config, plus what keeps the nodes apart on one host: the emulator's API, the socket and state paths. */
  agentConfig(n: BedNode): AgentConfigInput {
    const planned = this.planFor(n).agentConfig;
    if (planned.acme) mkdirSync(this.acmeStateDir(n.id), { recursive: true, mode: 0o700 });
    return {
      ...planned,
      // The state dir in the node's own directory; the test's timings (keyDir is apply-config's).
      ...(planned.acme ? { acme: { ...planned.acme, ...this.opts.acme?.timing, stateDir: this.acmeStateDir(n.id) } } : {}),
      // The emulator answers plain http on the bed's host address, which is not loopback inside a namespace.
      api: { baseUrl: `http://${HOST_IP}:${this.emulator.metadataServer.port}`, allowInsecureHttp: true },
      controlSocket: join(n.dir, "fipd.sock"),
      stateFile: join(n.dir, "state.json"),
    };
  }

  /** The bed's name (lb-blue-1) of the droplet whose agent runs as `nodeId`, or `nodeId` if none does. */
  protected override nodeKey(nodeId: string): string {
    for (const n of this.nodes.values()) if (n.nodeId === nodeId) return n.id;
    return nodeId;
  }

  node(id: string): BedNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id} (have ${[...this.nodes.keys()].join(", ")})`);
    return n;
  }

  /** The JSON document the stack pipes to `fipd apply-config` over SSH: the planned config and key material. */
  applyPayload(n: BedNode): string {
    const { secrets } = this.planFor(n);
    n.config = this.agentConfig(n);
    return JSON.stringify({
      config: n.config,
      ...(secrets.agentToken ? { token: secrets.agentToken } : {}),
      identityKey: secrets.identityKey,
      ...(secrets.previousIdentityKey ? { previousIdentityKey: secrets.previousIdentityKey } : {}),
      ...(secrets.acme ? { acme: acmePayload(secrets.acme) } : {}),
    });
  }

  /** Write config and secrets with the bundle's apply-config (as the stack does), reloading a running agent. */
  applyConfig(id: string): Promise<string> {
    const n = this.node(id);
    return mustAsync(process.execPath, [BUNDLE, "apply-config", "--dir", join(n.dir, "etc"), "--owner", "root"], this.applyPayload(n));
  }

  // ---------------------------------------------------------------- HAProxy

  haproxyPaths(id: string) {
    const d = this.node(id).dir;
    return { cfg: join(d, "haproxy.cfg"), pid: join(d, "haproxy.pid"), sock: join(d, "haproxy.sock") };
  }

  renderHaproxy(id: string): string {
    const { haproxy } = this.planFor(this.node(id));
    if (!haproxy) throw new Error(`${id} is not a load balancer: it runs no HAProxy`);
    // maxconn: this host limits open files to 20,000, below what the production 20,000 connections need.
    return renderHaproxyConfig({ ...haproxy, maxconn: 2000, statsSocket: this.haproxyPaths(id).sock, runAs: null, masterWorker: false });
  }

  /** Install the rendered config with the stack's own install script (anchor from metadata), and (re)start HAProxy. */
  installHaproxy(id: string): Promise<string> {
    const n = this.node(id);
    const p = this.haproxyPaths(id);
    // What the stack serves: the PEM certificates and each ACME certificate's placeholder (cluster.ts).
    const certificates = { ...this.opts.lb?.certificates, ...Object.fromEntries([...this.acmeKeys].map(([name, k]) => [name, k.placeholder])) };
    return mustAsync(
      "ip",
      [
        "netns",
        "exec",
        n.ns,
        "sh",
        "-c",
        haproxyInstallScript({
          configPath: p.cfg,
          reloadCommand: this.haproxyReloadCommand(id),
          retries: 3,
          ...(this.acmeKeys.size ? { acmeStateDir: this.acmeStateDir(id), acmeKeyDir: this.acmeKeyDir(id) } : {}),
        }),
      ],
      haproxyBundle(this.renderHaproxy(id), certificateFiles(certificates, this.opts.lb ? this.appPools(this.opts.lb.pools) : {})),
    );
  }

  /** How the bed reloads a droplet's HAProxy (systemd's reload on a droplet). */
  private haproxyReloadCommand(id: string): string {
    const p = this.haproxyPaths(id);
    // -x: the new process takes the listening sockets from the old one (expose-fd listeners), as a
    // master-worker reload does, instead of binding its own beside them (SYNs queued on the old
    // socket would be lost when it closes). A running HAProxy that a test started another way (after
    // stopping it) may have no socket to hand over: then the new process binds its own, as before.
    const takeOver = `haproxy -D -p "${p.pid}" -f "${p.cfg}" -x "${p.sock}" -sf "$(cat "${p.pid}")"`;
    const beside = `haproxy -D -p "${p.pid}" -f "${p.cfg}" -sf "$(cat "${p.pid}")"`;
    return `if [ -s "${p.pid}" ] && kill -0 "$(cat "${p.pid}")" 2>/dev/null; then ${takeOver} 2>/dev/null || ${beside}; else haproxy -D -p "${p.pid}" -f "${p.cfg}"; fi`;
  }

  /** The running HAProxy's PID, or null. A killed process that is not reaped yet (a zombie) or a reused PID counts as not running. */
  haproxyPid(id: string): number | null {
    const f = this.haproxyPaths(id).pid;
    if (!existsSync(f)) return null;
    const pid = Number(readFileSync(f, "utf8").trim().split("\n")[0]);
    return processAlive(pid, "haproxy") ? pid : null;
  }

  /** SIGKILL this droplet's HAProxy (a crash), and wait (bounded) until it is gone. */
  async stopHaproxy(id: string): Promise<void> {
    const pid = this.haproxyPid(id);
    if (!pid) return;
    process.kill(pid, "SIGKILL");
    for (let i = 0; i < 100 && processAlive(pid, "haproxy"); i++) await new Promise((r) => setTimeout(r, 20));
  }

  // ---------------------------------------------------------------- agents

  /** Start the agent; `bundle` runs another build than dist/fipd.cjs (a rolling upgrade). */
  async startAgent(id: string, bundle = BUNDLE): Promise<void> {
    const n = this.node(id);
    if (n.agent) throw new Error(`${id}: agent already running`);
    const cfg = join(n.dir, "etc", "fipd.yaml");
    if (!existsSync(cfg)) await this.applyConfig(id);
    const log = createWriteStream(join(n.dir, "fipd.log"), { flags: "a" });
    const p = spawn("ip", ["netns", "exec", n.ns, process.execPath, ...agentNodeFlags(), bundle, "run", "--config", cfg], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    p.stdout!.pipe(log);
    p.stderr!.pipe(log);
    this.children.add(p);
    n.agent = p;
    n.agentExit = new Promise((r) =>
      p.on("exit", (code) => {
        this.children.delete(p);
        r(code);
      }),
    );
  }

  async stopAgent(id: string, signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000): Promise<number | null> {
    const n = this.node(id);
    if (!n.agent) return null;
    const p = n.agent;
    const exit = n.agentExit!;
    p.kill(signal);
    const code = await Promise.race([exit, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutMs))]);
    if (code === "timeout") {
      p.kill("SIGKILL");
      await exit;
    }
    n.agent = null;
    n.agentExit = null;
    return code === "timeout" ? null : code;
  }

  async status(id: string): Promise<StatusReport | null> {
    const n = this.node(id);
    // Agents started by the deploy scripts (testbed/netbed/ssh.ts) are not our children: ask the socket.
    try {
      return (await controlRequest(join(n.dir, "fipd.sock"), { cmd: "status" }, { timeoutMs: 1_000 })) as StatusReport;
    } catch {
      return null;
    }
  }

  /** Run the fipd CLI (status, handover, maintenance) against a node's control socket. */
  async fipd(id: string, args: string[]): Promise<{ code: number; out: string }> {
    const n = this.node(id);
    const r = await shAsync(process.execPath, [BUNDLE, ...args, "--socket", join(n.dir, "fipd.sock")]);
    return { code: r.code, out: r.out + r.err };
  }

  /** A leader that holds the IP, and whose traffic arrives through the router's NAT. */
  async waitForStableLeader(timeoutMs = 30_000): Promise<string> {
    return this.waitFor(
      "a leader holding the Reserved IP",
      async () => {
        const l = await this.leader();
        return l && this.holder() === l ? l : null;
      },
      timeoutMs,
    );
  }

  /** One HTTP request from the client namespace; returns X-Served-By, or null on failure. */
  async curl(target: string, port = 80): Promise<string | null> {
    const r = await shAsync("ip", [
      "netns",
      "exec",
      `${PREFIX}cl`,
      "curl",
      "-sS",
      "-o",
      "/dev/null",
      "-D",
      "-",
      "--max-time",
      "2",
      `http://${target}:${port}/`,
    ]);
    if (r.code !== 0) return null;
    const m = r.out.match(/^x-served-by:\s*(\S+)/im);
    return m ? m[1] : "";
  }

  // ---------------------------------------------------------------- client

  /** Start the probe client in the client namespace: a new connection every intervalMs. */
  startClient(intervalMs = 50, timeoutMs = 1_000): ProbeClient {
    const out = join(this.dir, `client-${Date.now()}.jsonl`);
    const p = spawn(
      "ip",
      [
        "netns",
        "exec",
        `${PREFIX}cl`,
        process.execPath,
        PROBE_CLIENT,
        "--url",
        `http://${RESERVED_IP}/`,
        "--interval",
        String(intervalMs),
        "--timeout",
        String(timeoutMs),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    this.children.add(p);
    const results: ProbeResult[] = [];
    let buf = "";
    const file = createWriteStream(out);
    p.stdout!.on("data", (d: Buffer) => {
      file.write(d);
      buf += d.toString();
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line) results.push(JSON.parse(line) as ProbeResult);
      }
    });
    const exited = new Promise<void>((r) => p.on("exit", () => (this.children.delete(p), file.end(), r())));
    return {
      results,
      intervalMs,
      stop: async () => {
        p.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, timeoutMs + 2_000))]);
        if (p.exitCode === null) p.kill("SIGKILL");
        return [...results].sort((a, b) => a.seq - b.seq);
      },
    };
  }

  // ---------------------------------------------------------------- teardown

  async close(): Promise<void> {
    if (this.acmeWatch) clearInterval(this.acmeWatch);
    this.acmeWatch = null;
    for (const n of this.nodes.values()) {
      if (n.agent) await this.stopAgent(n.id, "SIGKILL", 5_000).catch(() => undefined);
      await this.stopHaproxy(n.id).catch(() => undefined);
    }
    for (const p of this.children) p.kill("SIGKILL");
    await this.emulator?.close();
    await this.pebble?.stop();
    await new Promise<void>((r) => (this.app ? this.app.close(() => r()) : r()));
    for (const ns of this.namespaces.reverse()) {
      // Anything still running in our namespaces is ours (started by us, by PID).
      for (const pid of sh("ip", ["netns", "pids", ns]).split("\n").filter(Boolean)) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          /* gone */
        }
      }
      try {
        sh("ip", ["netns", "del", ns]);
      } catch {
        /* already gone */
      }
    }
    if (this.hostLink) {
      try {
        sh("ip", ["link", "del", HOST_LINK]);
      } catch {
        /* went with the router namespace */
      }
    }
    if (!process.env.HALB_KEEP_BED) rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface ProbeClient {
  results: ProbeResult[];
  intervalMs: number;
  stop(): Promise<ProbeResult[]>;
}

/** The longest run of consecutive failed requests, as client-visible downtime (ms), and counts. */
export function downtime(results: ProbeResult[], intervalMs: number): { downtimeMs: number; failed: number; total: number; longestRun: number } {
  let run = 0;
  let longest = 0;
  let failed = 0;
  for (const r of results) {
    if (r.ok) run = 0;
    else {
      failed++;
      run++;
      longest = Math.max(longest, run);
    }
  }
  return { downtimeMs: longest * intervalMs, failed, total: results.length, longestRun: longest };
}
