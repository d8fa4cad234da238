/**
 * Pools given by a DigitalOcean tag: the stack resolves the tag to the tagged droplets' VPC
 * addresses at every `pulumi up` (so a new tagged droplet joins at the next `pulumi up`). The LBs
 * reach servers over their own VPC only, so a tagged droplet in another VPC is an error naming it
 * and both VPCs, with the fix (`ha-lb:vpcUuid`), rather than a server that never comes up.
 */
import type { Pool } from "./lb-config.js";

/** What the resolution needs of a droplet (digitalocean.getDroplets gives more). */
export interface TaggedDroplet {
  readonly name: string;
  readonly ipv4AddressPrivate: string;
  readonly vpcUuid: string;
}

/** The LBs' VPC: its id, and whether ha-lb:vpcUuid named it (else the stack created it). */
export interface LbVpc {
  readonly id: string;
  readonly fromConfig: boolean;
}

/** The tags the pools name, each once. */
export const poolTags = (pools: Readonly<Record<string, Pool>>): string[] => [...new Set(Object.values(pools).flatMap((p) => (p.tag ? [p.tag] : [])))];

/** Pure: every pool with `servers` (tagged ones resolved, sorted so the config does not churn). Throws one line per problem. */
export function resolveTaggedPools(
  pools: Readonly<Record<string, Pool>>,
  dropletsByTag: Readonly<Record<string, readonly TaggedDroplet[]>>,
  lbVpc: LbVpc,
): Record<string, Pool> {
  const lbVpcName = `${lbVpc.id} (${lbVpc.fromConfig ? "ha-lb:vpcUuid" : "the stack's own VPC"})`;
  const problems: string[] = [];
  const out: Record<string, Pool> = {};
  for (const [name, p] of Object.entries(pools)) {
    if (!p.tag) {
      out[name] = p;
      continue;
    }
    const droplets = dropletsByTag[p.tag] ?? [];
    if (!droplets.length)
      problems.push(`ha-lb:pools: ${name}: no droplet has the tag "${p.tag}"; expected at least one droplet tagged ${p.tag} in the LBs' VPC`);
    for (const d of droplets) {
      if (d.vpcUuid !== lbVpc.id)
        problems.push(
          `ha-lb:pools: ${name}: the droplet ${d.name} (tag "${p.tag}") is in VPC ${d.vpcUuid}, but the LBs use VPC ${lbVpcName}, so the LBs cannot reach it; set ha-lb:vpcUuid to ${d.vpcUuid} to run the LBs in that VPC (this replaces the LB droplets), or create the droplet in VPC ${lbVpc.id}, or list its address in servers`,
        );
      else if (!d.ipv4AddressPrivate) problems.push(`ha-lb:pools: ${name}: the droplet ${d.name} (tag "${p.tag}") has no VPC address yet`);
    }
    const { tag: _tag, port, ...rest } = p;
    out[name] = { ...rest, servers: droplets.map((d) => `${d.ipv4AddressPrivate}:${port}`).sort() };
  }
  if (problems.length) throw new Error(`invalid stack configuration:\n  ${problems.join("\n  ")}`);
  return out;
}
