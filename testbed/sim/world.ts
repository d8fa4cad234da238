/**
 * The simulated world: nodes with drifting clocks, a lossy, delaying, duplicating, partitionable
 * network, crashes and restarts, health changes, operator actions and config rollouts. One event
 * queue in real (simulated) time; every node only ever sees its own local clock.
 *
 * Deterministic: all randomness comes from one seeded Rng, all iteration is in insertion order.
 */
import type { Color, FailoverTiming, Member } from "../../agent/config.js";
import { Election, type PlantedBugs } from "../../agent/election/node.js";
import type { DurableState, ElectionConfig, ElectionEvent, PeerMessage } from "../../agent/election/types.js";
import { IpKeeper, type KeeperTimers, type MetadataReader, type ReservedIpApi } from "../../agent/ip-keeper.js";
import { silentLogger } from "../../agent/log.js";
import { ShellAssertionError, stepAndCarryOut, type KeeperPort, type ShellPorts } from "../../agent/shell.js";
import { Rng } from "./rng.js";

export interface SimNode {
  id: string;
  member: Member;
  alive: boolean;
  election: Election | null;
  /** Local clock: local = offset + rate · realTime. A restart starts a new process clock near 0. */
  offset: number;
  rate: number;
  healthy: boolean;
  maintenance: boolean;
  config: ElectionConfig;
  wakeGen: number;
  /** LB nodes: the real IP keeper of this process (simulated clock, timers and API); null when down. */
  keeper: IpKeeper | null;
  /** The droplet this node runs on, for the simulated Reserved IP API. */
  dropletId: number;
  /** The ports through which the shared shell carries out this process's outputs; null when down. */
  shell: ShellPorts | null;
  group: number;
  /** The bundle this node runs; the shell stamps it on its statuses (rolling upgrades). */
  build?: string;
}

export interface NetworkConditions {
  loss: number;
  minDelayMs: number;
  maxDelayMs: number;
  duplicate: number;
}

type QueueItem =
  | { at: number; seq: number; kind: "deliver"; to: string; message: PeerMessage }
  | { at: number; seq: number; kind: "wake"; node: string; gen: number; localAt: number }
  | { at: number; seq: number; kind: "action"; label: string; run: () => void };

