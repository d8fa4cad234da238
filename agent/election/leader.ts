/**
 * The leader: renews its lease from majority acknowledgements, steps down the instant it ends, and
 * hands over (a planned release naming a successor) when it turns ineligible, a color switch or a
 * better node (preempt) asks for it, or the operator does. Commits membership changes.
 */
import type { Color } from "../config.js";
import { assert } from "./assert.js";
import type { Election } from "./node.js";
import { leaderLeaseMs, majorityAckTime, majorityOf, hasMajorityInAll } from "./quorum.js";
import { bestOfColor, colorMayLead, compareRank, preferringBuild, rankedEligible, seenEligible, whyNoneOfColor, type PeerView } from "./rank.js";
import type { RoleStep } from "./role.js";
import { SIM } from "./sim-only.js";
import type { NodeId } from "./types.js";

export const leaderStep: RoleStep = {
  kind: "leader",
  role: "leader",
  tick(e) {
    renewLease(e);
    if (e.state.kind === "leader") leaderDuties(e);
  },
  message(e, m) {
    // A heartbeat of the same term from another leader is impossible (one vote per term): ignored.
    // Election.handleTerm passes on only acknowledgements of the current term; an echo of a send
    // time this leader never sent (Election.genuineEcho) is ignored.
    if (m.kind === "heartbeat-ack") {
      const s = leaderState(e);
      if (e.genuineEcho(m, s.termStartMs)) s.acksMs.set(m.from, Math.max(s.acksMs.get(m.from) ?? -Infinity, m.echoSentAt));
    }
  },
  local(e, event) {
    switch (event.type) {
      case "health":
        if (!event.healthy) handOver(e, undefined, "local HAProxy is unhealthy");
        return;
      case "maintenance":
        if (event.on) handOver(e, undefined, "entering maintenance");
        return;
      case "handover":
        handOver(e, event.to, event.reason, undefined, event.preferBuild);
        return;
      case "config":
        renewLease(e);
        if (e.state.kind === "leader" && !e.isMember()) handOver(e, undefined, "no longer a member");
        return;
    }
  },
  wakeAtMs: (e) => leaderState(e).leaseValidUntilMs ?? Infinity,
};

function leaderState(e: Election): Extract<Election["state"], { kind: "leader" }> {
  const s = e.state;
  assert(s.kind === "leader", "leaderState: in the leader state");
  return s;
}

/** The lease length on the leader's clock (README "Promise and lease"). */
function leaseLengthMs(e: Election): number {
  return SIM && e.bugs.noDriftMargin ? e.timing.leaseMs : leaderLeaseMs(e.timing.leaseMs, e.timing.maxClockDrift);
}

function leaseFrom(e: Election, ackTimeMs: (id: NodeId) => number): number {
  let startMs = Infinity;
  for (const list of e.quorumLists()) {
    const needed = SIM && e.bugs.minorityLeader ? Math.max(1, majorityOf(list.length) - 1) : majorityOf(list.length);
    startMs = Math.min(startMs, majorityAckTime(list, ackTimeMs, needed));
  }
  return startMs + leaseLengthMs(e);
}

/** Move the lease to the latest send time a majority of every list acknowledged; step down if it ended. */
export function renewLease(e: Election): void {
  const s = leaderState(e);
  const nowMs = e.nowMs;
  // Only send times this leader made count (Election.genuineEcho): with one from the future, its own
  // `now` would back every majority it is part of, and the lease would never run out.
  // (The planted bug skips both checks, so that the simulator's S1 is what catches it.)
  const trusting = SIM && e.bugs.trustEchoes;
  for (const ackMs of s.acksMs.values()) {
    assert(trusting || (ackMs >= s.termStartMs && ackMs <= nowMs), "renewLease: every acknowledged send time lies between the term's start and now");
  }
  s.leaseValidUntilMs = leaseFrom(e, (id) => (id === e.cfg.nodeId ? nowMs : (s.acksMs.get(id) ?? -Infinity)));
  assert(trusting || s.leaseValidUntilMs <= nowMs + leaseLengthMs(e), "renewLease: the lease ends at most one lease length from now");
  if (nowMs >= s.leaseValidUntilMs) e.becomeFollower("lease expired: no acknowledgement from a majority in time");
  assert(e.state.kind !== "leader" || nowMs < (e.state.leaseValidUntilMs ?? -Infinity), "renewLease: a leader holds a valid lease");
}

