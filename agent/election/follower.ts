/**
 * The follower: follows the leader whose heartbeats reach it, answers releases, and stands (a
 * pre-vote) when its promise, its boot quiet period and its rank's backoff have run out.
 * `followHeartbeat` and `onRelease` are shared with the roles that react to them alike.
 */
import { assert } from "./assert.js";
import type { Election } from "./node.js";
import { compareRank, rankedEligible } from "./rank.js";
import type { RoleStep } from "./role.js";
import type { PeerMessage } from "./types.js";

type Heartbeat = Extract<PeerMessage, { kind: "heartbeat" }>;
type ReleaseMessage = Extract<PeerMessage, { kind: "release" }>;

export const followerStep: RoleStep = {
  kind: "follower",
  role: "follower",
  tick(e) {
    if (e.nowMs >= standAtMs(e)) e.becomePreCandidate();
  },
  message(e, m) {
    if (m.kind === "heartbeat") followHeartbeat(e, m);
    else if (m.kind === "release") onRelease(e, m);
  },
  local() {},
  wakeAtMs: (e) => standAtMs(e),
};

/**
 * A heartbeat of the current term from a leader (Election.handleTerm settled the term): follow it,
 * renew the promise to it and acknowledge. A pre-candidate or candidate gives up its candidacy.
 */
export function followHeartbeat(e: Election, m: Heartbeat): void {
  assert(m.leader !== null && m.term === e.term, "followHeartbeat: a leader's heartbeat of the current term");
  assert(e.state.kind !== "leader", "followHeartbeat: not on a leader");
  if (e.leader !== null && e.leader !== m.from) return; // same term, another leader: impossible (one vote per term); ignore
  if (e.state.kind === "candidate" || e.state.kind === "precandidate") e.becomeFollower("");
  e.leader = m.from;
  e.lastLeaderHeardAtMs = e.nowMs;
  e.promisedTo = m.from;
  e.promisedUntilMs = Math.max(e.promisedUntilMs, e.nowMs + e.timing.leaseMs);
  e.colorInForce = m.leader.colorInForce;
  e.leaderPendingReason = m.leader.pendingSwitchReason;
  if (m.leader.committedMembershipVersion >= e.cfg.membershipVersion) {
    e.jointLists = [];
    e.committedVersion = Math.max(e.committedVersion, e.cfg.membershipVersion);
  }
  e.send(m.from, { kind: "heartbeat-ack", from: e.cfg.nodeId, term: m.term, seq: m.seq, echoSentAt: m.sentAt, status: e.status() });
  assert(e.promisedUntilMs > e.nowMs && e.state.kind !== "candidate" && e.state.kind !== "precandidate", "followHeartbeat: promised, no candidacy");
}

/**
 * A leader's release (of the current term: Election.handleTerm): take back the promise to it, learn
 * the color in force, and let the named successor stand first (or stand now, if it is this node).
 */
export function onRelease(e: Election, m: ReleaseMessage): void {
  assert(m.term === e.term, "onRelease: the release's term is current");
  assert(e.state.kind === "follower" || e.state.kind === "precandidate" || e.state.kind === "witness", "onRelease: not a leader or candidate");
  e.colorInForce = m.colorInForce;
  e.namedSuccessor = m.successor ? { id: m.successor, term: m.term } : null;
  if (e.promisedTo === m.from) {
    e.promisedUntilMs = e.nowMs;
    e.promisedTo = null;
  }
  if (e.leader === m.from || e.leader === null) {
    e.leader = null;
    e.lastLeaderHeardAtMs = null;
  } else {
    return; // a newer leader already runs this term's successor election; nothing to do
  }
  if (m.successor === e.cfg.nodeId && e.eligible() && e.role === "follower" && e.nowMs >= e.bootQuietUntilMs) {
    e.becomeCandidate(true);
  } else {
    // Let the chosen successor go first.
    e.retryAtMs = Math.max(e.retryAtMs, e.nowMs + (m.successor ? e.timing.electionTimeoutMs : 0));
  }
}

/** When this follower would stand for election, or Infinity if it may not. */
export function standAtMs(e: Election): number {
  assert(e.state.kind === "follower", "standAtMs: only a follower stands");
  if (!e.eligible()) return Infinity;
  // A fallback candidate wakes when the fallback opens, and the rank backoff counts from then, so
  // that the fallback color's nodes do not all stand at once.
  const opensAtMs = e.colorOpensAtMs();
  if (opensAtMs === Infinity) return Infinity;
  const heardLeaderMs = e.lastLeaderHeardAtMs === null ? -Infinity : e.lastLeaderHeardAtMs + e.timing.electionTimeoutMs;
  const baseMs = Math.max(e.promisedUntilMs, heardLeaderMs, e.bootQuietUntilMs, e.retryAtMs, opensAtMs);
  return baseMs + rank(e) * e.timing.candidateBackoffMs;
}

/** 0 for the best eligible node this node can hear (itself included), 1 for the next, … */
function rank(e: Election): number {
  const self = e.selfMember();
  if (!self) return 0;
  const others = rankedEligible(e.views(), e.colorInForce, e.requestedColor, e.fallbackPossible()).filter((v) => v.id !== e.leader);
  return others.filter((v) => compareRank(v.member, self, e.colorInForce) < 0).length;
}
