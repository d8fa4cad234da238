/**
 * The public component: the whole tier as one `ha-lb:index:Cluster`, usable from every Pulumi
 * language (`pulumi package add`). Pulumi infers its schema from this file's TypeScript, and that
 * inference supports neither unions nor references to other components: hence flat, plain fields
 * here, mapped onto the stack config and HaLbCluster (which stay the one home of the rules).
 */
import * as pulumi from "@pulumi/pulumi";
import { buildAgentBundle, type AgentBundle } from "../agent/build.js";
import { check, problemsOf, secret } from "../agent/schema.js";
import { HaLbCluster, sanitize } from "./cluster.js";
import { parseStackConfig, StackConfigError, type PublicStackConfig } from "./config.js";

/** The arguments of a Cluster. Every field but the two secrets is plain: it shapes the resources. */
export interface ClusterArgs {
  /** DigitalOcean region of the load balancers and the Reserved IP, e.g. nyc3. */
  region: string;
  /** Droplet image slug of every droplet (default ubuntu-24-04-x64). */
  image?: string;
  /** Droplet size slug of every load balancer (default s-1vcpu-1gb). */
  size?: string;
  /** Number of blue load balancers, 0 to 9 (default 2). */
  blueCount?: number;
  /** Number of green load balancers, 0 to 9 (default 0). */
  greenCount?: number;
  /** Droplet size slug of the blue load balancers (default: size). */
  blueSize?: string;
  /** Droplet size slug of the green load balancers (default: size). */
  greenSize?: string;
  /** The color that serves: "blue" or "green" (default blue). The IP moves only to a healthy leader of this color. */
  activeColor?: string;
  /** Region of the witness, a small voting droplet that never serves; must differ from region. Needed with 2 load balancers. */
  witnessRegion?: string;
  /** The id of an existing VPC in region to run the load balancers in (the backends' VPC), instead of a new one. */
  vpcUuid?: string;
  /** DigitalOcean SSH key IDs or fingerprints put on every droplet (at least one). */
  sshKeys: string[];
  /** CIDRs that may reach SSH (at least one), e.g. 203.0.113.0/24. */
  adminCidrs: string[];
  /** CIDRs that may scrape the agents' metrics port (default none). */
  metricsCidrs?: string[];
  /** Backends HAProxy forwards to, as host:port (at least one). */
  backends: string[];
  /** Ports HAProxy listens on (default [80]). */
  listenPorts?: number[];
  /** An existing Reserved IP in region to adopt instead of creating one. */
  reservedIp?: string;
  /** Keep the Reserved IP when the component is deleted (default true). */
  retainReservedIp?: boolean;
  /** Bump (1, 2, 3, …) to rotate the peers' shared key (default 1). */
  peerKeyGeneration?: number;
  /** Prefix of every droplet, tag and firewall name (default: the component's name, sanitized). */
  namePrefix?: string;
  /** Secret. A DigitalOcean API token with reserved_ip:update, which the agents use to move the IP. Wrapped with pulumi.secret. */
  agentToken: pulumi.Input<string>;
  /** Secret. The private key of one of sshKeys, used to install and restart the agents. Wrapped with pulumi.secret. */
  sshPrivateKey: pulumi.Input<string>;
}

/** One load balancer of the tier. */
export interface LoadBalancerInfo {
  /** Droplet name. */
  name: string;
  /** blue or green. */
  color: string;
  /** Public IPv4 address. */
  publicIp: string;
  /** VPC (private) IPv4 address. */
  privateIp: string;
}

/** The names of the secret inputs: wrapped with pulumi.secret by Cluster, listed in the README. */
export const CLUSTER_SECRET_ARGS = ["agentToken", "sshPrivateKey"] as const;

// Satisfies the stack config's schema for the two secrets, which are Inputs here and are checked on
// their own once they resolve (secretArg below); never deployed.
const SECRET_CHECKED_APART = "(checked apart)";

/**
 * Maps the args onto the stack config and validates them with its schema (components/config.ts),
 * so a Cluster and a stack accept the same values. Throws StackConfigError, one line per bad arg.
 */
export function clusterConfig(args: ClusterArgs): { config: PublicStackConfig; warnings: string[] } {
  const color = (count?: number, size?: string) => ({
    ...(count === undefined ? {} : { count }),
    ...(size === undefined ? {} : { size }),
  });
  const raw: Record<string, unknown> = {
    region: args.region,
    image: args.image,
    size: args.size,
    colors: { blue: color(args.blueCount, args.blueSize), green: color(args.greenCount, args.greenSize) },
    activeColor: args.activeColor,
    witnessRegion: args.witnessRegion,
    vpcUuid: args.vpcUuid,
    sshKeys: args.sshKeys,
    adminCidrs: args.adminCidrs,
    metricsCidrs: args.metricsCidrs,
    backends: args.backends,
    listenPorts: args.listenPorts,
    reservedIp: args.reservedIp,
    retainReservedIp: args.retainReservedIp,
    peerKeyGeneration: args.peerKeyGeneration,
  };
  const outputs = Object.keys(raw).filter((k) => holdsOutput(raw[k]));
  if (outputs.length)
    throw new StackConfigError(outputs.map((k) => `${k}: must be a plain value known before deployment (it shapes the resources), got an Output`));
  for (const k of Object.keys(raw)) if (raw[k] === undefined) delete raw[k];
  try {
    const { config, warnings } = parseStackConfig({ ...raw, agentToken: SECRET_CHECKED_APART, sshPrivateKey: SECRET_CHECKED_APART });
    const { agentToken: _t, sshPrivateKey: _k, ...rest } = config;
    return { config: rest, warnings: warnings.map(argsWording) };
  } catch (e) {
    if (e instanceof StackConfigError) throw new StackConfigError(e.lines.map(argsWording));
    throw e;
  }
}