/** Duties of a leader with a valid lease: handovers for health, color switch, preemption; commits. */
function leaderDuties(e: Election): void {
  const s = leaderState(e);
  if (!e.eligible()) {
    handOver(e, undefined, !e.isMember() ? "no longer a member" : e.maintenance ? "entering maintenance" : "local HAProxy is unhealthy");
    return;
  }
  commitMembership(e);
  const views = e.views();
  if (e.requestedColor !== e.colorInForce) {
    // Hand over only to a node whose own config already requests the new color: during a rolling
    // reload, one that does not yet would lead as the old color's exception and hand back, and an
    // old-color node would win in between (two extra moves of the IP).
    const requested = e.requestedColor;
    const target = bestOfColor(
      views.filter((v) => v.status?.requestedColor === requested),
      requested,
      e.colorInForce,
    );
    if (target) {
      handOver(e, target.id, `switching to ${requested}`, requested);
      return;
    }
    const notYet = bestOfColor(views, requested, e.colorInForce);
    e.pendingSwitchReason = notYet
      ? `waiting for ${notYet.id} (${requested}) to get the configuration that requests ${requested}`
      : whyNoneOfColor(views, requested);
  } else {
    e.pendingSwitchReason = null;
  }
  if (e.timing.preempt) {
    const self = e.selfMember();
    assert(self !== undefined, "leaderDuties: an eligible leader is a member");
    const best = bestOfColor(views, e.colorInForce, e.colorInForce);
    if (best && compareRank(best.member, self, e.colorInForce) < 0) {
      s.betterSinceMs ??= e.nowMs;
      // Wait a lease so that a flapping node does not make the IP flap with it.
      if (e.nowMs - s.betterSinceMs >= e.timing.leaseMs) handOver(e, best.id, `preempted by better node ${best.id}`);
    } else {
      s.betterSinceMs = null;
    }
  }
}

/** A configuration is committed once a majority of every list runs it (or a newer one). */
function commitMembership(e: Election): void {
  if (e.jointLists.length === 0 && e.committedVersion >= e.cfg.membershipVersion) return;
  const v = e.cfg.membershipVersion;
  const upToDate = new Set<NodeId>([e.cfg.nodeId]);
  for (const [id, p] of e.peers) if (e.reachable(id) && (p.status?.membershipVersion ?? -1) >= v) upToDate.add(id);
  if (hasMajorityInAll([e.memberIds(), ...e.jointLists], upToDate)) {
    e.jointLists = [];
    e.committedVersion = v;
  }
}

/**
 * Planned handover: stop leading now, and tell everyone (repeatedly, for a lease) that the promise
 * to this leader is released and who should stand. The old droplet keeps the IP and serves until the
 * successor assigns it to itself, so clients see no gap.
 */
function handOver(e: Election, to: NodeId | undefined, reason: string, newColor?: Color, preferBuild?: string): void {
  leaderState(e);
  const views = e.views();
  const colorAfter = newColor ?? e.colorInForce;
  let successor: PeerView | null = null;
  if (to) {
    const v = views.find((x) => x.id === to);
    if (v && seenEligible(v) && colorMayLead(v.member.color, colorAfter, e.requestedColor)) successor = v;
  }
  successor ??= newColor ? bestOfColor(views, newColor, colorAfter) : preferringBuild(rankedEligible(views, e.colorInForce, e.requestedColor), preferBuild);
  const term = e.term;
  e.becomeFollower(`handing over: ${reason}${successor ? ` (to ${successor.id})` : " (no eligible successor)"}`);
  // The color in force changes only when a node of the new color wins (its heartbeats say so): if the
  // chosen successor fails to stand, the old color stays in force and another old-color node leads.
  e.promisedTo = null;
  e.promisedUntilMs = e.nowMs;
  // Give the successor the first chance; stand again only later (if still eligible).
  e.retryAtMs = e.nowMs + e.timing.leaseMs;
  e.release = { term, successor: successor?.id ?? null, colorInForce: e.colorInForce, reason, untilMs: e.nowMs + e.timing.leaseMs };
  const r = e.release;
  e.broadcast({ kind: "release", from: e.cfg.nodeId, term: r.term, successor: r.successor, colorInForce: r.colorInForce, reason });
  assert(e.state.kind === "follower" && !e.asserting, "handOver: stepped down");
}
