/**
 * The election state machine: a lease-based majority election (PreVote, terms, leases renewed by
 * majority acknowledgements, planned handover, joint consensus for membership changes).
 *
 * Pure and deterministic: every input is an event with the node's monotonic `now`; every output is
 * messages, effects and the next wake-up time. See agent/election/README.md for the rules and the
 * safety argument; the simulator (testbed/sim/) checks them after every step over thousands of seeds.
 *
 * In the shape of etcd's raft: `Election` holds the state every role shares and does what every role
 * does alike (timers shared by all, the term of each message, answering pre-votes and votes); what
 * differs by role is that role's step table (follower.ts, candidate.ts, leader.ts, witness.ts), and
 * only the transitions below (`becomeFollower`, `becomePreCandidate`, `becomeCandidate`,
 * `becomeLeader`) swap it. Pre- and postconditions are assertions that throw (assert.ts).
 *
 * The members without `private` are read and written by the role steps only; everything else uses the
 * `ElectionNode` interface, `probe` (the simulator) and the constructor.
 */
import type { Color, Member } from "../config.js";
import { assert } from "./assert.js";
import { candidateStep, checkPreVotes, checkVotes, preCandidateStep, votesSuffice } from "./candidate.js";
import { followerStep } from "./follower.js";
import { leaderStep, renewLease } from "./leader.js";
import { bootQuietMs } from "./quorum.js";
import { SIM } from "./sim-only.js";
import { bestOfColor, claimsEligible, colorFallbackAfterMs, colorMayLead, isEligible, seenEligible, whyNoneOfColor, type PeerView } from "./rank.js";
import type { RoleKind, RoleState, RoleStep } from "./role.js";
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
import { witnessStep } from "./witness.js";

/**
 * Deliberate bugs, only for proving that the simulator's invariants catch them. Compiled out of the
 * agent bundle (see agent/election/sim-only.ts); every use reads `SIM && ….bugs.…`.
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
  /** Any echoed send time counts, even one from the future (`genuineEcho` accepts everything). */
  trustEchoes?: boolean;
}

export interface ElectionOptions {
  /** Uniform [0, 1) source for retry jitter; default: a PRNG seeded from the node id (deterministic). */
  random?: () => number;
  bugs?: PlantedBugs;
  /** The durable state the previous process of this node persisted (absent on first boot). */
  durable?: DurableState | null;
}

interface Peer {
  /** Local time this node last heard from the peer; null: never. */
  lastHeardAtMs: number | null;
  status: NodeStatus | null;
}

/** A handover this node made as leader; repeated with its heartbeats until `untilMs` (local time). */
interface Release {
  term: number;
  successor: NodeId | null;
  colorInForce: Color;
  reason: string;
  untilMs: number;
}

/** Each role's step table, by the kind of the state it runs on. */
const STEPS: Record<RoleKind, RoleStep> = {
  follower: followerStep,
  precandidate: preCandidateStep,
  candidate: candidateStep,
  leader: leaderStep,
  witness: witnessStep,
};

/**
 * The order in which the roles' timers run in one pass: a leader whose lease ended, or that handed
 * over, is a follower by the time the follower's timer runs (and may stand at once); a candidate or
 * pre-candidate whose deadline passed is a follower again.
 */
