/**
 * Who should lead: eligibility and the deterministic order among eligible nodes (libab's tie-break,
 * extended with colors). Pure functions.
 */
import type { Color, Member } from "../config.js";
import type { NodeId, NodeStatus } from "./types.js";

/**
 * Ordering key: nodes of the color in force first, then higher priority, then lower id. A node of the
 * requested (not yet in force) color ranks after every node of the color in force, so that a dying
 * blue holder is replaced by a blue node while a switch to green is still pending.
 */
export function compareRank(a: Member, b: Member, colorInForce: Color): number {
  const ca = a.color === colorInForce ? 0 : 1;
  const cb = b.color === colorInForce ? 0 : 1;
  if (ca !== cb) return ca - cb;
  if (a.priority !== b.priority) return b.priority - a.priority;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * How long no node of the color in force may have been eligible before a node of another color may
 * lead (`failover.colorFallback`), in leases. A lease is the longest a follower's promise to a dead
 * leader holds; a failover within the color takes about one lease plus an election (README "Timing"),
 * and a crashed node's last status stays visible for a lease. Three leases ride out all of that, so a
 * failover inside the color in force never turns into a color fallback, while the tier is dark for
 * at most about three leases more than for an ordinary failover (900 ms with the default 300 ms lease).
 */
export const COLOR_FALLBACK_AFTER_LEASES = 3;

/** The fallback bound in milliseconds, for a lease of `leaseMs`. */
export const colorFallbackAfterMs = (leaseMs: number): number => COLOR_FALLBACK_AFTER_LEASES * leaseMs;

/**
 * A node's color may lead if it is in force, or if it is the requested color (a pending switch), or,
 * with `fallback` (no node of the color in force eligible for the fallback bound), if it is any color.
 */
export const colorMayLead = (color: Color | undefined | null, colorInForce: Color, requested: Color, fallback = false): boolean =>
  color === colorInForce || color === requested || (fallback && color != null);

export interface PeerView {
  id: NodeId;
  member: Member;
  status: NodeStatus | null;
  reachable: boolean;
}

/**
 * Eligibility, the one definition: a node is eligible when it is an LB member of the configuration,
 * its HAProxy is healthy and it is not in maintenance. An eligible node may lead if its color may
 * (`colorMayLead`). Each node judges itself with this (the core, into the `eligible` of the status it
 * sends; `fipd status`), and every other node believes that claim (`claimsEligible`).
 */
export const isEligible = (member: Pick<Member, "role"> | undefined, healthy: boolean, maintenance: boolean): boolean =>
  member !== undefined && member.role === "lb" && healthy && !maintenance;

/** A member whose last status says it is eligible, and that is an LB in this node's configuration. */
export const claimsEligible = (member: Pick<Member, "role">, status: NodeStatus): boolean => status.eligible === true && member.role === "lb";

/** A peer that could lead now, as far as this node can tell: reachable, and its last status claims eligibility. */
export const seenEligible = (v: PeerView): boolean => v.reachable && v.status !== null && claimsEligible(v.member, v.status);

/** Eligible peers this node can hear, best first (`fallback`: as in `colorMayLead`). */
export function rankedEligible(views: readonly PeerView[], colorInForce: Color, requested: Color, fallback = false): PeerView[] {
  return views
    .filter((v) => seenEligible(v) && colorMayLead(v.member.color, colorInForce, requested, fallback))
    .sort((a, b) => compareRank(a.member, b.member, colorInForce));
}

/**
 * The first of `ranked`, or with `build` (a rolling upgrade) the first one already running it: that
 * node will not be restarted again in this roll, so the IP moves once instead of twice.
 */
export const preferringBuild = (ranked: readonly PeerView[], build?: string): PeerView | null =>
  (build ? ranked.find((v) => v.status?.build === build) : undefined) ?? ranked[0] ?? null;

/** The best reachable eligible node of one color, or null. */
export function bestOfColor(views: readonly PeerView[], color: Color, colorInForce: Color): PeerView | null {
  return views.filter((v) => seenEligible(v) && v.member.color === color).sort((a, b) => compareRank(a.member, b.member, colorInForce))[0] ?? null;
}

/** Human-readable reason a color has no node that can take over (for `fipd status` and metrics). */
export function whyNoneOfColor(views: readonly PeerView[], color: Color): string {
  const ofColor = views.filter((v) => v.member.role === "lb" && v.member.color === color);
  if (ofColor.length === 0) return `no ${color} node is a member`;
  const parts = ofColor.map((v) => {
    if (!v.reachable) return `${v.id}: unreachable`;
    if (!v.status) return `${v.id}: no status yet`;
    if (v.status.maintenance) return `${v.id}: in maintenance`;
    if (!v.status.healthy) return `${v.id}: HAProxy unhealthy`;
    return `${v.id}: not eligible`;
  });
  return `no healthy ${color} node can take over (${parts.join(", ")})`;
}
