/**
 * The election state machine: a lease-based majority election (PreVote, terms, leases renewed by
 * majority acknowledgements, planned handover, joint consensus for membership changes).
 *
 * Pure and deterministic: every input is an event with the node's monotonic `now`; every output is
 * messages, effects and the next wake-up time. See agent/election/README.md for the rules and the
 * safety argument; the simulator (testbed/sim/) checks them after every step over thousands of seeds.
 */
import type { Color, Member } from "../config.js";
import { bootQuietMs, hasMajorityInAll, leaderLeaseMs, majorityAckTime, majorityOf } from "./quorum.js";
import { SIM } from "./sim-only.js";
import { bestOfColor, colorFallbackAfterMs, colorMayLead, compareRank, preferringBuild, rankedEligible, whyNoneOfColor, type PeerView } from "./rank.js";
import type {
  ElectionConfig,
  DurableState,
  ElectionEffect,
  ElectionEvent,
  ElectionNode,
  ElectionOutput,
  ElectionSnapshot,
  NodeId,
  NodeStatus,
  PeerMessage,
  Role,
} from "./types.js";

/**
 * Deliberate bugs, only for proving that the simulator's invariants catch them. Compiled out of the
 * agent bundle (see agent/election/sim-only.ts); every use reads `SIM && this.bugs.…`.
 */
export interface PlantedBugs {
  /** Leader lease as long as the followers' promise: ignores clock-rate differences. */
  noDriftMargin?: boolean;
  /** A leader needs one vote fewer than a majority. */
  minorityLeader?: boolean;
  /** During a membership change, only the new member list's majority is required. */
  noJointMajority?: boolean;
  /** A restarted node votes at once, forgetting promises it may have made before the crash. */
  noBootQuiet?: boolean;
  /** Terms and votes live in memory only (a restart forgets them). */
  noDurableState?: boolean;
}

export interface ElectionOptions {
  /** Uniform [0, 1) source for retry jitter; default: a PRNG seeded from the node id (deterministic). */
  random?: () => number;
  bugs?: PlantedBugs;
  /** The durable state the previous process of this node persisted (absent on first boot). */
  durable?: DurableState | null;
}

interface Peer {
  lastHeardAt: number | null;
  status: NodeStatus | null;
}

type Phase =
  | { kind: "idle" }
  | { kind: "prevote"; nextTerm: number; granted: Set<NodeId>; deadline: number }
  | { kind: "vote"; granted: Map<NodeId, number>; deadline: number };

interface Release {
  term: number;
  successor: NodeId | null;
  colorInForce: Color;
  reason: string;
  until: number;
}