/** True if the value is, or deeply holds, an Output (a value the engine resolves later). */
function holdsOutput(x: unknown, depth = 0): boolean {
  if (pulumi.Output.isInstance(x)) return true;
  if (depth > 4 || x === null || typeof x !== "object") return false;
  return Object.values(x).some((y) => holdsOutput(y, depth + 1));
}

/** The stack's messages name `ha-lb:<key>`; a Cluster's user set args, and colors are flat here. */
function argsWording(line: string): string {
  return line.replace(/^ha-lb:colors:/, "blueCount/greenCount/blueSize/greenSize:").replace(/^ha-lb:(\w+):/, "$1:");
}

/** A secret arg as a secret Output, checked when it resolves; the error gives its length, never the value. */
function secretArg(name: (typeof CLUSTER_SECRET_ARGS)[number], value: pulumi.Input<string>, what: string): pulumi.Output<string> {
  return pulumi.secret(value).apply((s) => {
    const r = check(secret(what), s);
    if (!r.ok)
      throw new Error(
        `ha-lb:index:Cluster: ${name}: ${problemsOf(r.issues)
          .map((p) => p.message)
          .join("; ")}`,
      );
    return r.value;
  });
}

/**
 * What a Cluster hands HaLbCluster, bundle aside: the validated config, and the secret args as
 * secret Outputs (pulumi.secret), whatever form the caller gave them in: a plain string from YAML
 * or another language is otherwise stored and shown in clear text.
 */
export function clusterInputs(
  name: string,
  args: ClusterArgs,
): { config: PublicStackConfig; warnings: string[]; agentToken: pulumi.Output<string>; sshPrivateKey: pulumi.Output<string>; prefix: string } {
  const { config, warnings } = clusterConfig(args);
  return {
    config,
    warnings,
    agentToken: secretArg("agentToken", args.agentToken, "a DigitalOcean token"),
    sshPrivateKey: secretArg("sshPrivateKey", args.sshPrivateKey, "a private key"),
    prefix: sanitize(args.namePrefix ?? name),
  };
}

// One bundle per process: every Cluster in a program ships the same build, and concurrent builds
// into dist/fipd.cjs would race.
let bundle: Promise<AgentBundle> | undefined;
const agentBundle = () => (bundle ??= buildAgentBundle());

/**
 * A highly available HAProxy tier behind one DigitalOcean Reserved IP: load balancers in two
 * colors, an optional witness, firewalls, and the fipd agent on every droplet, which moves the IP
 * to a healthy leader of the active color.
 */
export class Cluster extends pulumi.ComponentResource {
  /** The Reserved IP clients use. */
  readonly reservedIp: pulumi.Output<string>;
  /** The color that serves. */
  readonly activeColor: pulumi.Output<string>;
  /** Every load balancer, blue then green. */
  readonly loadBalancers: pulumi.Output<LoadBalancerInfo[]>;
  /** The witness's public IPv4 address; absent without witnessRegion. */
  readonly witnessIp: pulumi.Output<string | undefined>;
  /** The membership version the agents are told; it goes up by one when the set of droplets changes. */
  readonly membershipVersion: pulumi.Output<number>;

  constructor(name: string, args: ClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    // No args to super: they would be recorded as the component's inputs, secrets included.
    super("ha-lb:index:Cluster", name, {}, opts);
    const { config, warnings, agentToken, sshPrivateKey, prefix } = clusterInputs(name, args);
    for (const w of warnings) void pulumi.log.warn(w, this);
    const cluster = agentBundle().then(
      (b) => new HaLbCluster(name, { config, agentToken, sshPrivateKey, bundle: { path: b.path, sha256: b.sha256 }, prefix }, { parent: this }),
    );
    this.reservedIp = pulumi.output(cluster.then((c) => c.reservedIp));
    this.activeColor = pulumi.output(config.activeColor);
    this.loadBalancers = pulumi.output(cluster.then((c) => c.loadBalancers));
    this.witnessIp = pulumi.output(cluster.then((c) => c.witness)).apply((w) => w?.publicIp);
    this.membershipVersion = pulumi.output(cluster.then((c) => c.membershipVersion));
    this.registerOutputs({
      reservedIp: this.reservedIp,
      activeColor: this.activeColor,
      loadBalancers: this.loadBalancers,
      witnessIp: this.witnessIp,
      membershipVersion: this.membershipVersion,
    });
  }
}
