/**
 * Majorities and leases: the arithmetic that decides whether a node may lead. Pure functions.
 */
import type { NodeId } from "./types.js";

/**
 * How many voters of a list form a majority. The one home of this rule: the core, the simulator's
 * invariants, the stack's config check and `fipd check-config` all use it.
 */
export const majorityOf = (n: number): number => Math.floor(n / 2) + 1;

/** True if `granted` holds a majority of every list (joint consensus needs all of them). */
export function hasMajorityInAll(lists: readonly (readonly NodeId[])[], granted: ReadonlySet<NodeId>): boolean {
  return lists.every((list) => list.filter((id) => granted.has(id)).length >= majorityOf(list.length));
}

/**
 * The newest time a majority of `list` acknowledged: the majority-th latest acknowledged send time.
 * A lease derived from it is backed by a promise from every node of that majority.
 */
export function majorityAckTime(list: readonly NodeId[], ackedAt: (id: NodeId) => number, needed = majorityOf(list.length)): number {
  const times = list.map((id) => ackedAt(id)).sort((a, b) => b - a);
  return times[needed - 1] ?? -Infinity;
}

/**
 * Lease length in the leader's own clock for a promise of `leaseMs` on each follower's clock.
 *
 * A follower promises `leaseMs` of its local time from when it received the heartbeat, which is at
 * least `leaseMs / (1 + ρ)` of real time. The leader counts from when it *sent* the heartbeat (earlier)
 * and its own `x` local milliseconds last at most `x / (1 − ρ)` real ones. Choosing
 * `x = leaseMs · (1 − ρ) / (1 + ρ)` makes the leader's lease end, in real time, no later than every
 * promise behind it. One more millisecond covers rounding.
 */
export const leaderLeaseMs = (leaseMs: number, maxClockDrift: number): number => (leaseMs * (1 - maxClockDrift)) / (1 + maxClockDrift) - 1;

/**
 * After a restart a node has forgotten whom it promised; it stays out of elections until any promise
 * it could have made has run out, in real time, on any clock within the drift bound.
 */
export const bootQuietMs = (leaseMs: number, maxClockDrift: number): number => Math.ceil((leaseMs * (1 + maxClockDrift)) / (1 - maxClockDrift)) + 1;