/** A small deterministic PRNG (mulberry32) for retry jitter. */
function seededRandom(seedText: string): () => number {
  let h = 2166136261;
  for (let i = 0; i < seedText.length; i++) h = Math.imul(h ^ seedText.charCodeAt(i), 16777619);
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The safety-relevant state, for the simulator's per-step invariant checks (`Election.probe`). */
export interface ElectionProbe {
  role: Role;
  term: number;
  leaseValid: boolean;
  leaseValidUntil: number | null;
  asserting: boolean;
  eligible: boolean;
  color: Color | null;
  colorInForce: Color;
  member: boolean;
}

export class Election implements ElectionNode {
  private cfg: ElectionConfig;
  private readonly random: () => number;
  private readonly bugs: PlantedBugs;
  private now: number;

  private term = 0;
  private votedFor: NodeId | null = null;
  private role: Role;
  private leader: NodeId | null = null;
  private lastLeaderHeardAt: number | null = null;
  private promisedTo: NodeId | null = null;
  private promisedUntil = -Infinity;
  private readonly bootQuietUntil: number;
  private healthy = false;
  private maintenance = false;
  private colorInForce: Color;
  private requestedColor: Color;
  private leaderPendingReason: string | null = null;
  private pendingSwitchReason: string | null = null;
  private readonly peers = new Map<NodeId, Peer>();
  private phase: Phase = { kind: "idle" };
  /** Earliest time this node may stand again (after a failed try, or after handing over). */
  private retryAt = -Infinity;
  private nextBeaconAt: number;
  private hbSeq = 0;
  /** Leader only: latest acknowledged heartbeat/vote send time per member (leader's clock). */
  private acks = new Map<NodeId, number>();
  private leaseValidUntil: number | null = null;
  private asserting = false;
  private release: Release | null = null;
  /**
   * The successor the last leader named when it handed over (and the term it handed over in). That
   * leader's config is the newer one during a rolling reload, so its choice of a node of the newly
   * requested color is honoured here even before this node's own config says so.
   */
  private namedSuccessor: { id: NodeId; term: number } | null = null;
  /**
   * Member id lists of earlier, not yet committed configurations: their majorities are needed too.
   * Learned from our own previous config on reload, or from peers' status (a node that boots with a
   * new list learns the old one from the nodes that still run it, or that are in joint consensus).
   */
  private jointLists: NodeId[][] = [];
  /** Every member record we have seen in a config (for ranking and addressing old members). */
  private readonly known = new Map<NodeId, Member>();
  private committedVersion = 0;
  /** Leader with preempt: since when a better node has been eligible. */
  private betterSince: number | null = null;
  /** Per color, the last local time this node saw an eligible LB of it (itself included); -Infinity: never. */
  private readonly colorSeenAt: Record<Color, number> = { blue: -Infinity, green: -Infinity };
  /** When this process started: the fallback bound also runs from here (a fresh node has seen nobody yet). */
  private readonly bootedAt: number;
  /** The color in force at the last `trackColors`, to notice it change. */
  private lastColorInForce: Color;
  /**
   * Set while the tier serves from another color than the requested one because the requested color,
   * in force before, went dark (a color fallback); cleared when the requested color is in force again.
   */
  private fallback: { from: Color; since: number } | null = null;

  /** The durable state as last handed out in a `persist` effect. */
  private persistedTerm = 0;
  private persistedVote: NodeId | null = null;

  private out: ElectionOutput = { send: [], effects: [], wakeAt: Infinity };
  private lastReportedRole: Role | null = null;
  private lastReportedLeader: NodeId | null = null;

  constructor(config: ElectionConfig, now: number, opts: ElectionOptions = {}) {
    this.cfg = config;
    this.now = now;
    this.random = opts.random ?? seededRandom(config.nodeId);
    this.bugs = SIM ? (opts.bugs ?? {}) : {};
    this.role = this.selfMember()?.role === "witness" ? "witness" : "follower";
    this.colorInForce = config.activeColor;
    this.requestedColor = config.activeColor;
    this.lastColorInForce = config.activeColor;
    this.bootedAt = now;
    // The first configuration (version 1) is committed by definition; a later one is not known to be
    // until a leader says so, so until then this node learns old lists from its peers.
    this.committedVersion = config.membershipVersion <= 1 ? config.membershipVersion : 0;
    for (const m of config.members) this.known.set(m.id, m);
    this.bootQuietUntil = SIM && this.bugs.noBootQuiet ? now : now + bootQuietMs(config.timing.leaseMs, config.timing.maxClockDrift);
    this.nextBeaconAt = now;
    if (opts.durable && !(SIM && this.bugs.noDurableState)) {
      this.term = this.persistedTerm = opts.durable.term;
      this.votedFor = this.persistedVote = opts.durable.votedFor;
    }
  }

  // ---------------------------------------------------------------- public interface

  step(event: ElectionEvent): ElectionOutput {
    this.out = { send: [], effects: [], wakeAt: Infinity };
    // Monotonic: a caller's clock never goes back, but be defensive.
    this.now = Math.max(this.now, event.now);
    // Timers first, so a message is judged with up-to-date leases and promises.
    this.runTimers();
    switch (event.type) {
      case "tick":
        break;
      case "message":
        this.onMessage(event.message);
        break;
      case "health":
        this.healthy = event.healthy;
        if (!event.healthy && this.role === "leader") this.handOver(undefined, "local HAProxy is unhealthy");
        break;
      case "maintenance":
        this.maintenance = event.on;
        if (event.on && this.role === "leader") this.handOver(undefined, "entering maintenance");
        break;
      case "handover":
        if (this.role === "leader") this.handOver(event.to, event.reason, undefined, event.preferBuild);
        break;
      case "config":
        this.onConfig(event.config);
        break;
    }
    this.runTimers();
    this.reportRole("");
    if (this.term !== this.persistedTerm || this.votedFor !== this.persistedVote) {
      this.persistedTerm = this.term;
      this.persistedVote = this.votedFor;
      // First, so that a caller that applies effects in order persists before anything else.
      this.out.effects.unshift({ type: "persist", state: { term: this.term, votedFor: this.votedFor } });
    }
    this.out.wakeAt = this.nextWake();
    return this.out;
  }

  snapshot(now: number): ElectionSnapshot {
    const t = Math.max(now, this.now);
    const leaseValid = this.role === "leader" && this.leaseValidUntil !== null && t < this.leaseValidUntil;
    return {
      nodeId: this.cfg.nodeId,
      role: this.role,
      term: this.term,
      leader: this.leader,
      leaseValidUntil: this.role === "leader" ? this.leaseValidUntil : null,
      promisedUntil: this.promisedUntil,
      asserting: this.asserting && leaseValid,
      healthy: this.healthy,
      maintenance: this.maintenance,
      colorInForce: this.colorInForce,
      requestedColor: this.requestedColor,
      pendingSwitchReason:
        this.requestedColor !== this.colorInForce
          ? (this.pendingSwitchReason ?? this.leaderPendingReason ?? `waiting for a leader to hand over to a healthy ${this.requestedColor} node`)
          : null,
      colorFallback: this.fallback
        ? {
            color: this.colorInForce,
            requested: this.requestedColor,
            since: this.fallback.since,
            reason:
              `no ${this.fallback.from} node was eligible for ${colorFallbackAfterMs(this.timing.leaseMs)} ms` +
              ((this.pendingSwitchReason ?? this.leaderPendingReason) ? `; now: ${this.pendingSwitchReason ?? this.leaderPendingReason}` : ""),
          }
        : null,
      membershipVersion: this.cfg.membershipVersion,
      jointOldMembers: this.jointLists.length ? [...new Set(this.jointLists.flat())] : null,
      members: this.allMembers()
        .filter((m) => m.id !== this.cfg.nodeId)
        .map((m) => {
          const p = this.peers.get(m.id);
          return { id: m.id, lastHeardAt: p?.lastHeardAt ?? null, status: p?.status ?? null, reachable: this.reachable(m.id, t) };
        }),
    };
  }

  /**
   * A cheap read of the safety-relevant state, for the simulator's per-step invariant checks. Not in
   * the agent bundle (undefined there): it is defined in the static block below only when `SIM`.
   */
  declare readonly probe: (now: number) => ElectionProbe;

  static {
    if (SIM) {
      Object.defineProperty(Election.prototype, "probe", {
        value: function probe(this: Election, now: number): ElectionProbe {
          const t = Math.max(now, this.now);
          const leaseValid = this.role === "leader" && this.leaseValidUntil !== null && t < this.leaseValidUntil;
          return {
            role: this.role,
            term: this.term,
            leaseValid,
            leaseValidUntil: this.leaseValidUntil,
            asserting: this.asserting,
            eligible: this.eligible(),
            color: this.selfMember()?.color ?? null,
            colorInForce: this.colorInForce,
            member: this.isMember(),
          };
        },
      });
    }
  }

  // ---------------------------------------------------------------- views and helpers

  private get timing() {
    return this.cfg.timing;
  }

  private selfMember(): Member | undefined {
    return this.cfg.members.find((m) => m.id === this.cfg.nodeId);
  }

  /** Every member of the current list and of any uncommitted earlier list. */
  private allMembers(): Member[] {
    const seen = new Map<NodeId, Member>();
    for (const m of this.cfg.members) seen.set(m.id, m);
    for (const list of this.jointLists) {
      for (const id of list) if (!seen.has(id)) seen.set(id, this.known.get(id) ?? { id, address: "", port: 0, role: "lb", priority: 0 });
    }
    return [...seen.values()];
  }

  private memberIds(): NodeId[] {
    return this.cfg.members.map((m) => m.id);
  }

  /** The lists whose majorities are needed: the current one, plus earlier uncommitted ones. */
  private quorumLists(): NodeId[][] {
    if (SIM && this.bugs.noJointMajority) return [this.memberIds()];
    return [this.memberIds(), ...this.jointLists];
  }

  /** Add an earlier member list to the joint set (unless it equals the current list or is known). */
  private addJointList(ids: NodeId[]): void {
    const key = (l: NodeId[]) => [...l].sort().join(",");
    const k = key(ids);
    if (ids.length === 0 || k === key(this.memberIds()) || this.jointLists.some((l) => key(l) === k)) return;
    this.jointLists = [...this.jointLists, [...ids]];
  }

  private reachable(id: NodeId, now = this.now): boolean {
    const p = this.peers.get(id);
    return p?.lastHeardAt != null && now - p.lastHeardAt <= this.timing.leaseMs;
  }

  private views(): PeerView[] {
    return this.allMembers()
      .filter((m) => m.id !== this.cfg.nodeId)
      .map((m) => ({ id: m.id, member: m, status: this.peers.get(m.id)?.status ?? null, reachable: this.reachable(m.id) }));
  }

  private isMember(): boolean {
    return this.selfMember() !== undefined;
  }

  /** Healthy, not in maintenance, an LB and a member: could lead if its color is in force. */
  private eligible(): boolean {
    const self = this.selfMember();
    return self !== undefined && self.role === "lb" && this.healthy && !this.maintenance;
  }

  private status(): NodeStatus {
    const self = this.selfMember();
    return {
      role: self?.role ?? "lb",
      color: self?.color ?? null,
      healthy: self?.role === "witness" ? true : this.healthy,
      maintenance: this.maintenance,
      eligible: this.eligible(),
      membershipVersion: this.cfg.membershipVersion,
      memberIds: this.memberIds(),
      jointOldIds: this.jointLists,
      colorInForce: this.colorInForce,
      requestedColor: this.requestedColor,
    };
  }

  /**
   * From when this node may lead, colors considered (-Infinity: now; Infinity: not foreseeably). The
   * color in force may; the requested color may only when no eligible node of the color in force is
   * reachable (the switch then takes force); another color when the fallback opens.
   */
  private colorOpensAt(): number {
    const color = this.selfMember()?.color;
    if (color === this.colorInForce) return -Infinity;
    if (color === this.requestedColor) return this.blockerOfColorInForce(this.views()) === null ? -Infinity : Infinity;
    if (!this.fallbackPossible()) return Infinity;
    return Math.max(this.colorSeenAt[this.colorInForce], this.bootedAt) + colorFallbackAfterMs(this.timing.leaseMs);
  }

  /** A fallback could open: it is enabled and the color in force is the requested one. */
  private fallbackPossible(): boolean {
    return this.timing.colorFallback && this.colorInForce === this.requestedColor;
  }

  /**
   * The color fallback (`failover.colorFallback`): when the requested color is in force but no node of
   * it has been eligible for `colorFallbackAfterMs` (by this node's view, and at least that long since
   * this process started), a node of another color may lead. Its win puts its color in force, so the
   * requested color then returns exactly as a pending switch completes: by a planned handover from the
   * leader as soon as a node of the requested color is eligible. Voters apply the same test to their
   * own view, so a fallback needs a majority that has not seen the color in force for the bound.
   */
  private fallbackOpen(asVoter = false): boolean {
    if (!this.fallbackPossible()) return false;
    const seen = Math.max(this.colorSeenAt[this.colorInForce], this.bootedAt);
    // A voter opens a heartbeat interval earlier than a candidate: their views of the last sign of
    // the color in force differ by a delivery, and a refused pre-vote would cost a retry backoff.
    const slackMs = asVoter ? this.timing.heartbeatIntervalMs : 0;
    return this.now - seen >= colorFallbackAfterMs(this.timing.leaseMs) - slackMs;
  }

  /** Record which colors have an eligible node in view, and notice the color in force change (fallback in and out). */
  private trackColors(): void {
    const now = this.now;
    const self = this.selfMember();
    if (self?.color && this.eligible()) this.colorSeenAt[self.color] = now;
    for (const v of this.views()) {
      const heardAt = this.peers.get(v.id)?.lastHeardAt;
      if (v.reachable && heardAt != null && v.status?.eligible === true && v.member.role === "lb" && v.member.color) {
        this.colorSeenAt[v.member.color] = Math.max(this.colorSeenAt[v.member.color], heardAt);
      }
    }
    if (this.colorInForce !== this.lastColorInForce) {
      const from = this.lastColorInForce;
      this.lastColorInForce = this.colorInForce;
      // A fallback, not a planned switch: the requested color left force after being dark for at
      // least a lease (a planned switch leaves a node with an older config seeing the old color alive).
      if (from === this.requestedColor && now - this.colorSeenAt[from] >= this.timing.leaseMs) this.fallback = { from, since: now };
    }
    if (this.colorInForce === this.requestedColor) this.fallback = null;
  }

  /**
   * A reachable, eligible node of the color in force that itself believes its color may lead: while
   * one exists, the old color stays in force. Nodes that already learned of the switch (their own
   * status says another color is in force) do not block it, so a lost release cannot deadlock it.
   */
  private blockerOfColorInForce(views: PeerView[]): PeerView | null {
    return bestOfColor(
      views.filter((v) => v.status?.colorInForce === v.member.color),
      this.colorInForce,
      this.colorInForce,
    );
  }

  private send(to: NodeId, message: PeerMessage): void {
    if (to !== this.cfg.nodeId) this.out.send.push({ to, message });
  }

  private broadcast(message: PeerMessage): void {
    for (const m of this.allMembers()) this.send(m.id, message);
  }

  private effect(e: ElectionEffect): void {
    this.out.effects.push(e);
  }

  private reportRole(reason: string): void {
    if (this.role !== this.lastReportedRole || this.leader !== this.lastReportedLeader) {
      this.lastReportedRole = this.role;
      this.lastReportedLeader = this.leader;
      this.effect({ type: "role-changed", role: this.role, term: this.term, leader: this.leader, reason: reason || this.roleReason() });
    }
  }

  private roleReason(): string {
    if (this.role === "leader") return "won the election";
    if (this.leader) return `following ${this.leader}`;
    return "no leader known";
  }

  // ---------------------------------------------------------------- timers

  private runTimers(): void {
    const now = this.now;
    this.trackColors();
    if (this.role === "leader") {
      this.renewLease();
      if (this.role === "leader") this.leaderDuties();
    }
    if (this.phase.kind !== "idle" && now >= this.phase.deadline) {
      // Nobody answered in time (lost messages, a partition, or a split vote): try again later.
      const wasVoting = this.phase.kind === "vote";
      this.phase = { kind: "idle" };
      if (wasVoting) this.role = "follower";
      this.retryAt = now + this.timing.electionTimeoutMs + this.random() * this.timing.candidateBackoffMs * Math.max(1, this.cfg.members.length);
    }
    if (this.release && now >= this.release.until) this.release = null;
    if (this.role === "follower" && this.phase.kind === "idle" && now >= this.standAt()) this.startPreVote();
    if (now >= this.nextBeaconAt) this.beacon();
    this.updatePendingSwitch();
    this.trackColors();
  }

  /** When this follower would stand for election, or Infinity if it may not. */
  private standAt(): number {
    if (this.role !== "follower" || !this.eligible()) return Infinity;
    // A fallback candidate wakes when the fallback opens, and the rank backoff counts from then, so
    // that the fallback color's nodes do not all stand at once.
    const opensAt = this.colorOpensAt();
    if (opensAt === Infinity) return Infinity;
    const heardLeader = this.lastLeaderHeardAt === null ? -Infinity : this.lastLeaderHeardAt + this.timing.electionTimeoutMs;
    const base = Math.max(this.promisedUntil, heardLeader, this.bootQuietUntil, this.retryAt, opensAt);
    return base + this.rank() * this.timing.candidateBackoffMs;
  }

  /** 0 for the best eligible node this node can hear (itself included), 1 for the next, … */
  private rank(): number {
    const self = this.selfMember();
    if (!self) return 0;
    const others = rankedEligible(this.views(), this.colorInForce, this.requestedColor, this.fallbackPossible()).filter((v) => v.id !== this.leader);
    return others.filter((v) => compareRank(v.member, self, this.colorInForce) < 0).length;
  }

  private nextWake(): number {
    let t = this.nextBeaconAt;
    if (this.role === "leader" && this.leaseValidUntil !== null) t = Math.min(t, this.leaseValidUntil);
    if (this.phase.kind !== "idle") t = Math.min(t, this.phase.deadline);
    if (this.role === "follower" && this.phase.kind === "idle") t = Math.min(t, this.standAt());
    return Math.max(t, this.now);
  }

  /** Every node tells every member its status each heartbeat interval; a leader's carries its lease renewal. */
  private beacon(): void {
    const now = this.now;
    this.nextBeaconAt = now + this.timing.heartbeatIntervalMs;
    const leading = this.role === "leader";
    if (leading) this.hbSeq++;
    this.broadcast({
      kind: "heartbeat",
      from: this.cfg.nodeId,
      term: this.term,
      seq: this.hbSeq,
      sentAt: now,
      status: this.status(),
      leader: leading
        ? { colorInForce: this.colorInForce, committedMembershipVersion: this.committedVersion, pendingSwitchReason: this.pendingSwitchReason }
        : null,
    });
    // A handover's release is repeated with the heartbeats until it expires: one lost packet must not
    // turn a planned handover into a failover.
    if (this.release) {
      const r = this.release;
      this.broadcast({ kind: "release", from: this.cfg.nodeId, term: r.term, successor: r.successor, colorInForce: r.colorInForce, reason: r.reason });
    }
  }

  // ---------------------------------------------------------------- leader

  private leaseFrom(ackTime: (id: NodeId) => number): number {
    const lists = this.quorumLists();
    let start = Infinity;
    for (const list of lists) {
      const needed = SIM && this.bugs.minorityLeader ? Math.max(1, majorityOf(list.length) - 1) : majorityOf(list.length);
      start = Math.min(start, majorityAckTime(list, ackTime, needed));
    }
    const length = SIM && this.bugs.noDriftMargin ? this.timing.leaseMs : leaderLeaseMs(this.timing.leaseMs, this.timing.maxClockDrift);
    return start + length;
  }

  private renewLease(): void {
    const now = this.now;
    this.leaseValidUntil = this.leaseFrom((id) => (id === this.cfg.nodeId ? now : (this.acks.get(id) ?? -Infinity)));
    if (now >= this.leaseValidUntil) this.stepDown("lease expired: no acknowledgement from a majority in time");
  }

  private stepDown(reason: string, newTerm?: number): void {
    const wasLeader = this.role === "leader";
    if (wasLeader && this.asserting) this.effect({ type: "stop-asserting", term: this.term, reason });
    this.asserting = false;
    if (this.role !== "witness") this.role = "follower";
    this.phase = { kind: "idle" };
    this.leaseValidUntil = null;
    this.acks.clear();
    this.betterSince = null;
    if (newTerm !== undefined && newTerm > this.term) {
      this.term = newTerm;
      this.votedFor = null;
      this.leader = null;
    }
    if (wasLeader) {
      this.leader = null;
      this.reportRole(reason);
    }
  }

  private becomeLeader(votes: Map<NodeId, number>): void {
    this.role = "leader";
    this.leader = this.cfg.nodeId;
    this.phase = { kind: "idle" };
    this.acks = new Map(votes);
    this.betterSince = null;
    this.release = null;
    // Winning the vote is the switch taking force when this node is of the requested color.
    const color = this.selfMember()?.color;
    if (color && color !== this.colorInForce) this.colorInForce = color;
    this.renewLease();
    if (this.role !== "leader") return;
    this.asserting = true;
    this.reportRole("won the election");
    this.effect({ type: "start-asserting", term: this.term });
    this.nextBeaconAt = this.now; // tell everyone at once
  }

  /** Duties of a leader with a valid lease: handovers for health, color switch, preemption; commits. */
  private leaderDuties(): void {
    if (!this.eligible()) {
      this.handOver(undefined, !this.isMember() ? "no longer a member" : this.maintenance ? "entering maintenance" : "local HAProxy is unhealthy");
      return;
    }
    this.commitMembership();
    const views = this.views();
    if (this.requestedColor !== this.colorInForce) {
      // Hand over only to a node whose own config already requests the new color: during a rolling
      // reload, one that does not yet would lead as the old color's exception and hand back, and an
      // old-color node would win in between (two extra moves of the IP).
      const requested = this.requestedColor;
      const target = bestOfColor(
        views.filter((v) => v.status?.requestedColor === requested),
        requested,
        this.colorInForce,
      );
      if (target) {
        this.handOver(target.id, `switching to ${requested}`, requested);
        return;
      }
      const notYet = bestOfColor(views, requested, this.colorInForce);
      this.pendingSwitchReason = notYet
        ? `waiting for ${notYet.id} (${requested}) to get the configuration that requests ${requested}`
        : whyNoneOfColor(views, requested);
    } else {
      this.pendingSwitchReason = null;
    }
    if (this.timing.preempt) {
      const self = this.selfMember()!;
      const best = bestOfColor(views, this.colorInForce, this.colorInForce);
      if (best && compareRank(best.member, self, this.colorInForce) < 0) {
        this.betterSince ??= this.now;
        // Wait a lease so that a flapping node does not make the IP flap with it.
        if (this.now - this.betterSince >= this.timing.leaseMs) this.handOver(best.id, `preempted by better node ${best.id}`);
      } else {
        this.betterSince = null;
      }
    }
  }

  /** A configuration is committed once a majority of every list runs it (or a newer one). */
  private commitMembership(): void {
    if (this.jointLists.length === 0 && this.committedVersion >= this.cfg.membershipVersion) return;
    const v = this.cfg.membershipVersion;
    const upToDate = new Set<NodeId>([this.cfg.nodeId]);
    for (const [id, p] of this.peers) if (this.reachable(id) && (p.status?.membershipVersion ?? -1) >= v) upToDate.add(id);
    if (hasMajorityInAll([this.memberIds(), ...this.jointLists], upToDate)) {
      this.jointLists = [];
      this.committedVersion = v;
    }
  }

  /**
   * Planned handover: stop leading now, and tell everyone (repeatedly, for a lease) that the promise
   * to this leader is released and who should stand. The old droplet keeps the IP and serves until the
   * successor assigns it to itself, so clients see no gap.
   */
  private handOver(to: NodeId | undefined, reason: string, newColor?: Color, preferBuild?: string): void {
    const views = this.views();
    const colorAfter = newColor ?? this.colorInForce;
    let successor: PeerView | null = null;
    if (to) {
      const v = views.find((x) => x.id === to);
      if (v && v.reachable && v.status?.eligible && v.member.role === "lb" && colorMayLead(v.member.color, colorAfter, this.requestedColor)) successor = v;
    }
    successor ??= newColor
      ? bestOfColor(views, newColor, colorAfter)
      : preferringBuild(rankedEligible(views, this.colorInForce, this.requestedColor), preferBuild);
    const term = this.term;
    this.stepDown(`handing over: ${reason}${successor ? ` (to ${successor.id})` : " (no eligible successor)"}`);
    // The color in force changes only when a node of the new color wins (its heartbeats say so): if the
    // chosen successor fails to stand, the old color stays in force and another old-color node leads.
    this.promisedTo = null;
    this.promisedUntil = this.now;
    // Give the successor the first chance; stand again only later (if still eligible).
    this.retryAt = this.now + this.timing.leaseMs;
    this.release = { term, successor: successor?.id ?? null, colorInForce: this.colorInForce, reason, until: this.now + this.timing.leaseMs };
    const r = this.release;
    this.broadcast({ kind: "release", from: this.cfg.nodeId, term: r.term, successor: r.successor, colorInForce: r.colorInForce, reason });
  }

  // ---------------------------------------------------------------- candidates

  private startPreVote(): void {
    const nextTerm = this.term + 1;
    this.phase = { kind: "prevote", nextTerm, granted: new Set([this.cfg.nodeId]), deadline: this.now + this.timing.electionTimeoutMs };
    this.broadcast({ kind: "prevote-request", from: this.cfg.nodeId, nextTerm, status: this.status() });
    this.checkPreVote();
  }

  private checkPreVote(): void {
    if (this.phase.kind === "prevote" && this.votesSuffice(this.phase.granted)) this.startVote(false);
  }

  /** Whether `granted` is enough to proceed: a majority of every list in use (joint consensus). */
  private votesSuffice(granted: ReadonlySet<NodeId>): boolean {
    if (!(SIM && this.bugs.minorityLeader)) return hasMajorityInAll(this.quorumLists(), granted);
    // The planted bug: one vote fewer than a majority suffices.
    return this.quorumLists().every((list) => list.filter((id) => granted.has(id)).length >= Math.max(1, majorityOf(list.length) - 1));
  }

  private startVote(transfer: boolean): void {
    this.term++;
    this.votedFor = this.cfg.nodeId;
    this.role = "candidate";
    this.leader = null;
    this.phase = { kind: "vote", granted: new Map([[this.cfg.nodeId, this.now]]), deadline: this.now + this.timing.electionTimeoutMs };
    this.broadcast({ kind: "vote-request", from: this.cfg.nodeId, term: this.term, sentAt: this.now, transfer, status: this.status() });
    this.reportRole(transfer ? "standing as the chosen successor" : "standing for election");
    this.checkVotes();
  }

  private checkVotes(): void {
    if (this.phase.kind !== "vote") return;
    const granted = this.phase.granted;
    if (this.votesSuffice(new Set(granted.keys()))) this.becomeLeader(granted);
  }

  /** Why this node would refuse to back `from` (null: it would back it). Used for pre-votes and votes. */
  private refusal(from: NodeId, status: NodeStatus, transfer: boolean): string | null {
    const now = this.now;
    const candidate = this.allMembers().find((m) => m.id === from);
    if (!candidate) return "not a member of my configuration";
    if (now < this.bootQuietUntil) return "recently restarted: waiting out promises made before the restart";
    if (this.role === "leader") return "I am the leader and my lease is valid";
    if (this.promisedUntil > now && this.promisedTo !== from) return `promised to ${this.promisedTo} for another ${Math.ceil(this.promisedUntil - now)} ms`;
    if (!status.eligible || candidate.role !== "lb") return "candidate is not eligible";
    if (status.membershipVersion < this.cfg.membershipVersion)
      return `candidate runs membership version ${status.membershipVersion}, I run ${this.cfg.membershipVersion}`;
    // The successor the last leader named, standing right after that release (no newer term since):
    // judged by the color its own (newer) config requests.
    const named = transfer && this.namedSuccessor !== null && this.namedSuccessor.id === from && this.namedSuccessor.term === this.term;
    const requested = named ? status.requestedColor : this.requestedColor;
    if (!colorMayLead(candidate.color, this.colorInForce, requested, this.fallbackOpen(true)))
      return `candidate's color ${candidate.color} is not in force (${this.colorInForce})`;
    if (!transfer && candidate.color !== this.colorInForce) {
      const better = this.blockerOfColorInForce(this.views().filter((v) => v.id !== from));
      if (better || (this.eligible() && this.selfMember()?.color === this.colorInForce)) {
        return `an eligible ${this.colorInForce} node (${better?.id ?? this.cfg.nodeId}) is reachable; ${this.colorInForce} stays in force`;
      }
    }
    return null;
  }

  // ---------------------------------------------------------------- messages

  private notePeer(from: NodeId, status: NodeStatus | undefined): void {
    const p = this.peers.get(from) ?? { lastHeardAt: null, status: null };
    p.lastHeardAt = this.now;
    if (status) {
      p.status = status;
      // Joint consensus for nodes that booted with a new list: learn the lists still in use.
      if (status.membershipVersion < this.cfg.membershipVersion && this.committedVersion < this.cfg.membershipVersion) this.addJointList(status.memberIds);
      if (status.membershipVersion === this.cfg.membershipVersion && this.committedVersion < this.cfg.membershipVersion) {
        for (const l of status.jointOldIds) this.addJointList(l);
      }
    }
    this.peers.set(from, p);
  }

  private onMessage(m: PeerMessage): void {
    if (m.from === this.cfg.nodeId) return;
    // Strangers (a node removed from the list, still running until its droplet goes) change nothing,
    // except that this node learns how far terms have gone, so it never reuses one they led.
    if (!this.allMembers().some((x) => x.id === m.from)) {
      if (m.kind === "heartbeat") this.learnTerm(m.term);
      return;
    }
    this.notePeer(m.from, "status" in m ? m.status : undefined);
    switch (m.kind) {
      case "heartbeat":
        return this.onHeartbeat(m);
      case "heartbeat-ack":
        return this.onAck(m.from, m.term, m.echoSentAt);
      case "prevote-request": {
        const reason = m.nextTerm <= this.term ? `term ${m.nextTerm} is not newer than mine (${this.term})` : this.refusal(m.from, m.status, false);
        this.send(m.from, {
          kind: "prevote-response",
          from: this.cfg.nodeId,
          nextTerm: m.nextTerm,
          granted: reason === null,
          ...(reason ? { reason } : {}),
          status: this.status(),
        });
        return;
      }
      case "prevote-response":
        if (this.phase.kind === "prevote" && m.nextTerm === this.phase.nextTerm && m.granted) {
          this.phase.granted.add(m.from);
          this.checkPreVote();
        }
        return;
      case "vote-request":
        return this.onVoteRequest(m);
      case "vote-response":
        if (m.term > this.term) {
          this.stepDown(`saw newer term ${m.term}`, m.term);
          return;
        }
        if (this.phase.kind === "vote" && m.term === this.term && m.granted) {
          this.phase.granted.set(m.from, m.echoSentAt);
          this.checkVotes();
        }
        return;
      case "release":
        return this.onRelease(m);
    }
  }

  private onHeartbeat(m: Extract<PeerMessage, { kind: "heartbeat" }>): void {
    if (!m.leader) {
      // A status beacon from a non-leader. Learning its newer term (from a failed candidacy) lets this
      // node's next pre-vote ask for a term the others can grant; a leader ignores it (PreVote).
      this.learnTerm(m.term);
      return;
    }
    if (m.term < this.term) {
      // A stale leader: tell it the newer term so it steps down without waiting for its lease.
      this.send(m.from, { kind: "heartbeat-ack", from: this.cfg.nodeId, term: this.term, seq: m.seq, echoSentAt: m.sentAt, status: this.status() });
      return;
    }
    if (m.term > this.term) this.stepDown(`leader ${m.from} has newer term ${m.term}`, m.term);
    if (this.role === "leader") return; // same term, another leader: impossible (one vote per term); ignore
    if (this.leader !== null && this.leader !== m.from) return; // ditto
    if (this.role === "candidate") {
      this.role = "follower";
      this.phase = { kind: "idle" };
    }
    this.phase = { kind: "idle" };
    this.leader = m.from;
    this.lastLeaderHeardAt = this.now;
    this.promisedTo = m.from;
    this.promisedUntil = Math.max(this.promisedUntil, this.now + this.timing.leaseMs);
    this.colorInForce = m.leader.colorInForce;
    this.leaderPendingReason = m.leader.pendingSwitchReason;
    if (m.leader.committedMembershipVersion >= this.cfg.membershipVersion) {
      this.jointLists = [];
      this.committedVersion = Math.max(this.committedVersion, this.cfg.membershipVersion);
    }
    this.send(m.from, { kind: "heartbeat-ack", from: this.cfg.nodeId, term: m.term, seq: m.seq, echoSentAt: m.sentAt, status: this.status() });
  }

  /** Adopt a newer term heard from a non-leader, when that cannot disturb a running leader. */
  private learnTerm(term: number): void {
    if (term > this.term && this.role !== "leader" && this.phase.kind === "idle" && this.promisedUntil <= this.now) {
      this.term = term;
      this.votedFor = null;
      this.leader = null;
    }
  }

  private onAck(from: NodeId, term: number, echoSentAt: number): void {
    if (term > this.term) {
      this.stepDown(`${from} has newer term ${term}`, term);
      return;
    }
    if (this.role !== "leader" || term !== this.term) return;
    this.acks.set(from, Math.max(this.acks.get(from) ?? -Infinity, echoSentAt));
  }

  private onVoteRequest(m: Extract<PeerMessage, { kind: "vote-request" }>): void {
    const respond = (granted: boolean, reason?: string) =>
      this.send(m.from, {
        kind: "vote-response",
        from: this.cfg.nodeId,
        term: Math.max(this.term, m.term),
        echoSentAt: m.sentAt,
        granted,
        ...(reason ? { reason } : {}),
        status: this.status(),
      });
    if (m.term < this.term) return respond(false, `term ${m.term} is older than mine (${this.term})`);
    const reason = this.refusal(m.from, m.status, m.transfer);
    if (reason) {
      // Refused while a leader's promise runs: do not adopt the newer term either, so a node that
      // cannot hear the leader does not disrupt it.
      return this.send(m.from, {
        kind: "vote-response",
        from: this.cfg.nodeId,
        term: this.term,
        echoSentAt: m.sentAt,
        granted: false,
        reason,
        status: this.status(),
      });
    }
    if (m.term > this.term) this.stepDown(`${m.from} stands in newer term ${m.term}`, m.term);
    if (this.votedFor !== null && this.votedFor !== m.from) return respond(false, `already voted for ${this.votedFor} in term ${this.term}`);
    this.votedFor = m.from;
    this.leader = null;
    this.promisedTo = m.from;
    this.promisedUntil = Math.max(this.promisedUntil, this.now + this.timing.leaseMs);
    respond(true);
  }

  private onRelease(m: Extract<PeerMessage, { kind: "release" }>): void {
    // Only a leader sends a release, and only for its own term: one of our term or newer is current
    // even if we never heard that leader's heartbeats (it may have handed over at once).
    if (m.term < this.term) return;
    if (this.role === "leader" || this.phase.kind === "vote") return;
    if (m.term > this.term) {
      this.term = m.term;
      this.votedFor = null;
    }
    this.colorInForce = m.colorInForce;
    this.namedSuccessor = m.successor ? { id: m.successor, term: m.term } : null;
    if (this.promisedTo === m.from) {
      this.promisedUntil = this.now;
      this.promisedTo = null;
    }
    if (this.leader === m.from || this.leader === null) {
      this.leader = null;
      this.lastLeaderHeardAt = null;
    } else {
      return; // a newer leader already runs this term's successor election; nothing to do
    }
    if (m.successor === this.cfg.nodeId && this.eligible() && this.role === "follower" && this.now >= this.bootQuietUntil) {
      this.startVote(true);
    } else {
      // Let the chosen successor go first.
      this.retryAt = Math.max(this.retryAt, this.now + (m.successor ? this.timing.electionTimeoutMs : 0));
    }
  }

  // ---------------------------------------------------------------- config

  private onConfig(next: ElectionConfig): void {
    const prev = this.cfg;
    if (next.nodeId !== prev.nodeId) throw new Error(`nodeId cannot change on reload (${prev.nodeId} → ${next.nodeId})`);
    const ids = (ms: Member[]) =>
      ms
        .map((m) => `${m.id}:${m.role}:${m.color ?? ""}`)
        .sort()
        .join(",");
    this.cfg = next;
    for (const m of next.members) this.known.set(m.id, m);
    if (next.membershipVersion > prev.membershipVersion && ids(next.members) !== ids(prev.members)) {
      // Joint consensus: until the new list is committed, every earlier list's majority is needed too.
      this.addJointList(prev.members.map((m) => m.id));
    }
    if (next.membershipVersion > prev.membershipVersion) this.committedVersion = Math.min(this.committedVersion, prev.membershipVersion);
    this.requestedColor = next.activeColor;
    if (this.role === "leader") {
      this.renewLease();
      if (this.role === "leader" && !this.isMember()) this.handOver(undefined, "no longer a member");
    }
  }

  private leaderHeardRecently(): boolean {
    return this.leader !== null && this.lastLeaderHeardAt !== null && this.now - this.lastLeaderHeardAt <= this.timing.leaseMs;
  }

  private updatePendingSwitch(): void {
    if (this.requestedColor !== this.colorInForce && this.role !== "leader" && !this.leaderHeardRecently()) {
      // Without a leader to tell us, learn a switch that already took force from a peer that asks for
      // the same color and says it is in force (only a leader's decision makes that so). Otherwise a
      // node that missed the leader's release would keep the old color alive and deadlock the switch.
      const took = this.views().some((v) => v.reachable && v.status?.requestedColor === this.requestedColor && v.status.colorInForce === this.requestedColor);
      if (took) this.colorInForce = this.requestedColor;
    }
    if (this.requestedColor === this.colorInForce) {
      this.pendingSwitchReason = null;
      return;
    }
    if (this.role !== "leader") this.pendingSwitchReason = this.leader ? this.leaderPendingReason : whyNoneOfColor(this.views(), this.requestedColor);
  }
}

export function createElectionNode(config: ElectionConfig, now: number, opts?: ElectionOptions): ElectionNode {
  return new Election(config, now, opts);
}
