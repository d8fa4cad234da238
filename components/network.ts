import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";

export interface NetworkArgs {
  region: pulumi.Input<string>;
  /** Prefix for names and tags (the stack name). */
  prefix: string;
  ipRange?: pulumi.Input<string>;
}

/** The cluster's VPC and tags: one for the cluster, one per color (firewalls select by tag). */
export class Network extends pulumi.ComponentResource {
  readonly vpc: digitalocean.Vpc;
  readonly clusterTag: digitalocean.Tag;
  readonly colorTags: Record<"blue" | "green", digitalocean.Tag>;
  readonly witnessTag: digitalocean.Tag;

  constructor(name: string, args: NetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:Network", name, {}, opts);
    const p = { parent: this };
    this.vpc = new digitalocean.Vpc(
      `${name}-vpc`,
      { name: `${args.prefix}-ha-lb`, region: args.region, ipRange: args.ipRange, description: "ha-lb load balancers" },
      p,
    );
    this.clusterTag = new digitalocean.Tag(`${name}-tag`, { name: `${args.prefix}-ha-lb` }, p);
    this.witnessTag = new digitalocean.Tag(`${name}-tag-witness`, { name: `${args.prefix}-ha-lb-witness` }, p);
    this.colorTags = {
      blue: new digitalocean.Tag(`${name}-tag-blue`, { name: `${args.prefix}-ha-lb-blue` }, p),
      green: new digitalocean.Tag(`${name}-tag-green`, { name: `${args.prefix}-ha-lb-green` }, p),
    };
    this.registerOutputs({ vpcId: this.vpc.id });
  }
}
