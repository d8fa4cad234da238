import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";

export interface NetworkArgs {
  region: string;
  /** Prefix for names and tags (the stack name). */
  prefix: string;
  ipRange?: pulumi.Input<string>;
  /**
   * An existing VPC for the LBs (ha-lb:vpcUuid), instead of one the stack creates: the VPC the
   * servers already live in. The witness is not in it either way: a VPC spans one region and the
   * witness runs in another, so it talks to the LBs over their public addresses (firewalls.ts).
   */
  vpcUuid?: string;
}

/** What the check of an existing VPC needs of it (digitalocean.getVpc gives more). */
export interface ExistingVpc {
  readonly id: string;
  readonly name: string;
  readonly region: string;
}

/** Pure: the id of an existing VPC the LBs may join, or an error saying why not. */
export function checkExistingVpc(vpc: ExistingVpc, region: string): string {
  if (vpc.region !== region)
    throw new Error(
      `invalid stack configuration:\n  ha-lb:vpcUuid: the VPC ${vpc.id} (${vpc.name}) is in region ${vpc.region}, not ${region} where the LBs run, and a droplet can only join a VPC of its own region; expected the id of a VPC in ${region} (doctl vpcs list)`,
    );
  return vpc.id;
}

/** The cluster's VPC and tags: one for the cluster, one per color (firewalls select by tag). */
export class Network extends pulumi.ComponentResource {
  /** The LBs' VPC: the stack's own, or ha-lb:vpcUuid once found in region (an invoke, so known at preview). */
  readonly vpcId: pulumi.Output<string>;
  /** The VPC the stack creates; absent with vpcUuid. */
  readonly vpc?: digitalocean.Vpc;
  readonly clusterTag: digitalocean.Tag;
  readonly colorTags: Record<"blue" | "green", digitalocean.Tag>;
  readonly witnessTag: digitalocean.Tag;

  constructor(name: string, args: NetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:Network", name, {}, opts);
    const p = { parent: this };
    if (args.vpcUuid) {
      this.vpcId = digitalocean.getVpcOutput({ id: args.vpcUuid }, p).apply((v) => checkExistingVpc(v, args.region));
    } else {
      this.vpc = new digitalocean.Vpc(
        `${name}-vpc`,
        { name: `${args.prefix}-ha-lb`, region: args.region, ipRange: args.ipRange, description: "ha-lb load balancers" },
        p,
      );
      this.vpcId = this.vpc.id;
    }
    this.clusterTag = new digitalocean.Tag(`${name}-tag`, { name: `${args.prefix}-ha-lb` }, p);
    this.witnessTag = new digitalocean.Tag(`${name}-tag-witness`, { name: `${args.prefix}-ha-lb-witness` }, p);
    this.colorTags = {
      blue: new digitalocean.Tag(`${name}-tag-blue`, { name: `${args.prefix}-ha-lb-blue` }, p),
      green: new digitalocean.Tag(`${name}-tag-green`, { name: `${args.prefix}-ha-lb-green` }, p),
    };
    this.registerOutputs({ vpcId: this.vpcId });
  }
}
