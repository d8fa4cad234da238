import * as command from "@pulumi/command";
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { HAPROXY_METRICS_PORT, METRICS_PORT, PEER_PORT } from "../agent/ports.js";
import { AgentDeployment, DIAL_ERROR_LIMIT } from "./agent-deployment.js";
import type { PublicStackConfig } from "./config.js";
import { acmeKeysFor } from "./acme-keys.js";
import { pemCertificates, type Certificates, type PemCertificate } from "./lb-config.js";
import { Firewalls } from "./firewalls.js";
import { LoadBalancers, type LbNodeSpec } from "./load-balancers.js";
import { Network } from "./network.js";
import { poolTags, resolveTaggedPools } from "./pool-servers.js";
import { memberIdsOf, planCluster, type ClusterPlan, type DropletFacts, type DropletPlan, type LbFacts } from "./plan.js";
import { ReservedIpComponent } from "./reserved-ip.js";
import { rollingOrder } from "./rolling-order.js";
import { switchColorCheckScript } from "./scripts.js";
import { Witness } from "./witness.js";

export interface HaLbClusterArgs {
  /** The validated stack config, without its secrets. */
  readonly config: PublicStackConfig;
  /** Secrets, as Outputs marked secret. */
  readonly agentToken: pulumi.Input<string>;
  readonly sshPrivateKey: pulumi.Input<string>;
  /** Secret: ha-lb:certificates, checked at preview (lb-config.ts). */
  readonly certificates?: pulumi.Input<Certificates>;
  /** The agent bundle (agent/build.ts), deployed by content hash. */
  readonly bundle: { path: string; sha256: string };
  /** The ACME child bundle (agent/build.ts buildAcmeBundle): required when a certificate uses ACME, shipped to the LBs only. */
  readonly acmeBundle?: { path: string; sha256: string };
  /** Prefix of every name (the stack name, sanitized). */
  readonly prefix: string;
}

/** The key material the plan hands out, by name (bound to the secret Outputs in HaLbCluster). */
export type KeyName = "agentToken" | `identity:${string}` | `previousIdentity:${string}` | `acme/${string}/${"account" | "key" | "eab"}`;

/**
 * The membership version, monotonic by construction: a counter kept in the state of one
 * `command.local.Command`, never read from a clock once it exists.
 *
 * - `create` (a new stack) seeds it with the Unix time. Only a new counter reads the clock: the
 *   stacks deployed before this counter hold a Unix time as their version, and should the resource
 *   ever be created again (state lost, `--replace`), the time still lands above any count reached
 *   since (one per membership change) unless the clock is far behind; the agents refuse a lower
 *   version and say so, so that case fails loudly rather than going backwards.
 * - `update` prints the previous stdout plus one. @pulumi/command 1.2.1 runs `update` when an input
 *   changes, with the previous stdout in PULUMI_COMMAND_STDOUT (addPreviousOutputInEnv, default
 *   true): provider/pkg/provider/local/commandController.go `Update` keeps `olds.BaseOutputs`, and
 *   commandOutputs.go `run` puts `out.Stdout` (trimmed of its final newline) in the environment.
 *   The trigger is the `environment` input carrying the member ids, not `triggers`: a change of
 *   `triggers` *replaces* the resource (the SDK's `replaceOnChanges: ["triggers[*]"]` in
 *   local/command.js, the provider's `provider:"replaceOnChanges"` tag), and a replacement runs
 *   `create` again without the previous value.
 * - `ignoreChanges: ["triggers"]`: the resource used to carry the member ids in `triggers`; the
 *   engine puts the old value back before diffing (processIgnoreChanges, PropertyPath.Reset: the
 *   old value where there is one, nothing where there is none), so dropping it updates the
 *   existing counter, above its Unix time, instead of replacing it.
 */
