/**
 * The order in which a bundle upgrade restarts the agents, one droplet at a time (Pulumi runs each
 * droplet's restart after the previous one's, by dependsOn). Pure, so the test bed and the benchmark
 * roll in exactly the stack's order.
 *
 * The standby color goes first: a bundle that does not come up healthy fails the deploy there,
 * before any droplet of the color that serves is touched. Then the color in force, then the witness.
 * Within a color, by rank (the agents' order: node ids are the droplet name plus its droplet ID, so
 * they sort like the names with "-" appended). Where the leader is does not matter: it is skipped in
 * this pass and restarted last, after a handover (scripts.ts: rollingRestartScript, leaderRestartScript).
 */
import type { Color } from "../agent/config.js";

export interface RollingNode {
  name: string;
  color?: Color | null;
  role?: "lb" | "witness";
}

const byRank = (a: RollingNode, b: RollingNode) => {
  const ka = `${a.name}-`;
  const kb = `${b.name}-`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
};

export function rollingOrder<T extends RollingNode>(nodes: readonly T[], activeColor: Color): T[] {
  const lbs = nodes.filter((n) => n.role !== "witness");
  const standby = lbs.filter((n) => n.color !== activeColor).sort(byRank);
  const inForce = lbs.filter((n) => n.color === activeColor).sort(byRank);
  return [...standby, ...inForce, ...nodes.filter((n) => n.role === "witness")];
}
