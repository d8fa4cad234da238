import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { bootstrapUserData } from "./cloud-init.js";

export interface LbNodeSpec {
  name: string;
  color: "blue" | "green";
  size: string;
  image: string;
}

export interface LoadBalancersArgs {
  region: pulumi.Input<string>;
  vpcUuid: pulumi.Input<string>;
  sshKeys: pulumi.Input<string>[];
  tags: pulumi.Input<string>[];
  colorTags: Record<"blue" | "green", pulumi.Input<string>>;
  nodes: LbNodeSpec[];
}

/**
 * The HAProxy droplets of both colors. Their inputs depend only on region, image, size, SSH keys,
 * VPC and tags: activeColor, backends, listen ports and secrets reach them later by command, so
 * changing those replaces no droplet.
 */
export class LoadBalancers extends pulumi.ComponentResource {
  readonly droplets: Array<{ spec: LbNodeSpec; droplet: digitalocean.Droplet }>;

  constructor(name: string, args: LoadBalancersArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:LoadBalancers", name, {}, opts);
    this.droplets = args.nodes.map((spec) => ({
      spec,
      droplet: new digitalocean.Droplet(
        spec.name,
        {
          name: spec.name,
          region: args.region,
          size: spec.size,
          image: spec.image,
          vpcUuid: args.vpcUuid,
          sshKeys: args.sshKeys,
          monitoring: true,
          ipv6: false,
          gracefulShutdown: true,
          tags: [...args.tags, args.colorTags[spec.color]],
          userData: bootstrapUserData("lb"),
        },
        // A replacement droplet is created before the old one goes, so the IP always has a home.
        { parent: this, deleteBeforeReplace: false },
      ),
    }));
    this.registerOutputs({ names: this.droplets.map((d) => d.spec.name) });
  }
}

export interface WitnessArgs {
  region: pulumi.Input<string>;
  sshKeys: pulumi.Input<string>[];
  tags: pulumi.Input<string>[];
  image: string;
  name: string;
}

/** A small droplet in another region that votes but never leads (libab's witness). */
export class Witness extends pulumi.ComponentResource {
  readonly droplet: digitalocean.Droplet;
  constructor(name: string, args: WitnessArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:Witness", name, {}, opts);
    this.droplet = new digitalocean.Droplet(
      args.name,
      { name: args.name, region: args.region, size: "s-1vcpu-512mb-10gb", image: args.image, sshKeys: args.sshKeys, monitoring: true, tags: args.tags, userData: bootstrapUserData("witness") },
      { parent: this },
    );
    this.registerOutputs({ name: args.name });
  }
}

export interface ReservedAddressArgs {
  region: pulumi.Input<string>;
  /** Adopt this existing address instead of creating one. */
  existing?: string;
  retainOnDelete: boolean;
}

/**
 * The Reserved IP, with its region only: no dropletId and no ReservedIpAssignment, because the agents
 * own the assignment and `pulumi up` must never fight them.
 */
export class ReservedAddress extends pulumi.ComponentResource {
  readonly ip: digitalocean.ReservedIp;
  readonly address: pulumi.Output<string>;
  constructor(name: string, args: ReservedAddressArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:ReservedAddress", name, {}, opts);
    this.ip = new digitalocean.ReservedIp(
      `${name}-ip`,
      { region: args.region },
      { parent: this, retainOnDelete: args.retainOnDelete, ...(args.existing ? { import: args.existing } : {}), ignoreChanges: ["dropletId"] },
    );
    this.address = this.ip.ipAddress;
    this.registerOutputs({ address: this.address });
  }
}
