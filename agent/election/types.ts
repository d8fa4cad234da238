/**
 * The contract of the pure election core (agent/election/). Everything the core knows arrives as an
 * `ElectionEvent`; everything it wants done leaves as `ElectionOutput`. No clock, socket, timer or
 * randomness is used inside: the controller (production) and the simulator (tests) drive it.
 *
 * Times are milliseconds on the node's own monotonic clock (`performance.now()`-like); they are
 * never compared across nodes. Messages carry a sender's clock only to be echoed back to it.
 */
import type { Color, FailoverTiming, Member } from "../config.js";

export type NodeId = string;

/** The parts of the agent config that the election uses; config reloads deliver a new one. */
export interface ElectionConfig {
  nodeId: NodeId;
  membershipVersion: number;
  members: Member[];
  /** The color the operator requested. It takes force only when a healthy node of it can lead. */
  activeColor: Color;
  timing: FailoverTiming;
}

/** Messages between nodes. The transport authenticates them; the core rejects stale terms itself. */
export type PeerMessage =
  | { kind: "heartbeat"; from: NodeId; term: number; seq: number; sentAt: number; status: NodeStatus; leader: LeaderInfo | null }
  | { kind: "heartbeat-ack"; from: NodeId; term: number; seq: number; echoSentAt: number; status: NodeStatus }
  | { kind: "prevote-request"; from: NodeId; nextTerm: number; status: NodeStatus }
  | { kind: "prevote-response"; from: NodeId; nextTerm: number; granted: boolean; reason?: string; status: NodeStatus }
  | { kind: "vote-request"; from: NodeId; term: number; sentAt: number; transfer: boolean; status: NodeStatus }
  | { kind: "vote-response"; from: NodeId; term: number; echoSentAt: number; granted: boolean; reason?: string; status: NodeStatus }
  /** A leader giving up: followers release their promise at once (successor, when set, should stand now). */
  | { kind: "release"; from: NodeId; term: number; successor: NodeId | null; colorInForce: Color; reason: string };

/** What every message says about its sender, so every node has a view of every member. */
export interface NodeStatus {
  role: "lb" | "witness";
  color: Color | null;
  healthy: boolean;
  maintenance: boolean;
  /** Healthy, not in maintenance, not a witness: could lead if its color is in force. */
  eligible: boolean;
  membershipVersion: number;
  /** The member ids of this node's configuration, and of earlier lists it still needs (joint consensus). */
  memberIds: NodeId[];
  jointOldIds: NodeId[][];
  /** The color this node believes is in force, and the color it was asked for. */
  colorInForce: Color;
  requestedColor: Color;
  /**
   * Filled in by the controller (from the free metadata service), not by the core, which passes it
   * through unchanged: lets every node's `fipd status` say who holds the Reserved IP.
   */
  holdsReservedIp?: boolean;
  /**
   * Filled in by the controller and passed through like `holdsReservedIp`: the first 16 hex digits
   * of the SHA-256 of the agent bundle this node runs. A rolling upgrade hands over to a node that
   * already runs the new bundle, so the IP moves once per upgrade, not at every restart.
   */
  build?: string;
}

/** Carried by a leader's heartbeats. */
export interface LeaderInfo {
  colorInForce: Color;
  /** The highest membership version a majority of both lists has acknowledged (joint consensus). */
  committedMembershipVersion: number;
  /** Why the requested color has not taken force yet (null when no switch is pending). */
  pendingSwitchReason: string | null;
}

