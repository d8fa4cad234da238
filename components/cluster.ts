import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { AgentConfigInput, Member } from "../agent/config.js";
import { AgentDeployment } from "./agent-deployment.js";
import type { PublicStackConfig } from "./config.js";
import { Firewalls } from "./firewalls.js";
import { LoadBalancers, type LbNodeSpec } from "./load-balancers.js";
import { Network } from "./network.js";
import { ReservedIpComponent } from "./reserved-ip.js";
import { rollingOrder } from "./rolling-order.js";
import { switchColorCheckScript } from "./scripts.js";
import { Witness } from "./witness.js";

export const PEER_PORT = 7946;
export const METRICS_PORT = 9465;

export interface HaLbClusterArgs {
  /** The validated stack config, without its secrets. */
  readonly config: PublicStackConfig;
  /** Secrets, as Outputs marked secret. */
  readonly agentToken: pulumi.Input<string>;
  readonly sshPrivateKey: pulumi.Input<string>;
  /** The agent bundle (agent/build.ts), deployed by content hash. */
  readonly bundle: { path: string; sha256: string };
  /** Prefix of every name (the stack name, sanitized). */
  readonly prefix: string;
}

/**
 * A node id is the droplet's name plus its droplet ID. A replaced droplet (new image or size) keeps
 * its name but gets a new ID, so for the minutes both run, the old and the new agent are two
 * distinct members: the new one joins (membership change, joint consensus) before the old one
 * leaves, and no two processes ever speak under one id.
 */
export const nodeIdOf = (dropletName: string, dropletId: string | number) => `${dropletName}-${dropletId}`;

/** Droplet names: lowercase letters, digits and '-'. */
export const sanitize = (s: string) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 40) || "stack";

export function lbSpecs(c: PublicStackConfig, prefix: string): LbNodeSpec[] {
  const out: LbNodeSpec[] = [];
  for (const color of ["blue", "green"] as const) {
    const entry = c.colors[color];
    for (let n = 1; n <= entry.count; n++) out.push({ name: `${prefix}-lb-${color}-${n}`, color, size: entry.size ?? c.size, image: entry.image ?? c.image });
  }
  return out;
}

/** The whole tier: network, droplets, Reserved IP, firewalls and the agents on every droplet. */
export class HaLbCluster extends pulumi.ComponentResource {
  readonly reservedIp: pulumi.Output<string>;
  readonly loadBalancers: pulumi.Output<Array<{ name: string; color: string; publicIp: string; privateIp: string }>>;
  readonly witness: pulumi.Output<{ name: string; region: string; publicIp: string } | null>;
  /** Per droplet, in rolling order (rollingOrder: the standby color, the color in force, the witness). */
  readonly deployments: AgentDeployment[];
  /** The once-per-update check that the requested color is in force. */
  readonly switchCheck?: command.remote.Command;

