import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";

export interface ReservedIpArgs {
  /** The LBs' region: a Reserved IP can only be assigned to droplets in its region. */
  readonly region: string;
  /** Adopt this existing address (read with `get`, never modified or deleted by the stack). */
  readonly existing?: string;
  /** Keep the address on `pulumi destroy` (default in the stack config: true). */
  readonly retainOnDelete: boolean;
}

/**
 * The Reserved IP, with its region only: no dropletId and no ReservedIpAssignment, because the agents
 * own the assignment and `pulumi up` must never fight them. `ignoreChanges: ["dropletId"]` keeps a
 * refresh (which sees the agents' assignment) from turning into an unassign.
 */
export class ReservedIpComponent extends pulumi.ComponentResource {
  readonly ip: digitalocean.ReservedIp;
  readonly address: pulumi.Output<string>;
  constructor(name: string, args: ReservedIpArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:ReservedIp", name, {}, opts);
    if (args.existing) {
      this.ip = digitalocean.ReservedIp.get(`${name}-ip`, args.existing, undefined, { parent: this });
      // An address in another region could never be assigned to the LBs: say so at deploy time.
      this.address = pulumi.all([this.ip.ipAddress, this.ip.region]).apply(([ip, region]) => {
        if (region && region !== args.region)
          throw new Error(`ha-lb:reservedIp: ${args.existing} is in ${region}, not in ${args.region}; expected a Reserved IP in the LBs' region`);
        return ip;
      });
    } else {
      this.ip = new digitalocean.ReservedIp(
        `${name}-ip`,
        { region: args.region },
        { parent: this, retainOnDelete: args.retainOnDelete, ignoreChanges: ["dropletId"] },
      );
      this.address = this.ip.ipAddress;
    }
    this.registerOutputs({ address: this.address });
  }
}