/** A binary min-heap on (at, seq): equal times keep insertion order, so runs are reproducible. */
class Queue {
  private items: QueueItem[] = [];
  get size() {
    return this.items.length;
  }
  push(item: QueueItem): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(a[i], a[p])) {
        [a[i], a[p]] = [a[p], a[i]];
        i = p;
      } else break;
    }
  }
  pop(): QueueItem | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && less(a[l], a[m])) m = l;
        if (r < a.length && less(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}
const less = (x: QueueItem, y: QueueItem) => x.at < y.at || (x.at === y.at && x.seq < y.seq);

export interface TraceLine {
  at: number;
  text: string;
}

export interface WorldOptions {
  seed: number;
  members: Member[];
  activeColor: Color;
  timing: FailoverTiming;
  /** Actual clock-rate deviation of each node, at most this (may exceed timing.maxClockDrift to test bugs). */
  actualDrift: number;
  network: NetworkConditions;
  /** Extra one-way delay per link (e.g. a witness in another region). */
  extraDelayMs?: (from: string, to: string) => number;
  bugs?: PlantedBugs;
  /** Keep the last N trace lines (0: none). */
  traceLimit?: number;
  /** Called as a node starts asserting the IP, before anything else changes. Throw to stop the run. */
  onStartAsserting?: (world: World, node: SimNode) => void;
  /** Called after every node step: the invariant checks. Throw to stop the run. */
  afterStep?: (world: World, stepped: SimNode) => void;
  /**
   * Deliberate bugs in the shell's surroundings, to prove the invariants check what is carried out.
   * `keeperIgnoresStop`: the IP keeper never stops asserting; the shell's own check is skipped so that
   * the simulator's A1 (on the keeper's state) is what catches it.
   */
  shellBugs?: { keeperIgnoresStop?: boolean };
}

/** Whether a node's IP keeper is pulling the Reserved IP to it right now (what A1 is checked on). */
export const keeperAsserting = (n: SimNode): boolean => n.keeper?.isAsserting() ?? false;

/** The simulated cloud: where the Reserved IP is. Answers after `latencyMs` of simulated time. */
class SimCloud {
  holder: number | null = null;
  constructor(
    private readonly world: World,
    private readonly latencyMs: number,
  ) {}
  private later<T>(value: () => T): Promise<T> {
    return new Promise((resolve) => this.world.at(this.world.now + this.latencyMs, "cloud", () => resolve(value())));
  }
  metadata(dropletId: number, ip: string): MetadataReader {
    return { reservedIpv4: () => this.later(() => ({ active: this.holder === dropletId, ipAddress: this.holder === dropletId ? ip : null })) };
  }
  api(): ReservedIpApi {
    return {
      getReservedIp: () => this.later(() => ({ dropletId: this.holder, locked: false })),
      assign: (_ip, dropletId) =>
        this.later(() => {
          this.holder = dropletId;
          return {};
        }),
    };
  }
}

const SIM_RESERVED_IP = "192.0.2.10";

export class World {
  readonly rng: Rng;
  private readonly netRng: Rng;
  readonly nodes = new Map<string, SimNode>();
  private readonly queue = new Queue();
  private seq = 0;
  now = 0;
  steps = 0;
  network: NetworkConditions;
  configVersion = 1;
  members: Member[];
  activeColor: Color;
  readonly timing: FailoverTiming;
  readonly trace: TraceLine[] = [];
  /** term → leader, for the one-leader-per-term invariant (T1), over the whole run, crashes included. */
  readonly leadersByTerm = new Map<number, string>();
  messagesSent = 0;
  /** Acknowledgements and votes the nodes ignored because the send time they echo was never sent. */
  echoesIgnored = 0;
  /**
   * Misbehaving peers: node id → how far ahead of the real send time its acknowledgements and votes
   * echo (an authenticated peer with a bug, or a compromised one).
   */
  private readonly echoAhead = new Map<string, number>();
  /** One-way cuts: "a>b" drops every message from a to b (on top of the symmetric groups). */
  private readonly cut = new Set<string>();
  /** Each node's stable storage: what its last process persisted survives a crash. */
  private readonly disk = new Map<string, DurableState>();
  /** "a>b" → the last real time a message from a was delivered to b: the S2 oracle's view of reachability. */
  private readonly delivered = new Map<string, number>();
  private readonly cloud: SimCloud;

  constructor(readonly opts: WorldOptions) {
    this.rng = new Rng(opts.seed);
    this.netRng = this.rng.fork();
    this.network = opts.network;
    this.members = opts.members;
    this.activeColor = opts.activeColor;
    this.timing = opts.timing;
    this.cloud = new SimCloud(this, 20);
  }

  log(text: string): void {
    const limit = this.opts.traceLimit ?? 0;
    if (limit <= 0) return;
    this.trace.push({ at: this.now, text });
    if (this.trace.length > limit) this.trace.splice(0, this.trace.length - limit);
  }

  electionConfig(id: string): ElectionConfig {
    return { nodeId: id, membershipVersion: this.configVersion, members: this.members, activeColor: this.activeColor, timing: this.timing };
  }

  /** Add a node to the world (not started). */
  addNode(member: Member): SimNode {
    const d = this.opts.actualDrift;
    const n: SimNode = {
      id: member.id,
      member,
      alive: false,
      election: null,
      offset: 0,
      rate: 1 + this.rng.float(-d, d),
      healthy: member.role === "lb",
      maintenance: false,
      config: this.electionConfig(member.id),
      wakeGen: 0,
      keeper: null,
      shell: null,
      dropletId: 1000 + this.nodes.size,
      group: 0,
    };
    this.nodes.set(n.id, n);
    return n;
  }

  local(n: SimNode, real = this.now): number {
    return n.offset + n.rate * real;
  }

  private realOf(n: SimNode, local: number): number {
    return (local - n.offset) / n.rate;
  }

  /** Start (or restart) a node with the newest config, as a fresh process: only its disk survives. */
  start(id: string): void {
    const n = this.nodes.get(id)!;
    if (n.alive) return;
    n.alive = true;
    n.offset = this.rng.float(0, 1000) - n.rate * this.now; // local clock starts near 0..1000
    n.config = this.electionConfig(id);
    n.election = new Election(n.config, this.local(n), { random: () => this.rng.next(), bugs: this.opts.bugs, durable: this.disk.get(id) ?? null });
    n.keeper = n.member.role === "lb" ? this.newKeeper(n) : null;
    n.shell = this.portsFor(n);
    this.log(`${id} starts (config v${n.config.membershipVersion})`);
    this.stepNode(n, { type: "tick", now: this.local(n) });
    if (n.member.role === "lb") this.stepNode(n, { type: "health", now: this.local(n), healthy: n.healthy });
    if (n.maintenance) this.stepNode(n, { type: "maintenance", now: this.local(n), on: true });
  }

  crash(id: string): void {
    const n = this.nodes.get(id)!;
    if (!n.alive) return;
    n.alive = false;
    n.election = null;
    n.keeper?.close();
    n.keeper = null;
    n.shell = null;
    n.wakeGen++;
    this.log(`${id} crashes`);
  }

  setHealth(id: string, healthy: boolean): void {
    const n = this.nodes.get(id)!;
    n.healthy = healthy;
    this.log(`${id} HAProxy ${healthy ? "healthy" : "unhealthy"}`);
    if (n.alive && n.member.role === "lb") this.stepNode(n, { type: "health", now: this.local(n), healthy });
  }

  setMaintenance(id: string, on: boolean): void {
    const n = this.nodes.get(id)!;
    n.maintenance = on;
    this.log(`${id} maintenance ${on ? "on" : "off"}`);
    if (n.alive) this.stepNode(n, { type: "maintenance", now: this.local(n), on });
  }

  handover(id: string, to?: string, preferBuild?: string): void {
    const n = this.nodes.get(id)!;
    this.log(`${id} asked to hand over${to ? ` to ${to}` : ""}${preferBuild ? ` preferring build ${preferBuild}` : ""}`);
    if (n.alive) this.stepNode(n, { type: "handover", now: this.local(n), to, preferBuild, reason: "operator" });
  }

  /** Deliver the world's current config to one node (a reload). */
  reload(id: string): void {
    const n = this.nodes.get(id)!;
    if (!n.alive) return;
    n.config = this.electionConfig(id);
    this.log(`${id} reloads config v${n.config.membershipVersion} (${this.activeColor})`);
    this.stepNode(n, { type: "config", now: this.local(n), config: n.config });
  }

  /** Split the nodes into groups; messages only flow within a group. */
  partition(groups: string[][]): void {
    for (const n of this.nodes.values()) n.group = -1;
    groups.forEach((g, i) => g.forEach((id) => (this.nodes.get(id)!.group = i)));
    let next = groups.length;
    for (const n of this.nodes.values()) if (n.group === -1) n.group = next++;
    this.log(`partition ${groups.map((g) => `{${g.join(",")}}`).join(" ")}`);
  }

  /** Cut the links from every node in `from` to every node in `to`, one way only. */
  cutOneWay(from: string[], to: string[]): void {
    for (const a of from) for (const b of to) if (a !== b) this.cut.add(`${a}>${b}`);
    this.log(`one-way cut {${from.join(",")}} -> {${to.join(",")}}`);
  }

  /** Whether a message sent from a to b right now can arrive. */
  linkUp(a: SimNode, b: SimNode): boolean {
    return a.group === b.group && !this.cut.has(`${a.id}>${b.id}`);
  }

  /** The slowest one-way delay any link may have right now. */
  maxLinkDelayMs(): number {
    let extra = 0;
    const ids = [...this.nodes.keys()];
    if (this.opts.extraDelayMs) for (const a of ids) for (const b of ids) extra = Math.max(extra, this.opts.extraDelayMs(a, b));
    return this.network.maxDelayMs + extra;
  }

  /** The last real time a message from `from` reached `to` (−∞ if never). */
  lastDelivered(from: string, to: string): number {
    return this.delivered.get(`${from}>${to}`) ?? Number.NEGATIVE_INFINITY;
  }

  /** From now on, `id` echoes send times `aheadMs` later than it got them (null: truthfully again). */
  echoFuture(id: string, aheadMs: number | null): void {
    if (aheadMs === null) this.echoAhead.delete(id);
    else this.echoAhead.set(id, aheadMs);
    this.log(aheadMs === null ? `${id} echoes send times truthfully` : `${id} echoes send times ${aheadMs.toFixed(0)} ms ahead`);
  }

  heal(): void {
    for (const n of this.nodes.values()) n.group = 0;
    this.cut.clear();
    this.log("network healed");
  }

  at(realMs: number, label: string, run: () => void): void {
    this.queue.push({ at: realMs, seq: this.seq++, kind: "action", label, run });
  }

  /** The production IpKeeper, on this node's clock, the world's timers and the simulated cloud. */
  private newKeeper(n: SimNode): IpKeeper {
    const timers: KeeperTimers = {
      setTimeout: (fn, ms) => {
        const handle = { cancelled: false };
        this.at(this.now + ms / n.rate, "keeper timer", () => handle.cancelled || fn());
        return handle;
      },
      clearTimeout: (h) => ((h as { cancelled: boolean }).cancelled = true),
    };
    return new IpKeeper({
      reservedIp: SIM_RESERVED_IP,
      dropletId: n.dropletId,
      metadata: this.cloud.metadata(n.dropletId, SIM_RESERVED_IP),
      api: this.cloud.api(),
      log: silentLogger,
      checkIntervalMs: 1_000,
      verifyIntervalMs: 60_000,
      assignDeadlineMs: 10_000,
      now: () => this.local(n),
      timers,
    });
  }

  /** What the shell drives: the real keeper, or (planted bug) one that never stops. */
  private keeperPort(k: IpKeeper | null): KeeperPort | null {
    if (!k || !this.opts.shellBugs?.keeperIgnoresStop) return k;
    return { start: (t) => k.start(t), stop: () => {}, isAsserting: () => k.isAsserting(), holdsReservedIp: () => k.holdsReservedIp() };
  }

  /** The shell's ports for a node's current process (built once per start: steps are the hot path). */
  private portsFor(n: SimNode): ShellPorts {
    const keeper = this.keeperPort(n.keeper);
    return {
      durable: { save: (state) => this.disk.set(n.id, state) },
      transport: { send: (to, message) => this.transmit(n, to, message) },
      keeper,
      get build() {
        return n.build;
      },
      skipKeeperCheck: this.opts.shellBugs?.keeperIgnoresStop,
      schedule: (wakeAt) => {
        if (!Number.isFinite(wakeAt)) return;
        n.wakeGen++;
        const at = Math.max(this.now, this.realOf(n, wakeAt));
        this.queue.push({ at, seq: this.seq++, kind: "wake", node: n.id, gen: n.wakeGen, localAt: wakeAt });
      },
      hooks: {
        startAsserting: (term) => {
          this.opts.onStartAsserting?.(this, n);
          this.log(`${n.id} starts asserting (term ${term})`);
        },
        stopAsserting: (term, reason) => this.log(`${n.id} stops asserting (term ${term}): ${reason}`),
        echoIgnored: (eff) => {
          this.echoesIgnored++;
          this.log(`${n.id} ignores ${eff.kind} from ${eff.from}: ${eff.reason}`);
        },
        roleChanged: (eff) => {
          this.log(`${n.id} is ${eff.role} in term ${eff.term} (leader ${eff.leader ?? "none"}): ${eff.reason}`);
          if (eff.role === "leader") {
            const prev = this.leadersByTerm.get(eff.term);
            if (prev !== undefined && prev !== n.id) throw new InvariantViolation("T1", `two leaders in term ${eff.term}: ${prev} and ${n.id}`);
            this.leadersByTerm.set(eff.term, n.id);
          }
        },
      },
    };
  }

  stepNode(n: SimNode, ev: ElectionEvent): void {
    if (!n.alive || !n.election || !n.shell) return;
    this.steps++;
    try {
      stepAndCarryOut(n.election, ev, n.shell);
    } catch (e) {
      // In production a broken shell assertion ends the process; here it is a violation found.
      if (e instanceof ShellAssertionError) throw new InvariantViolation(e.invariant, `${n.id}: ${e.message} (checked in the shell)`);
      throw e;
    }
    this.opts.afterStep?.(this, n);
  }

  private transmit(from: SimNode, to: string, message: PeerMessage): void {
    const dest = this.nodes.get(to);
    if (!dest) return;
    this.messagesSent++;
    const net = this.network;
    if (!this.linkUp(from, dest)) return;
    if (this.netRng.chance(net.loss)) return;
    const ahead = this.echoAhead.get(from.id);
    if (ahead !== undefined && (message.kind === "heartbeat-ack" || message.kind === "vote-response")) {
      message = { ...message, echoSentAt: message.echoSentAt + ahead };
    }
    const copies = this.netRng.chance(net.duplicate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const at = this.now + this.netRng.float(net.minDelayMs, net.maxDelayMs) + (this.opts.extraDelayMs?.(from.id, to) ?? 0);
      // The shell stamped status (build, holdsReservedIp) on the message before sending it.
      this.queue.push({ at, seq: this.seq++, kind: "deliver", to, message: { ...message, from: from.id } as PeerMessage });
    }
  }

  /** Run until real time `until` (or the queue empties). */
  runUntil(until: number): void {
    for (;;) {
      const item = this.queue.pop();
      if (!item) return;
      if (item.at > until) {
        this.queue.push(item);
        this.now = until;
        return;
      }
      this.now = item.at;
      if (item.kind === "action") {
        item.run();
      } else if (item.kind === "wake") {
        const n = this.nodes.get(item.node)!;
        // Converting local → real → local can lose a rounding error; the node asked to wake at localAt.
        if (n.alive && n.wakeGen === item.gen) this.stepNode(n, { type: "tick", now: Math.max(this.local(n), item.localAt) });
      } else {
        const n = this.nodes.get(item.to)!;
        const sender = this.nodes.get(item.message.from);
        // A link cut while the packet was in flight drops it too.
        if (!n.alive || (sender && !this.linkUp(sender, n))) continue;
        this.delivered.set(`${item.message.from}>${n.id}`, this.now);
        this.stepNode(n, { type: "message", now: this.local(n), message: item.message });
      }
    }
  }

  /** Alive nodes that lead with a valid lease right now, by their own clocks. */
  leaseHolders(): SimNode[] {
    const out: SimNode[] = [];
    for (const n of this.nodes.values()) if (n.alive && n.election && n.election.probe(this.local(n)).leaseValid) out.push(n);
    return out;
  }
}

export class InvariantViolation extends Error {
  constructor(
    readonly invariant: string,
    readonly detail: string,
  ) {
    super(`${invariant}: ${detail}`);
  }
}