const TICK_ORDER: readonly RoleStep[] = [leaderStep, candidateStep, preCandidateStep, followerStep];

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
  cfg: ElectionConfig;
  readonly random: () => number;
  readonly bugs: PlantedBugs;
  /** The latest local time an event carried (monotonic). */
  nowMs: number;
  /** A process that boots as a witness stays one (its role never changes). */
  private readonly witness: boolean;

  /** The role and its own data, and its step table: changed together, by the `become…` transitions only. */
  state: RoleState;
  roleStep: RoleStep;

  term = 0;
  votedFor: NodeId | null = null;
  leader: NodeId | null = null;
  lastLeaderHeardAtMs: number | null = null;
  promisedTo: NodeId | null = null;
  /** Local time until which this node promised `promisedTo` not to back another leader. */
  promisedUntilMs = -Infinity;
  /** Local time until which a restarted node takes no part in elections (README "Boot quiet period"). */
  readonly bootQuietUntilMs: number;
  healthy = false;
  maintenance = false;
  colorInForce: Color;
  requestedColor: Color;
  leaderPendingReason: string | null = null;
  pendingSwitchReason: string | null = null;
  readonly peers = new Map<NodeId, Peer>();
  /** Earliest local time this node may stand again (after a failed try, or after handing over). */
  retryAtMs = -Infinity;
  nextBeaconAtMs: number;
  private hbSeq = 0;
  /** True exactly while leading with a valid lease: the shell keeps the Reserved IP on this droplet. */
  asserting = false;
  release: Release | null = null;
  /**
   * The successor the last leader named when it handed over (and the term it handed over in). That
   * leader's config is the newer one during a rolling reload, so its choice of a node of the newly
   * requested color is honoured here even before this node's own config says so.
   */
  namedSuccessor: { id: NodeId; term: number } | null = null;
  /**
   * Member id lists of earlier, not yet committed configurations: their majorities are needed too.
   * Learned from our own previous config on reload, or from peers' status (a node that boots with a
   * new list learns the old one from the nodes that still run it, or that are in joint consensus).
   */
  jointLists: NodeId[][] = [];
  /** Every member record we have seen in a config (for ranking and addressing old members). */
  private readonly known = new Map<NodeId, Member>();
  committedVersion = 0;
  /** Per color, the last local time this node saw an eligible LB of it (itself included); -Infinity: never. */
  private readonly colorSeenAtMs: Record<Color, number> = { blue: -Infinity, green: -Infinity };
  /** Local time this process started: the fallback bound also runs from here (a fresh node has seen nobody yet). */
  private readonly bootedAtMs: number;
  /** The color in force at the last `trackColors`, to notice it change. */
  private lastColorInForce: Color;
  /**
   * Set while the tier serves from another color than the requested one because the requested color,
   * in force before, went dark (a color fallback); cleared when the requested color is in force again.
   */
  private fallback: { from: Color; sinceMs: number } | null = null;

  /** The durable state as last handed out in a `persist` effect. */
  private persistedTerm = 0;
  private persistedVote: NodeId | null = null;

  private out: ElectionOutput = { send: [], effects: [], wakeAt: Infinity };
  private lastReportedRole: Role | null = null;
  private lastReportedLeader: NodeId | null = null;

  constructor(config: ElectionConfig, now: number, opts: ElectionOptions = {}) {
    this.cfg = config;
    this.nowMs = now;
    this.random = opts.random ?? seededRandom(config.nodeId);
    this.bugs = SIM ? (opts.bugs ?? {}) : {};
    this.witness = this.selfMember()?.role === "witness";
    this.state = this.witness ? { kind: "witness" } : { kind: "follower" };
    this.roleStep = STEPS[this.state.kind];
    this.colorInForce = config.activeColor;
    this.requestedColor = config.activeColor;
    this.lastColorInForce = config.activeColor;
    this.bootedAtMs = now;
    // The first configuration (version 1) is committed by definition; a later one is not known to be
    // until a leader says so, so until then this node learns old lists from its peers.
    this.committedVersion = config.membershipVersion <= 1 ? config.membershipVersion : 0;
    for (const m of config.members) this.known.set(m.id, m);
    this.bootQuietUntilMs = SIM && this.bugs.noBootQuiet ? now : now + bootQuietMs(config.timing.leaseMs, config.timing.maxClockDrift);
    this.nextBeaconAtMs = now;
    if (opts.durable && !(SIM && this.bugs.noDurableState)) {
      this.term = this.persistedTerm = opts.durable.term;
      this.votedFor = this.persistedVote = opts.durable.votedFor;
    }
  }

  // ---------------------------------------------------------------- public interface

  step(event: ElectionEvent): ElectionOutput {
    this.out = { send: [], effects: [], wakeAt: Infinity };
    // Monotonic: a caller's clock never goes back, but be defensive.
    this.nowMs = Math.max(this.nowMs, event.now);
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
        this.roleStep.local(this, event);
        break;
      case "maintenance":
        this.maintenance = event.on;
        this.roleStep.local(this, event);
        break;
      case "handover":
        this.roleStep.local(this, event);
        break;
      case "config":
        this.onConfig(event.config);
        this.roleStep.local(this, event);
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
    this.checkInvariants();
    return this.out;
  }

  snapshot(now: number): ElectionSnapshot {
    const t = Math.max(now, this.nowMs);
    const leaseValidUntil = this.leaseValidUntilMs;
    const leaseValid = leaseValidUntil !== null && t < leaseValidUntil;
    return {
      nodeId: this.cfg.nodeId,
      role: this.role,
      term: this.term,
      leader: this.leader,
      leaseValidUntil,
      promisedUntil: this.promisedUntilMs,
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
            since: this.fallback.sinceMs,
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
          return { id: m.id, lastHeardAt: p?.lastHeardAtMs ?? null, status: p?.status ?? null, reachable: this.reachable(m.id, t) };
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
          const t = Math.max(now, this.nowMs);
          const leaseValidUntil = this.leaseValidUntilMs;
          return {
            role: this.role,
            term: this.term,
            leaseValid: leaseValidUntil !== null && t < leaseValidUntil,
            leaseValidUntil,
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

  // ---------------------------------------------------------------- transitions (the only writers of `state`)

  /** The role reported outside: a pre-candidate is still a follower. */
  get role(): Role {
    return this.roleStep.role;
  }

  /** The end of the lease on this node's clock: a leader's, else null. */
  get leaseValidUntilMs(): number | null {
    return this.state.kind === "leader" ? this.state.leaseValidUntilMs : null;
  }

  private setState(state: RoleState): void {
    this.state = state;
    this.roleStep = STEPS[state.kind];
  }

  /** A term newer than ours: adopt it, with no vote cast in it yet. The one writer of `term` besides `becomeCandidate`. */
  private enterTerm(term: number): void {
    assert(term > this.term, `enterTerm: term ${term} is newer than ${this.term}`);
    this.term = term;
    this.votedFor = null;
  }

  /**
   * Step down to follower (a witness stays a witness), optionally into a newer term. A leader stops
   * asserting, forgets its leader and reports the change with `reason`; a candidate or pre-candidate
   * ends its candidacy.
   */
  becomeFollower(reason: string, newTerm?: number): void {
    const wasLeader = this.state.kind === "leader";
    const termBefore = this.term;
    if (wasLeader && this.asserting) this.effect({ type: "stop-asserting", term: this.term, reason });
    this.asserting = false;
    this.setState(this.witness ? { kind: "witness" } : { kind: "follower" });
    if (newTerm !== undefined && newTerm > this.term) {
      this.enterTerm(newTerm);
      this.leader = null;
    }
    if (wasLeader) {
      this.leader = null;
      this.reportRole(reason);
    }
    assert(!this.asserting && this.leaseValidUntilMs === null && this.term >= termBefore, "becomeFollower: not asserting, no lease, term not lowered");
  }

  /** Ask for pre-votes for the next term (PreVote): a follower whose time to stand has come. */
  becomePreCandidate(): void {
    assert(this.state.kind === "follower" && this.eligible(), "becomePreCandidate: from an eligible follower");
    assert(this.nowMs >= this.bootQuietUntilMs, "becomePreCandidate: after the boot quiet period");
    const nextTerm = this.term + 1;
    this.setState({ kind: "precandidate", nextTerm, granted: new Set([this.cfg.nodeId]), deadlineMs: this.nowMs + this.timing.electionTimeoutMs });
    this.broadcast({ kind: "prevote-request", from: this.cfg.nodeId, nextTerm, status: this.status() });
    checkPreVotes(this);
  }

  /** Stand in a new term with our own vote: after a pre-vote majority, or at once as the successor a leader named (`transfer`). */
  becomeCandidate(transfer: boolean): void {
    assert(this.state.kind === "follower" || this.state.kind === "precandidate", "becomeCandidate: from a follower or pre-candidate");
    assert(this.nowMs >= this.bootQuietUntilMs, "becomeCandidate: after the boot quiet period");
    const termBefore = this.term;
    this.term++;
    this.votedFor = this.cfg.nodeId;
    this.setState({
      kind: "candidate",
      granted: new Map([[this.cfg.nodeId, this.nowMs]]),
      deadlineMs: this.nowMs + this.timing.electionTimeoutMs,
      sentAtMs: this.nowMs,
    });
    this.leader = null;
    this.broadcast({ kind: "vote-request", from: this.cfg.nodeId, term: this.term, sentAt: this.nowMs, transfer, status: this.status() });
    this.reportRole(transfer ? "standing as the chosen successor" : "standing for election");
    assert(this.term === termBefore + 1 && this.votedFor === this.cfg.nodeId, "becomeCandidate: a new term, our own vote");
    checkVotes(this);
  }

  /** Lead the term we won: the lease from the votes' send times, then assert the IP. */
  becomeLeader(votes: Map<NodeId, number>): void {
    const c = this.state;
    assert(c.kind === "candidate" && this.votedFor === this.cfg.nodeId, "becomeLeader: from a candidate that voted for itself");
    assert(votesSuffice(this, new Set(votes.keys())), "becomeLeader: votes from a majority of every list in use");
    this.setState({ kind: "leader", acksMs: new Map(votes), leaseValidUntilMs: null, betterSinceMs: null, termStartMs: c.sentAtMs });
    this.leader = this.cfg.nodeId;
    this.release = null;
    // Winning the vote is the switch taking force when this node is of the requested color.
    const color = this.selfMember()?.color;
    if (color && color !== this.colorInForce) this.colorInForce = color;
    renewLease(this);
    if (this.role !== "leader") return; // the votes came too late for a lease (renewLease stepped down)
    this.asserting = true;
    this.reportRole("won the election");
    this.effect({ type: "start-asserting", term: this.term });
    this.nextBeaconAtMs = this.nowMs; // tell everyone at once
    assert(this.leaseValidUntilMs !== null && this.nowMs < this.leaseValidUntilMs, "becomeLeader: a valid lease before asserting");
  }

  /** What holds after every step, whatever the role. */
  private checkInvariants(): void {
    const s = this.state;
    assert(this.witness === (s.kind === "witness"), "a witness process is in the witness state, and only it");
    assert(this.asserting === (s.kind === "leader"), "asserting exactly while leading");
    if (s.kind === "leader") {
      assert(this.leader === this.cfg.nodeId && this.votedFor === this.cfg.nodeId, "a leader leads the term it voted for itself in");
      assert(s.leaseValidUntilMs !== null && this.nowMs < s.leaseValidUntilMs, "a leader's lease is valid after each step");
    }
    if (s.kind === "candidate") assert(this.votedFor === this.cfg.nodeId && this.leader === null, "a candidate voted for itself and knows no leader");
    assert(this.persistedTerm === this.term && this.persistedVote === this.votedFor, "the durable state is handed out before the step's messages");
  }

  // ---------------------------------------------------------------- views and helpers

  get timing() {
    return this.cfg.timing;
  }

  selfMember(): Member | undefined {
    return this.cfg.members.find((m) => m.id === this.cfg.nodeId);
  }

  /** Every member of the current list and of any uncommitted earlier list. */
  private allMembers(): readonly Member[] {
    // Outside a membership change (nearly always) that is the current list itself: no copy, since
    // this runs on every timer and message.
    if (this.jointLists.length === 0) return this.cfg.members;
    const seen = new Map<NodeId, Member>();
    for (const m of this.cfg.members) seen.set(m.id, m);
    for (const list of this.jointLists) {
      for (const id of list) if (!seen.has(id)) seen.set(id, this.known.get(id) ?? { id, address: "", port: 0, role: "lb", priority: 0 });
    }
    return [...seen.values()];
  }

  memberIds(): NodeId[] {
    return this.cfg.members.map((m) => m.id);
  }

  /** The lists whose majorities are needed: the current one, plus earlier uncommitted ones. */
  quorumLists(): NodeId[][] {
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

  reachable(id: NodeId, nowMs = this.nowMs): boolean {
    const p = this.peers.get(id);
    return p?.lastHeardAtMs != null && nowMs - p.lastHeardAtMs <= this.timing.leaseMs;
  }

  views(): PeerView[] {
    return this.allMembers()
      .filter((m) => m.id !== this.cfg.nodeId)
      .map((m) => ({ id: m.id, member: m, status: this.peers.get(m.id)?.status ?? null, reachable: this.reachable(m.id) }));
  }

  isMember(): boolean {
    return this.selfMember() !== undefined;
  }

  /** Healthy, not in maintenance, an LB and a member: could lead if its color is in force (`isEligible`). */
  eligible(): boolean {
    return isEligible(this.selfMember(), this.healthy, this.maintenance);
  }

  status(): NodeStatus {
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
  colorOpensAtMs(): number {
    const color = this.selfMember()?.color;
    if (color === this.colorInForce) return -Infinity;
    if (color === this.requestedColor) return this.blockerOfColorInForce(this.views()) === null ? -Infinity : Infinity;
    if (!this.fallbackPossible()) return Infinity;
    return Math.max(this.colorSeenAtMs[this.colorInForce], this.bootedAtMs) + colorFallbackAfterMs(this.timing.leaseMs);
  }

  /** A fallback could open: it is enabled and the color in force is the requested one. */
  fallbackPossible(): boolean {
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
    const seenMs = Math.max(this.colorSeenAtMs[this.colorInForce], this.bootedAtMs);
    // A voter opens a heartbeat interval earlier than a candidate: their views of the last sign of
    // the color in force differ by a delivery, and a refused pre-vote would cost a retry backoff.
    const slackMs = asVoter ? this.timing.heartbeatIntervalMs : 0;
    return this.nowMs - seenMs >= colorFallbackAfterMs(this.timing.leaseMs) - slackMs;
  }

  /** Record which colors have an eligible node in view, and notice the color in force change (fallback in and out). */
  private trackColors(): void {
    const nowMs = this.nowMs;
    const self = this.selfMember();
    if (self?.color && this.eligible()) this.colorSeenAtMs[self.color] = nowMs;
    for (const v of this.views()) {
      const heardAtMs = this.peers.get(v.id)?.lastHeardAtMs;
      if (seenEligible(v) && heardAtMs != null && v.member.color) {
        this.colorSeenAtMs[v.member.color] = Math.max(this.colorSeenAtMs[v.member.color], heardAtMs);
      }
    }
    if (this.colorInForce !== this.lastColorInForce) {
      const from = this.lastColorInForce;
      this.lastColorInForce = this.colorInForce;
      // A fallback, not a planned switch: the requested color left force after being dark for at
      // least a lease (a planned switch leaves a node with an older config seeing the old color alive).
      if (from === this.requestedColor && nowMs - this.colorSeenAtMs[from] >= this.timing.leaseMs) this.fallback = { from, sinceMs: nowMs };
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

  /**
   * Whether the send time an acknowledgement or a vote echoes is one this node could have sent while
   * standing or leading since `sinceMs` (its vote requests' send time): not before that, and not later
   * than now. Only such an echo may move the lease, so that a buggy or misbehaving peer that echoes a
   * time from the future cannot stretch it beyond what a majority granted. Any other is ignored and
   * reported (`echo-ignored`; the shell counts it).
   */
  genuineEcho(m: Extract<PeerMessage, { kind: "heartbeat-ack" | "vote-response" }>, sinceMs: number): boolean {
    const problem = m.echoSentAt > this.nowMs ? "future" : m.echoSentAt < sinceMs ? "before-term" : null;
    if (problem === null || (SIM && this.bugs.trustEchoes)) return true;
    const reason =
      problem === "future"
        ? `echoes send time ${m.echoSentAt} ms, later than now (${this.nowMs} ms)`
        : `echoes send time ${m.echoSentAt} ms, before this node stood for term ${this.term} (${sinceMs} ms)`;
    this.effect({ type: "echo-ignored", from: m.from, kind: m.kind, echoSentAt: m.echoSentAt, problem, reason });
    return false;
  }

  send(to: NodeId, message: PeerMessage): void {
    if (to !== this.cfg.nodeId) this.out.send.push({ to, message });
  }

  broadcast(message: PeerMessage): void {
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
    const nowMs = this.nowMs;
    this.trackColors();
    if (this.release && nowMs >= this.release.untilMs) this.release = null;
    for (const s of TICK_ORDER) if (this.roleStep === s) s.tick(this);
    if (nowMs >= this.nextBeaconAtMs) this.beacon();
    this.updatePendingSwitch();
    this.trackColors();
  }

  private nextWake(): number {
    return Math.max(Math.min(this.nextBeaconAtMs, this.roleStep.wakeAtMs(this)), this.nowMs);
  }

  /** Every node tells every member its status each heartbeat interval; a leader's carries its lease renewal. */
  private beacon(): void {
    const nowMs = this.nowMs;
    this.nextBeaconAtMs = nowMs + this.timing.heartbeatIntervalMs;
    const leading = this.state.kind === "leader";
    if (leading) this.hbSeq++;
    this.broadcast({
      kind: "heartbeat",
      from: this.cfg.nodeId,
      term: this.term,
      seq: this.hbSeq,
      sentAt: nowMs,
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

  // ---------------------------------------------------------------- messages: the part every role shares

  private notePeer(from: NodeId, status: NodeStatus | undefined): void {
    const p = this.peers.get(from) ?? { lastHeardAtMs: null, status: null };
    p.lastHeardAtMs = this.nowMs;
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
    if (this.handleTerm(m)) this.roleStep.message(this, m);
  }

  /**
   * The term of a message, for every role in one place (etcd's `Step`), and the answers to pre-votes
   * and votes, which every role gives alike. Returns whether the message goes on to the role's step:
   * then its term is ours (a heartbeat from a leader, an acknowledgement, a vote response, a
   * release), or it carries none (a pre-vote response).
   */
  private handleTerm(m: PeerMessage): boolean {
    switch (m.kind) {
      case "heartbeat":
        if (!m.leader) {
          // A status beacon from a non-leader. Learning its newer term (from a failed candidacy) lets this
          // node's next pre-vote ask for a term the others can grant; a leader ignores it (PreVote).
          this.learnTerm(m.term);
          return false;
        }
        if (m.term < this.term) {
          // A stale leader: tell it the newer term so it steps down without waiting for its lease.
          this.send(m.from, { kind: "heartbeat-ack", from: this.cfg.nodeId, term: this.term, seq: m.seq, echoSentAt: m.sentAt, status: this.status() });
          return false;
        }
        if (m.term > this.term) this.becomeFollower(`leader ${m.from} has newer term ${m.term}`, m.term);
        return true;
      case "heartbeat-ack":
      case "vote-response":
        if (m.term > this.term) {
          this.becomeFollower(m.kind === "vote-response" ? `saw newer term ${m.term}` : `${m.from} has newer term ${m.term}`, m.term);
          return false;
        }
        return m.term === this.term;
      case "prevote-request":
        this.onPreVoteRequest(m);
        return false;
      case "prevote-response":
        return true;
      case "vote-request":
        this.onVoteRequest(m);
        return false;
      case "release":
        // Only a leader sends a release, and only for its own term: one of our term or newer is current
        // even if we never heard that leader's heartbeats (it may have handed over at once). A leader
        // or a candidate carries on: a rival's release is no reason to give up.
        if (m.term < this.term || this.state.kind === "leader" || this.state.kind === "candidate") return false;
        if (m.term > this.term) this.enterTerm(m.term);
        return true;
    }
  }

  /** Adopt a newer term heard from a non-leader, when that cannot disturb a running leader. */
  private learnTerm(term: number): void {
    if (term > this.term && (this.state.kind === "follower" || this.state.kind === "witness") && this.promisedUntilMs <= this.nowMs) {
      this.enterTerm(term);
      this.leader = null;
    }
  }

  private onPreVoteRequest(m: Extract<PeerMessage, { kind: "prevote-request" }>): void {
    const reason = m.nextTerm <= this.term ? `term ${m.nextTerm} is not newer than mine (${this.term})` : this.refusal(m.from, m.status, false);
    this.send(m.from, {
      kind: "prevote-response",
      from: this.cfg.nodeId,
      nextTerm: m.nextTerm,
      granted: reason === null,
      ...(reason ? { reason } : {}),
      status: this.status(),
    });
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
    if (m.term > this.term) this.becomeFollower(`${m.from} stands in newer term ${m.term}`, m.term);
    if (this.votedFor !== null && this.votedFor !== m.from) return respond(false, `already voted for ${this.votedFor} in term ${this.term}`);
    assert(this.state.kind !== "leader" && m.term === this.term, "onVoteRequest: a vote goes to a candidate of our term, never from a leader");
    this.votedFor = m.from;
    this.leader = null;
    this.promisedTo = m.from;
    this.promisedUntilMs = Math.max(this.promisedUntilMs, this.nowMs + this.timing.leaseMs);
    respond(true);
  }

  /** Why this node would refuse to back `from` (null: it would back it). Used for pre-votes and votes. */
  private refusal(from: NodeId, status: NodeStatus, transfer: boolean): string | null {
    const nowMs = this.nowMs;
    const candidate = this.allMembers().find((m) => m.id === from);
    if (!candidate) return "not a member of my configuration";
    if (nowMs < this.bootQuietUntilMs) return "recently restarted: waiting out promises made before the restart";
    if (this.state.kind === "leader") return "I am the leader and my lease is valid";
    if (this.promisedUntilMs > nowMs && this.promisedTo !== from)
      return `promised to ${this.promisedTo} for another ${Math.ceil(this.promisedUntilMs - nowMs)} ms`;
    if (!claimsEligible(candidate, status)) return "candidate is not eligible";
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

  // ---------------------------------------------------------------- config

  private onConfig(next: ElectionConfig): void {
    const prev = this.cfg;
    assert(next.nodeId === prev.nodeId, `onConfig: nodeId cannot change on reload (${prev.nodeId} → ${next.nodeId})`);
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
  }

  private leaderHeardRecently(): boolean {
    return this.leader !== null && this.lastLeaderHeardAtMs !== null && this.nowMs - this.lastLeaderHeardAtMs <= this.timing.leaseMs;
  }

  private updatePendingSwitch(): void {
    if (this.requestedColor !== this.colorInForce && this.state.kind !== "leader" && !this.leaderHeardRecently()) {
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
    if (this.state.kind !== "leader") this.pendingSwitchReason = this.leader ? this.leaderPendingReason : whyNoneOfColor(this.views(), this.requestedColor);
  }
}

export function createElectionNode(config: ElectionConfig, now: number, opts?: ElectionOptions): ElectionNode {
  return new Election(config, now, opts);
}
