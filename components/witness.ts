import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import type * as tls from "@pulumi/tls";
import { hostKeyFor, hostKeyUserData } from "./host-key.js";

/** The smallest droplet size: the witness only votes. */
export const WITNESS_SIZE = "s-1vcpu-512mb-10gb";

export interface WitnessArgs {
  /** Another region than the LBs', so one datacenter outage cannot take a majority. */
  readonly region: pulumi.Input<string>;
  readonly sshKeys: pulumi.Input<string>[];
  /** The witness tag (its firewall selects by it). */
  readonly tags: pulumi.Input<string>[];
  readonly image: string;
  /** Droplet name and agent node id, `<stack>-witness`. */
  readonly name: string;
}

/** A small droplet in another region that votes but never leads. Peers reach it over the internet. */
export class Witness extends pulumi.ComponentResource {
  readonly droplet: digitalocean.Droplet;
  /** Its SSH host key (installed by userData, pinned by every connection). */
  readonly hostKey: tls.PrivateKey;
  constructor(name: string, args: WitnessArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:Witness", name, {}, opts);
    this.hostKey = hostKeyFor(args.name, { parent: this });
    this.droplet = new digitalocean.Droplet(
      args.name,
      {
        name: args.name,
        region: args.region,
        size: WITNESS_SIZE,
        image: args.image,
        sshKeys: args.sshKeys,
        monitoring: true,
        tags: args.tags,
        userData: hostKeyUserData("witness", this.hostKey),
      },
      // As for the LBs: the replacement first, then the old droplet's agent retires (hands over).
      { parent: this, deleteBeforeReplace: false },
    );
    this.registerOutputs({ name: args.name });
  }
}