export type ElectionEvent =
  /** Time passed; `now` is monotonic local time. Call at least at every `wakeAt` the core returned. */
  | { type: "tick"; now: number }
  | { type: "message"; now: number; message: PeerMessage }
  /** The local HAProxy health verdict (after rise/fall). Ignored on a witness. */
  | { type: "health"; now: number; healthy: boolean }
  /** Config reload: membership, requested color or timing may change. */
  | { type: "config"; now: number; config: ElectionConfig }
  /** Operator: leave or rejoin eligibility; a leader entering maintenance hands over first. */
  | { type: "maintenance"; now: number; on: boolean }
  /**
   * Operator or SIGTERM: hand leadership to `to` (or the best eligible node) and stop leading. With
   * `preferBuild` (a rolling upgrade) and no `to`, the best eligible node already running that build
   * is chosen first, so the successor is not restarted later in the same roll.
   */
  | { type: "handover"; now: number; to?: NodeId; preferBuild?: string; reason: string };

/** What must survive a restart: the highest term seen and the vote cast in it (as in Raft). */
export interface DurableState {
  term: number;
  votedFor: NodeId | null;
}

export type ElectionEffect =
  /**
   * Write this to stable storage before sending any message of the same output: a restarted node
   * then never votes twice in a term, nor stands in a term it has already seen, so no two
   * processes ever lead the same term. Emitted only when the state changed.
   */
  | { type: "persist"; state: DurableState }
  /** This node now holds a valid lease and must make sure the Reserved IP is on its droplet. */
  | { type: "start-asserting"; term: number }
  /** Stop trying to take the IP (lease lost, stepped down, ineligible, handed over). */
  | { type: "stop-asserting"; term: number; reason: string }
  /** Role or leader changed: for logs and metrics. */
  | { type: "role-changed"; role: Role; term: number; leader: NodeId | null; reason: string }
  /**
   * An acknowledgement or vote ignored because the send time it echoes is not one this node sent in
   * its current candidacy or leadership, so it must not move the lease. `future`: later than now, a
   * time never sent (a buggy or misbehaving peer); `before-term`: from before this node stood (also a
   * delayed answer to a heartbeat of an earlier term). For logs and metrics.
   */
  | { type: "echo-ignored"; from: NodeId; kind: "heartbeat-ack" | "vote-response"; echoSentAt: number; problem: "future" | "before-term"; reason: string };

export interface ElectionOutput {
  /** Messages to send; `to` is a member id. */
  send: Array<{ to: NodeId; message: PeerMessage }>;
  effects: ElectionEffect[];
  /** The latest local time by which the core must get another event (tick). */
  wakeAt: number;
}

export type Role = "follower" | "candidate" | "leader" | "witness";

/** A read-only snapshot for `fipd status`, metrics and the simulator's invariant checks. */
export interface ElectionSnapshot {
  nodeId: NodeId;
  role: Role;
  term: number;
  leader: NodeId | null;
  /** Local time until which this node believes its leader lease is valid (leader only), else null. */
  leaseValidUntil: number | null;
  /** Local time until which this node promised not to back another leader. */
  promisedUntil: number;
  asserting: boolean;
  healthy: boolean;
  maintenance: boolean;
  colorInForce: Color;
  requestedColor: Color;
  /** Non-null while `requestedColor` differs from `colorInForce`: why the switch has not happened. */
  pendingSwitchReason: string | null;
  /**
   * Non-null while the tier serves from `color` although `requested` is requested, because no node of
   * the requested color was eligible for the fallback bound (`failover.colorFallback`). `since` is this
   * node's local time when it learned of the fallback; `reason` says why, and what the return waits for.
   */
  colorFallback: { color: Color; requested: Color; since: number; reason: string } | null;
  membershipVersion: number;
  /** Non-null during joint consensus: the previous member ids whose majority is also needed. */
  jointOldMembers: NodeId[] | null;
  /** What this node last heard from each member. `lastHeardAt` is local time. */
  members: Array<{ id: NodeId; lastHeardAt: number | null; status: NodeStatus | null; reachable: boolean }>;
}

/** The pure state machine. Implementations must be deterministic: same events, same outputs. */
export interface ElectionNode {
  step(event: ElectionEvent): ElectionOutput;
  snapshot(now: number): ElectionSnapshot;
}
