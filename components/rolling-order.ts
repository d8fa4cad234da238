/**
 * The order in which a bundle upgrade restarts the agents, one droplet at a time (Pulumi runs each
 * droplet's restart after the previous one's, by dependsOn). Pure, so the test bed and the benchmark
 * roll in exactly the stack's order.
 *
 * Every restart of the node that holds the Reserved IP moves the IP (a planned handover, no failed
 * requests, but one assign). To move it only once per roll:
 * - the standby color goes first: its restarts never touch the IP;
 * - the color in force goes from its lowest-ranked node to its best-ranked one. Without failures the
 *   best-ranked node leads (the agents' tie-break: priority, then lowest node id; ids are the droplet
 *   name plus its droplet ID, so they sort like the names with "-" appended). It restarts last and
 *   hands over (`fipd handover --prefer-build`) to a node already running the new bundle, which is
 *   not restarted again.
 * If another node leads (after a failover, leaders are sticky), it hands over to an upgraded node
 * too, unless it is the first of its color in the order: then the IP moves twice.
 * The witness goes last; it never holds the IP.
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
  const standby = lbs.filter((n) => n.color !== activeColor).sort(byRank).reverse();
  const inForce = lbs.filter((n) => n.color === activeColor).sort(byRank).reverse();
  return [...standby, ...inForce, ...nodes.filter((n) => n.role === "witness")];
}