export const MEMBERSHIP_VERSION_CREATE = "date +%s";
export const MEMBERSHIP_VERSION_UPDATE = `set -eu
prev="\${PULUMI_COMMAND_STDOUT:-}"
case "$prev" in
  "" | 0* | *[!0-9]*)
    echo "ha-lb: membership version: the previous version (PULUMI_COMMAND_STDOUT) is '$prev', not a positive whole number; refusing to guess one, which could go backwards" >&2
    exit 1 ;;
esac
if [ \${#prev} -gt 15 ]; then echo "ha-lb: membership version: the previous version $prev is too large" >&2; exit 1; fi
next=$((prev + 1))
echo "ha-lb: membership version $prev -> $next (members: \${HALB_MEMBER_IDS:-?})" >&2
echo "$next"
`;
/** The environment variable whose value (the member ids) re-runs `update`. */
export const MEMBER_IDS_ENV = "HALB_MEMBER_IDS";

export function membershipVersionCommand(name: string, memberIds: pulumi.Input<string[]>, opts: pulumi.CustomResourceOptions): command.local.Command {
  return new command.local.Command(
    name,
    {
      create: MEMBERSHIP_VERSION_CREATE,
      update: MEMBERSHIP_VERSION_UPDATE,
      environment: { [MEMBER_IDS_ENV]: pulumi.output(memberIds).apply((ids) => ids.join(",")) },
      addPreviousOutputInEnv: true,
    },
    { ...opts, ignoreChanges: ["triggers"] },
  );
}

