/**
 * The two steps of standing. A pre-candidate asks for pre-votes for the next term without spending it
 * (PreVote); with a majority of every list in use it becomes a candidate: a new term, its own vote,
 * vote requests. With a majority of votes it becomes the leader. Either gives up when a leader of its
 * term is heard, or when its deadline passes (then it retries after a randomised backoff).
 */
import { assert } from "./assert.js";
import { followHeartbeat, onRelease } from "./follower.js";
import type { Election } from "./node.js";
import { hasMajorityInAll, majorityOf } from "./quorum.js";
import type { RoleStep } from "./role.js";
import { SIM } from "./sim-only.js";
import type { NodeId } from "./types.js";

export const preCandidateStep: RoleStep = {
  kind: "precandidate",
  role: "follower",
  tick: giveUpAtDeadline,
  message(e, m) {
    const s = e.state;
    assert(s.kind === "precandidate", "preCandidateStep: in the pre-candidate state");
    if (m.kind === "heartbeat") followHeartbeat(e, m);
    else if (m.kind === "release") onRelease(e, m);
    else if (m.kind === "prevote-response" && m.nextTerm === s.nextTerm && m.granted) {
      s.granted.add(m.from);
      checkPreVotes(e);
    }
  },
  local() {},
  wakeAtMs: deadlineMs,
};

export const candidateStep: RoleStep = {
  kind: "candidate",
  role: "candidate",
  tick: giveUpAtDeadline,
  message(e, m) {
    const s = e.state;
    assert(s.kind === "candidate", "candidateStep: in the candidate state");
    if (m.kind === "heartbeat") followHeartbeat(e, m);
    // Election.handleTerm passes on only vote responses of the current term; a vote that echoes a
    // send time other than this candidacy's could (Election.genuineEcho) is ignored.
    else if (m.kind === "vote-response" && m.granted && e.genuineEcho(m, s.sentAtMs)) {
      s.granted.set(m.from, m.echoSentAt);
      checkVotes(e);
    }
  },
  local() {},
  wakeAtMs: deadlineMs,
};

function deadlineMs(e: Election): number {
  const s = e.state;
  assert(s.kind === "precandidate" || s.kind === "candidate", "deadlineMs: standing");
  return s.deadlineMs;
}

/** Nobody answered in time (lost messages, a partition, or a split vote): try again later. */
function giveUpAtDeadline(e: Election): void {
  if (e.nowMs < deadlineMs(e)) return;
  e.becomeFollower("");
  e.retryAtMs = e.nowMs + e.timing.electionTimeoutMs + e.random() * e.timing.candidateBackoffMs * Math.max(1, e.cfg.members.length);
  assert(e.retryAtMs > e.nowMs, "giveUpAtDeadline: the retry lies ahead");
}

/** Pre-votes from a majority of every list in use: stand. */
export function checkPreVotes(e: Election): void {
  const s = e.state;
  assert(s.kind === "precandidate", "checkPreVotes: in the pre-candidate state");
  if (votesSuffice(e, s.granted)) e.becomeCandidate(false);
}

/** Votes from a majority of every list in use: lead. */
export function checkVotes(e: Election): void {
  const s = e.state;
  assert(s.kind === "candidate", "checkVotes: in the candidate state");
  if (votesSuffice(e, new Set(s.granted.keys()))) e.becomeLeader(s.granted);
}

/** Whether `granted` is enough to proceed: a majority of every list in use (joint consensus). */
export function votesSuffice(e: Election, granted: ReadonlySet<NodeId>): boolean {
  if (!(SIM && e.bugs.minorityLeader)) return hasMajorityInAll(e.quorumLists(), granted);
  // The planted bug: one vote fewer than a majority suffices.
  return e.quorumLists().every((list) => list.filter((id) => granted.has(id)).length >= Math.max(1, majorityOf(list.length) - 1));
}
