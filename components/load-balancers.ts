import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import type * as tls from "@pulumi/tls";
import { hostKeyFor, hostKeyUserData } from "./host-key.js";

export type Color = "blue" | "green";

export interface LbNodeSpec {
  /** `<stack>-lb-<color>-<n>`; the agent's node id is this name plus the droplet ID (nodeIdOf). */
  name: string;
  color: Color;
  size: string;
  image: string;
}

export interface LoadBalancersArgs {
  /** DigitalOcean region slug, e.g. nyc3. */
  readonly region: pulumi.Input<string>;
  /** The cluster VPC: peers talk over its private addresses. */
  readonly vpcUuid: pulumi.Input<string>;
  /** SSH key IDs or fingerprints (ForceNew on the droplet). */
  readonly sshKeys: pulumi.Input<string>[];
  /** Tags every LB gets (the cluster tag: firewalls select by it). */
  readonly tags: pulumi.Input<string>[];
  /** The tag per color. */
  readonly colorTags: Record<Color, pulumi.Input<string>>;
  /** One entry per droplet (plain: the list drives the resource shape). */
  readonly nodes: LbNodeSpec[];
}

/**
 * The HAProxy droplets of both colors. Their inputs depend only on region, image, size, SSH keys,
 * VPC and tags: activeColor, backends, listen ports and secrets reach them later by command, so
 * changing those replaces no droplet.
 */
export class LoadBalancers extends pulumi.ComponentResource {
  /** Per droplet: its spec, the droplet, and its SSH host key (installed by userData, pinned by every connection). */
  readonly droplets: Array<{ spec: LbNodeSpec; droplet: digitalocean.Droplet; hostKey: tls.PrivateKey }>;

  constructor(name: string, args: LoadBalancersArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:LoadBalancers", name, {}, opts);
    this.droplets = args.nodes.map((spec) => {
      const hostKey = hostKeyFor(spec.name, { parent: this });
      const droplet = new digitalocean.Droplet(
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
          userData: hostKeyUserData("lb", hostKey),
        },
        // A replacement droplet is created (and configured) before the old one is deleted, so the
        // IP always has a home; the old one's agent hands over first (AgentDeployment's delete).
        { parent: this, deleteBeforeReplace: false },
      );
      return { spec, droplet, hostKey };
    });
    this.registerOutputs({ names: this.droplets.map((d) => d.spec.name) });
  }
}
