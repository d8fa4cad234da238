/**
 * The roles of the election core, in the shape of etcd's raft: the node's `state` says which role it
 * is in and holds that role's own data; `roleStep` is that role's step table. Only the transitions of
 * agent/election/node.ts (`becomeFollower`, `becomePreCandidate`, `becomeCandidate`, `becomeLeader`)
 * change them, always both together. What every role does alike (timers shared by all, noting the
 * sender, the term of a message, answering pre-votes and votes) runs in `Election` before the role's
 * step; see agent/election/README.md ("Roles").
 */
import type { Election } from "./node.js";
import type { ElectionEvent, NodeId, PeerMessage, Role } from "./types.js";

export type RoleState =
  /** Follows a leader (or waits for one) and stands when its time comes (`standAtMs`). */
  | { kind: "follower" }
  /**
   * A follower asking for pre-votes for `nextTerm` (PreVote: no term is spent, no promise is broken).
   * Reported as "follower": it has not stood yet.
   */
  | { kind: "precandidate"; nextTerm: number; granted: Set<NodeId>; deadlineMs: number }
  /**
   * Stands in the current term, having voted for itself; `granted` holds each voter's echoed send
   * time; `sentAtMs`: when it sent its vote requests (the earliest send time a peer can echo).
   */
  | { kind: "candidate"; granted: Map<NodeId, number>; deadlineMs: number; sentAtMs: number }
  /**
   * Leads the current term. `acksMs`: the latest acknowledged heartbeat or vote send time per member
   * (leader's clock); `leaseValidUntilMs`: the end of its lease (null only while it is first computed);
   * `betterSinceMs`: with preempt, since when a better node has been eligible; `termStartMs`: when it
   * stood for this term (its vote requests' send time), the earliest send time a peer can echo.
   */
  | { kind: "leader"; acksMs: Map<NodeId, number>; leaseValidUntilMs: number | null; betterSinceMs: number | null; termStartMs: number }
  /** A witness votes and follows, and never stands: the role of its whole process. */
  | { kind: "witness" };

export type RoleKind = RoleState["kind"];

/** A local event that is not time passing nor a message. */
export type LocalEvent = Exclude<ElectionEvent, { type: "tick" } | { type: "message" }>;

/** One role's step table. Each function runs only while `e.state.kind === kind`. */
export interface RoleStep {
  readonly kind: RoleKind;
  /** The role reported in snapshots and `role-changed` effects. */
  readonly role: Role;
  /** This role's timers, after the shared ones (Election.runTimers). */
  tick(e: Election): void;
  /** A message from a member, after Election.onMessage noted the sender and handled the term. */
  message(e: Election, m: PeerMessage): void;
  /** A local event, after its shared part (Election.step). */
  local(e: Election, event: LocalEvent): void;
  /** The latest local time this role's timers need a tick by (Infinity: none). */
  wakeAtMs(e: Election): number;
}