  constructor(name: string, a: HaLbClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:HaLbCluster", name, {}, opts);
    const c = a.config;
    const p = { parent: this };
    const network = new Network(`${name}-network`, { region: c.region, prefix: a.prefix }, p);
    const specs = lbSpecs(c, a.prefix);
    const lbs = new LoadBalancers(
      `${name}-lbs`,
      {
        region: c.region,
        vpcUuid: network.vpc.id,
        sshKeys: c.sshKeys,
        tags: [network.clusterTag.name],
        colorTags: { blue: network.colorTags.blue.name, green: network.colorTags.green.name },
        nodes: specs,
      },
      p,
    );
    const witness = c.witnessRegion
      ? new Witness(
          `${name}-witness`,
          { region: c.witnessRegion, sshKeys: c.sshKeys, tags: [network.witnessTag.name], image: c.image, name: `${a.prefix}-witness` },
          p,
        )
      : null;
    const rip = new ReservedIpComponent(`${name}-reserved-ip`, { region: c.region, existing: c.reservedIp, retainOnDelete: c.retainReservedIp }, p);
    new Firewalls(
      `${name}-fw`,
      {
        prefix: a.prefix,
        lbTag: network.clusterTag.name,
        witnessTag: witness ? network.witnessTag.name : undefined,
        listenPorts: c.listenPorts,
        adminCidrs: c.adminCidrs,
        metricsCidrs: c.metricsCidrs,
        peerPort: PEER_PORT,
        metricsPort: METRICS_PORT,
        witnessAddress: witness?.droplet.ipv4Address,
        lbPublicAddresses: lbs.droplets.map((d) => d.droplet.ipv4Address),
      },
      p,
    );

    // Peer keys: two slots; bumping the generation regenerates only the slot that becomes current,
    // so the other one is the previous key, still accepted while the new config rolls out.
    const slot = (i: 0 | 1) =>
      new random.RandomBytes(
        `${name}-peer-key-${i}`,
        { length: 32, keepers: { generation: String(c.peerKeyGeneration - ((c.peerKeyGeneration - i) % 2 === 0 ? 0 : 1)) } },
        p,
      );
    const slots = [slot(0), slot(1)];
    const current = slots[c.peerKeyGeneration % 2].hex;
    const previous = c.peerKeyGeneration > 1 ? slots[(c.peerKeyGeneration + 1) % 2].hex : undefined;

    // The membership version changes (to the deploy's Unix time, so it only grows) when the list of
    // member ids changes; the agents then go through joint consensus.
    const lbIds = lbs.droplets.map(({ spec, droplet }) => droplet.id.apply((id) => nodeIdOf(spec.name, id)));
    const witnessId = witness ? witness.droplet.id.apply((id) => nodeIdOf(`${a.prefix}-witness`, id)) : pulumi.output("");
    const memberIds = pulumi.all([pulumi.all(lbIds), witnessId]).apply(([l, w]) => [...l, ...(w ? [w] : [])]);
    const epoch = new command.local.Command(`${name}-membership-epoch`, { create: "date +%s", triggers: [memberIds.apply((ids) => ids.join(","))] }, p);
    const membershipVersion = epoch.stdout.apply((s) => {
      const v = Number(String(s ?? "").trim());
      if (!Number.isInteger(v) || v < 1) throw new Error(`membership epoch: expected a Unix time from \`date +%s\`, got ${JSON.stringify(s)}`);
      return v;
    });

    const lbPrivate = lbs.droplets.map((d) => d.droplet.ipv4AddressPrivate);
    const lbPublic = lbs.droplets.map((d) => d.droplet.ipv4Address);
    const witnessPublic = witness?.droplet.ipv4Address;
    const membersFor = (viewFromWitness: boolean) =>
      pulumi
        .all([pulumi.all(viewFromWitness ? lbPublic : lbPrivate), witnessPublic ?? pulumi.output(""), pulumi.all(lbIds), witnessId])
        .apply(([addrs, w, ids, wid]) => {
          const ms: Member[] = specs.map((s, i) => ({ id: ids[i], address: addrs[i], port: PEER_PORT, role: "lb", color: s.color, priority: 100 }));
          if (witness) ms.push({ id: wid, address: w, port: PEER_PORT, role: "witness", priority: 100 });
          return ms;
        });
    const agentConfig = (nodeId: pulumi.Input<string>, role: "lb" | "witness", ip: pulumi.Output<string>): pulumi.Output<AgentConfigInput> =>
      pulumi.all([membersFor(role === "witness"), membershipVersion, ip, nodeId]).apply(([members, version, , nodeId]) => ({
        nodeId,
        membershipVersion: version,
        members,
        activeColor: c.activeColor,
        listen: { address: "0.0.0.0", port: PEER_PORT },
        ...(c.failover ? { failover: c.failover } : {}),
        metrics: { enabled: true, address: c.metricsCidrs.length ? "0.0.0.0" : "127.0.0.1", port: METRICS_PORT },
        logLevel: "info" as const,
      }));

    let after: pulumi.Resource | undefined;
    const deployments: AgentDeployment[] = (this.deployments = []);
    // Restarts chain in rollingOrder: the standby color first (a broken bundle fails the deploy
    // before it touches the color that serves), then the color in force, then the witness.
    const order = rollingOrder(
      lbs.droplets.map(({ spec }, i) => ({ name: spec.name, color: spec.color, i })),
      c.activeColor,
    );
    for (const { i } of order) {
      const { spec, droplet } = lbs.droplets[i];
      const d = new AgentDeployment(
        `${name}-agent-${spec.name}`,
        {
          role: "lb",
          host: droplet.ipv4Address,
          privateKey: a.sshPrivateKey,
          dropletId: droplet.id,
          bundle: a.bundle,
          agentConfig: pulumi
            .all([agentConfig(lbIds[i], "lb", droplet.ipv4Address), rip.address, droplet.id])
            .apply(([cfg, ip, id]) => ({ ...cfg, reservedIp: ip, dropletId: Number(id) })),
          token: a.agentToken,
          peerKey: current,
          previousPeerKey: previous,
          haproxy: { listenPorts: c.listenPorts, backends: c.backends, serverName: spec.name },
          after,
        },
        p,
      );
      after = d.restart;
      deployments.push(d);
    }
    if (witness) {
      const d = new AgentDeployment(
        `${name}-agent-witness`,
        {
          role: "witness",
          host: witness.droplet.ipv4Address,
          privateKey: a.sshPrivateKey,
          dropletId: witness.droplet.id,
          bundle: a.bundle,
          agentConfig: agentConfig(witnessId, "witness", witness.droplet.ipv4Address),
          peerKey: current,
          previousPeerKey: previous,
          after,
        },
        p,
      );
      deployments.push(d);
      after = d.restart;
    }
    // Second pass of a roll: the agent that led during the first pass restarts now, after a handover
    // to a droplet already on the new bundle (the others are no-ops).
    const leaderRestarts: command.remote.Command[] = [];
    for (const d of deployments) {
      const r: command.remote.Command = d.addLeaderRestart(leaderRestarts[leaderRestarts.length - 1] ?? after!);
      leaderRestarts.push(r);
    }

    // After any config change: wait until a leader of the requested color holds the IP. A switch to a
    // color with no healthy node fails here, loudly (`pulumi up` reports it), and the IP stays where
    // it is. Its triggers are what can move the IP; a change replaces it, i.e. runs it again.
    const first = lbs.droplets.find((d) => d.spec.color === c.activeColor) ?? lbs.droplets[0];
    if (first) {
      this.switchCheck = new command.remote.Command(
        `${name}-switch-check`,
        {
          connection: { host: first.droplet.ipv4Address, user: "root", privateKey: pulumi.secret(a.sshPrivateKey), dialErrorLimit: 40 },
          create: switchColorCheckScript(c.activeColor),
          triggers: [c.activeColor, membershipVersion, a.bundle.sha256, JSON.stringify(c.failover ?? {}), ...lbs.droplets.map((d) => d.droplet.id)],
        },
        { ...p, dependsOn: [...deployments.flatMap((d) => [d.applyConfig, d.restart]), ...leaderRestarts] },
      );
    }

    this.reservedIp = rip.address;
    this.loadBalancers = pulumi.all(
      lbs.droplets.map(({ spec, droplet }) =>
        pulumi
          .all([droplet.ipv4Address, droplet.ipv4AddressPrivate])
          .apply(([pub, priv]) => ({ name: spec.name, color: spec.color, publicIp: pub, privateIp: priv })),
      ),
    );
    this.witness = witness
      ? witness.droplet.ipv4Address.apply((ip) => ({ name: `${a.prefix}-witness`, region: c.witnessRegion!, publicIp: ip }))
      : pulumi.output(null);
    this.registerOutputs({ reservedIp: this.reservedIp, loadBalancers: this.loadBalancers, witness: this.witness });
  }
}