/** The command's stdout as a version: a positive safe integer, or the deploy fails here. */
export function parseMembershipVersion(stdout: string | undefined): number {
  const s = String(stdout ?? "").trim();
  const v = Number(s);
  if (!/^[1-9][0-9]*$/.test(s) || !Number.isSafeInteger(v)) {
    throw new Error(`membership version: expected a positive whole number on the version command's stdout, got ${JSON.stringify(stdout)}`);
  }
  return v;
}

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
  /** The membership version every agent is told (see membershipVersionCommand). */
  readonly membershipVersion: pulumi.Output<number>;
  /** What each droplet is told and shipped (plan.ts), key material by name. */
  readonly plan: pulumi.Output<ClusterPlan<KeyName>>;

  constructor(name: string, a: HaLbClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:HaLbCluster", name, {}, opts);
    const c = a.config;
    if (c.acme.length && !a.acmeBundle)
      throw new Error(
        `HaLbCluster ${name}: ACME certificates (${c.acme.map((x) => x.name).join(", ")}) need the ACME child bundle: pass acmeBundle (agent/build.ts buildAcmeBundle)`,
      );
    const p = { parent: this };
    const network = new Network(`${name}-network`, { region: c.region, prefix: a.prefix, vpcUuid: c.vpcUuid }, p);
    const specs = lbSpecs(c, a.prefix);
    const lbs = new LoadBalancers(
      `${name}-lbs`,
      {
        region: c.region,
        vpcUuid: network.vpcId,
        sshKeys: c.sshKeys,
        tags: [network.clusterTag.name],
        colorTags: { blue: network.colorTags.blue.name, green: network.colorTags.green.name },
        nodes: specs,
      },
      p,
    );
    const witnessName = `${a.prefix}-witness`;
    const witness = c.witnessRegion
      ? new Witness(`${name}-witness`, { region: c.witnessRegion, sshKeys: c.sshKeys, tags: [network.witnessTag.name], image: c.image, name: witnessName }, p)
      : null;
    const rip = new ReservedIpComponent(`${name}-reserved-ip`, { region: c.region, existing: c.reservedIp, retainOnDelete: c.retainReservedIp }, p);
    new Firewalls(
      `${name}-fw`,
      {
        prefix: a.prefix,
        lbTag: network.clusterTag.name,
        witnessTag: witness ? network.witnessTag.name : undefined,
        frontends: c.frontends,
        adminCidrs: c.adminCidrs,
        metricsCidrs: c.metricsCidrs,
        peerPort: PEER_PORT,
        metricsPort: METRICS_PORT,
        haproxyMetricsPort: HAPROXY_METRICS_PORT,
        witnessAddress: witness?.droplet.ipv4Address,
        lbPublicAddresses: lbs.droplets.map((d) => d.droplet.ipv4Address),
      },
      p,
    );

    // Identities (agent/identity.ts): one Ed25519 key pair per droplet, the witness's included, so a
    // member's key speaks only for that member. A key roll (`peerKeyGeneration` + 1) gives every
    // droplet a new pair, named by its generation: the pair of the generation before stays as the
    // previous identity, accepted while the new configs roll out (one `pulumi up`), and the one
    // before that is deleted. The key belongs to the droplet's name, so a replaced droplet's new
    // copy, briefly a second member beside the old one, signs with the same key (both are this stack's).
    const dropletNames = [...lbs.droplets.map((d) => d.spec.name), ...(witness ? [witnessName] : [])];
    const generation = c.peerKeyGeneration;
    const identityKey = (dropletName: string, g: number) => new tls.PrivateKey(`${dropletName}-identity-g${g}`, { algorithm: "ED25519" }, p);
    const identityKeys = dropletNames.map((n) => ({
      name: n,
      current: identityKey(n, generation),
      previous: generation > 1 ? identityKey(n, generation - 1) : null,
    }));

    // The membership version: a counter that only goes up, raised by one whenever the member ids
    // change (the agents then go through joint consensus). See membershipVersionCommand.
    const lbFacts = lbs.droplets.map(({ spec, droplet }) =>
      pulumi
        .all([droplet.id, droplet.ipv4Address, droplet.ipv4AddressPrivate])
        .apply(([id, pub, vpc]): LbFacts => ({ name: spec.name, color: spec.color, dropletId: id, publicAddress: pub, vpcAddress: vpc })),
    );
    const witnessFacts: pulumi.Output<DropletFacts | null> = witness
      ? pulumi.all([witness.droplet.id, witness.droplet.ipv4Address]).apply(([id, pub]) => ({ name: witnessName, dropletId: id, publicAddress: pub }))
      : pulumi.output(null);
    const memberIds = pulumi
      .all([
        pulumi.all(lbs.droplets.map(({ spec, droplet }) => droplet.id.apply((id) => ({ name: spec.name, dropletId: id })))),
        witness ? witness.droplet.id : undefined,
      ])
      .apply(([l, wid]) => memberIdsOf(l, wid === undefined ? null : { name: witnessName, dropletId: wid }));
    const epoch = membershipVersionCommand(`${name}-membership-epoch`, memberIds, p);
    const membershipVersion = epoch.stdout.apply(parseMembershipVersion);

    // What each droplet is told and shipped: one pure function (plan.ts) over the resolved values.
    // Key material enters the plan by name only and is bound to the secret Outputs here.
    // ACME certificates: their keys and placeholders (acme-keys.ts). Every LB gets the same keys.
    const acme = c.acme.map((x) => ({ spec: x, keys: acmeKeysFor(name, x, p) }));
    const certificates = pulumi.output(a.certificates ?? {});
    const acmeMaterial = pulumi
      .all([certificates, pulumi.all(acme.map(({ spec, keys }) => pulumi.all([spec.name, keys.accountKeyPem, keys.keyPem])))])
      .apply(([certs, keys]) => {
        const out: Partial<Record<KeyName, string>> = {};
        for (const [n, account, key] of keys) {
          out[`acme/${n}/account`] = account;
          out[`acme/${n}/key`] = key;
          out[`acme/${n}/eab`] = certs[n]?.acme?.eab?.hmacKey;
        }
        return out;
      });
    // The private keys are secret in the provider's state already; wrapped again so that nothing
    // built from them can lose the mark.
    const material = pulumi.secret(
      pulumi
        .all([
          a.agentToken,
          acmeMaterial,
          pulumi.all(identityKeys.map((k) => pulumi.all([k.current.privateKeyPem, k.previous ? k.previous.privateKeyPem : undefined]))),
        ])
        .apply(([agentToken, acmeKeys, pems]) => {
          const m: Partial<Record<KeyName, string>> = { ...acmeKeys, agentToken };
          identityKeys.forEach((k, i) => {
            m[`identity:${k.name}`] = pems[i][0];
            m[`previousIdentity:${k.name}`] = pems[i][1];
          });
          return m;
        }),
    );
    // Public keys are not secret: every member's config lists them all.
    const publicKeys = pulumi.all(identityKeys.map((k) => pulumi.all([k.current.publicKeyOpenssh, k.previous ? k.previous.publicKeyOpenssh : undefined])));
    // What HAProxy serves: the PEM certificates, and each ACME certificate's placeholder until fipd
    // has it issued (the install then prefers the issued chain).
    const served = pulumi.secret(
      pulumi
        .all([certificates, pulumi.all(acme.map(({ spec, keys }) => pulumi.all([spec.name, keys.placeholder])))])
        .apply(([certs, placeholders]): Record<string, PemCertificate> => ({ ...pemCertificates(certs), ...Object.fromEntries(placeholders) })),
    );
    // Pools given by tag: resolved to the tagged droplets' VPC addresses at every `pulumi up` (pool-servers.ts).
    const tagged = pulumi.all(
      Object.fromEntries(poolTags(c.pools).map((t) => [t, digitalocean.getDropletsOutput({ filters: [{ key: "tags", values: [t] }] }, p).droplets])),
    );
    // With ha-lb:vpcUuid the VPC's id is known at preview, so a droplet outside it fails the preview;
    // the stack's own VPC has an id only once created (a new stack then fails at its first `pulumi up`).
    const pools = pulumi.all([tagged, network.vpcId]).apply(([byTag, id]) => resolveTaggedPools(c.pools, byTag, { id, fromConfig: c.vpcUuid !== undefined }));
    const plan = pulumi
      .all([pulumi.all(lbFacts), witnessFacts, rip.address, membershipVersion, pools, publicKeys])
      .apply(([l, w, ip, version, resolved, pubs]) =>
        planCluster<KeyName>({
          config: { ...c, pools: resolved },
          lbs: l,
          witness: w,
          reservedIp: ip,
          membershipVersion: version,
          keys: {
            agentToken: "agentToken",
            identities: Object.fromEntries(
              identityKeys.map((k, i) => [
                k.name,
                {
                  publicKey: pubs[i][0].trim(),
                  key: `identity:${k.name}` as const,
                  ...(pubs[i][1] !== undefined ? { previous: { publicKey: pubs[i][1].trim(), key: `previousIdentity:${k.name}` as const } } : {}),
                },
              ]),
            ),
            acme: Object.fromEntries(
              c.acme.map((x) => [
                x.name,
                {
                  accountKey: `acme/${x.name}/account` as const,
                  key: `acme/${x.name}/key` as const,
                  ...(x.eabKid !== undefined ? { eabHmacKey: `acme/${x.name}/eab` as const } : {}),
                },
              ]),
            ),
          },
        }),
      );
    const planned = (dropletName: string) =>
      plan.apply((pl) => {
        const d = pl.droplets.find((x) => x.name === dropletName);
        if (!d) throw new Error(`plan: no droplet named ${dropletName} (have ${pl.droplets.map((x) => x.name).join(", ")})`);
        return d;
      });
    const bind = (d: pulumi.Output<DropletPlan<KeyName>>, pick: (s: DropletPlan<KeyName>["secrets"]) => KeyName | undefined) =>
      pulumi.all([d, material]).apply(([x, m]) => {
        const ref = pick(x.secrets);
        return ref ? m[ref] : undefined;
      });
    const shipped = (d: pulumi.Output<DropletPlan<KeyName>>) => ({
      agentConfig: d.apply((x) => x.agentConfig),
      token: bind(d, (s) => s.agentToken),
      identityKey: bind(d, (s) => s.identityKey).apply((k) => {
        if (!k) throw new Error("plan: a droplet without an identity key");
        return k;
      }),
      previousIdentityKey: bind(d, (s) => s.previousIdentityKey),
      acme: pulumi.all([d, material]).apply(([x, m]) =>
        x.secrets.acme?.map((s) => {
          const get = (ref: KeyName) => {
            const value = m[ref];
            if (!value) throw new Error(`plan: no key material for ${ref}`);
            return value;
          };
          return {
            ...s,
            accountKey: get(s.accountKey),
            key: get(s.key),
            ...(s.eabHmacKey !== undefined ? { eabHmacKey: get(s.eabHmacKey) } : {}),
          };
        }),
      ),
    });

    let after: pulumi.Resource | undefined;
    let configAfter: pulumi.Resource | undefined;
    const deployments: AgentDeployment[] = (this.deployments = []);
    // Restarts chain in rollingOrder: the standby color first (a broken bundle fails the deploy
    // before it touches the color that serves), then the color in force, then the witness.
    const order = rollingOrder(
      lbs.droplets.map(({ spec }, i) => ({ name: spec.name, color: spec.color, i })),
      c.activeColor,
    );
    for (const { i } of order) {
      const { spec, droplet, hostKey } = lbs.droplets[i];
      const d = planned(spec.name);
      const dep = new AgentDeployment(
        `${name}-agent-${spec.name}`,
        {
          role: "lb",
          host: droplet.ipv4Address,
          privateKey: a.sshPrivateKey,
          hostKey: hostKey.publicKeyOpenssh,
          dropletId: droplet.id,
          bundle: a.bundle,
          ...(c.acme.length ? { acmeBundle: a.acmeBundle } : {}),
          ...shipped(d),
          haproxy: d.apply((x) => {
            if (!x.haproxy) throw new Error(`plan: the load balancer ${x.name} has no HAProxy options`);
            return x.haproxy;
          }),
          certificates: served,
          after,
          configAfter,
        },
        p,
      );
      after = dep.restart;
      configAfter = dep.applyConfig;
      deployments.push(dep);
    }
    if (witness) {
      const d = new AgentDeployment(
        `${name}-agent-witness`,
        {
          role: "witness",
          host: witness.droplet.ipv4Address,
          privateKey: a.sshPrivateKey,
          hostKey: witness.hostKey.publicKeyOpenssh,
          dropletId: witness.droplet.id,
          bundle: a.bundle,
          ...shipped(planned(witnessName)),
          after,
          configAfter,
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
          connection: {
            host: first.droplet.ipv4Address,
            user: "root",
            privateKey: pulumi.secret(a.sshPrivateKey),
            hostKey: first.hostKey.publicKeyOpenssh,
            dialErrorLimit: DIAL_ERROR_LIMIT,
          },
          create: switchColorCheckScript(c.activeColor),
          // The key generation: a key roll alone runs the check again, which prints when the old key was retired.
          triggers: [
            c.activeColor,
            membershipVersion,
            a.bundle.sha256,
            JSON.stringify(c.failover ?? {}),
            String(c.peerKeyGeneration),
            ...lbs.droplets.map((d) => d.droplet.id),
          ],
        },
        { ...p, dependsOn: [...deployments.flatMap((d) => [d.applyConfig, d.restart]), ...leaderRestarts] },
      );
    }

    this.membershipVersion = membershipVersion;
    this.plan = plan;
    this.reservedIp = rip.address;
    this.loadBalancers = pulumi.all(
      lbs.droplets.map(({ spec, droplet }) =>
        pulumi
          .all([droplet.ipv4Address, droplet.ipv4AddressPrivate])
          .apply(([pub, priv]) => ({ name: spec.name, color: spec.color, publicIp: pub, privateIp: priv })),
      ),
    );
    this.witness = witness ? witness.droplet.ipv4Address.apply((ip) => ({ name: witnessName, region: c.witnessRegion!, publicIp: ip })) : pulumi.output(null);
    this.registerOutputs({ reservedIp: this.reservedIp, loadBalancers: this.loadBalancers, witness: this.witness });
  }
}
