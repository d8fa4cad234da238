/**
 * The per-droplet plan: what every droplet's agent is told (its node id, its config, its member
 * list) and what the deploy ships it (key material, HAProxy options), as one pure function of plain
 * values. No `@pulumi/*` import and no I/O: `HaLbCluster` calls it inside one `apply` over the
 * resolved Outputs, and the network test bed (testbed/netbed/bed.ts) calls the same function with
 * its own addresses, so the bed runs exactly what the stack would send.
 *
 * To extend it (say, a certificate per droplet): add the field to `DropletPlan`, fill it in
 * `planDroplet`, and ship it from `AgentDeployment`; the bed and the unit tests see it at once.
 */
import type { AgentConfigInput, Color, Member } from "../agent/config.js";
import { ACME_RESPONDER_PORT, ANY_IPV4, LOOPBACK_IPV4, METRICS_PORT, PEER_PORT } from "../agent/ports.js";
import { maxconnForSize, type HaproxyOptions } from "./haproxy.js";
import type { AcmeCertificate, Frontend, Pool } from "./lb-config.js";

/**
 * A node id is the droplet's name plus its droplet ID. A replaced droplet (new image or size) keeps
 * its name but gets a new ID, so for the minutes both run, the old and the new agent are two
 * distinct members: the new one joins (membership change, joint consensus) before the old one
 * leaves, and no two processes ever speak under one id.
 */
export const nodeIdOf = (dropletName: string, dropletId: string | number) => `${dropletName}-${dropletId}`;

/**
 * The part of the validated stack config the plan reads (`PublicStackConfig` is one). Listed here so
 * the bed, which has no full stack config, can supply just these.
 */
export interface PlanConfig {
  readonly activeColor: Color;
  /** Who may scrape metrics: when empty, metrics stay on loopback. */
  readonly metricsCidrs: readonly string[];
  /** Timing overrides; the agent's defaults otherwise. */
  readonly failover?: AgentConfigInput["failover"];
  /** The short form (the bed uses it): one pool behind http frontends. */
  readonly listenPorts?: readonly number[];
  readonly backends?: readonly string[];
  /** The long form (lb-config.ts); PublicStackConfig always has it, the short form normalized. */
  readonly frontends?: readonly Frontend[];
  readonly pools?: Readonly<Record<string, Pool>>;
  readonly maxconn?: number;
  /** Droplet sizes (PublicStackConfig has them): HAProxy's maxconn follows the LB's memory unless maxconn is set. */
  readonly size?: string;
  readonly colors?: Readonly<Record<Color, { readonly size?: string }>>;
  /** Certificates the LBs obtain over ACME (lb-config.ts acmeCertificates); none by default. */
  readonly acme?: readonly AcmeCertificate[];
}

/** What the plan needs to know of a droplet once it exists. */
export interface DropletFacts {
  /** The droplet's name, e.g. `prod-lb-blue-1` or `prod-witness`. */
  readonly name: string;
  /** Its droplet ID (Pulumi gives it as a string, the API as a number). */
  readonly dropletId: string | number;
  /** Its public IPv4 address: SSH, and the peer address between the witness and the LBs. */
  readonly publicAddress: string;
}
export interface LbFacts extends DropletFacts {
  readonly color: Color;
  /** Its VPC (private) IPv4 address: the peer address between LBs. */
  readonly vpcAddress: string;
}

/**
 * References to key material, never the material itself: the stack passes names and binds them to
 * secret Outputs after planning, the bed passes the values it generated. The plan only decides who
 * gets what.
 */
export interface KeyRefs<K> {
  /** The agents' DigitalOcean token: LBs only (the witness never calls the API). */
  readonly agentToken: K;
  /**
   * Each droplet's identity (agent/identity.ts), by droplet name, the witness's included: its public
   * keys go to every member's config, its private keys to its own droplet only.
   */
  readonly identities: Readonly<Record<string, DropletIdentity<K>>>;
  /** Per ACME certificate name (LBs only): its account key, its certificate key, its EAB HMAC key if any. */
  readonly acme?: Readonly<Record<string, AcmeKeyRefs<K>>>;
}

/** One droplet's identity: public keys in OpenSSH form (not secret), private keys by reference. */
export interface DropletIdentity<K> {
  readonly publicKey: string;
  readonly key: K;
  /** During a key roll (`peerKeyGeneration` above 1): the previous identity, still accepted. */
  readonly previous?: { readonly publicKey: string; readonly key: K };
}
export interface AcmeKeyRefs<K> {
  readonly accountKey: K;
  readonly key: K;
  readonly eabHmacKey?: K;
}

/** What an LB receives on its secret stdin for one ACME certificate (apply-config writes it under /etc/fipd/acme). */
export interface AcmeShipment<K> extends AcmeKeyRefs<K> {
  readonly name: string;
  /** The directory's CA (public), when it is not publicly trusted. */
  readonly directoryCaPem?: string;
}

export interface PlanInput<K> {
  readonly config: PlanConfig;
  /** The LB droplets, both colors. */
  readonly lbs: readonly LbFacts[];
  readonly witness: DropletFacts | null;
  /** The Reserved IP's address (LBs assign it; the witness never does). */
  readonly reservedIp: string;
  /** The membership version (see `HaLbCluster`): raised whenever `memberIdsOf` changes. */
  readonly membershipVersion: number;
  readonly keys: KeyRefs<K>;
}

export interface DropletPlan<K> {
  readonly name: string;
  readonly role: "lb" | "witness";
  readonly color: Color | null;
  readonly nodeId: string;
  readonly dropletId: number;
  /** Where the deploy reaches it over SSH. */
  readonly host: string;
  /** Its agent config (no secret in it), as `fipd apply-config` receives it. */
  readonly agentConfig: AgentConfigInput;
  /** The key material it must receive on secret stdin: the token (LBs), its own identity keys (nobody else's) and the ACME keys (LBs). */
  readonly secrets: {
    readonly agentToken?: K;
    readonly identityKey: K;
    readonly previousIdentityKey?: K;
    readonly acme?: readonly AcmeShipment<K>[];
  };
  /** What its HAProxy config is rendered from (LBs only). */
  readonly haproxy: HaproxyOptions | null;
}

export interface ClusterPlan<K> {
  readonly membershipVersion: number;
  /** Every member's node id, LBs first in input order, then the witness. */
  readonly memberIds: readonly string[];
  /** One plan per droplet, in the same order. */
  readonly droplets: readonly DropletPlan<K>[];
}

function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(`plan: ${message}`);
}

/** Enough of a droplet to name its agent. */
export type DropletId = Pick<DropletFacts, "name" | "dropletId">;

function dropletIdOf(d: DropletId): number {
  const id = typeof d.dropletId === "number" ? d.dropletId : Number(d.dropletId);
  assert(Number.isSafeInteger(id) && id > 0, `${d.name}: droplet ID ${JSON.stringify(d.dropletId)} is not a positive integer`);
  return id;
}

/**
 * The member ids, in plan order. The stack raises the membership version exactly when this list
 * changes, so it is computed here, once, for both the version and the plan.
 */
export function memberIdsOf(lbs: readonly DropletId[], witness: DropletId | null): string[] {
  return [...lbs, ...(witness ? [witness] : [])].map((d) => nodeIdOf(d.name, dropletIdOf(d)));
}

/**
 * The member list as one node sees it: LBs talk over the VPC, but the witness is in another region
 * and has no VPC with them, so it and the LBs reach each other on public addresses.
 */
function membersSeenFrom(view: "lb" | "witness", input: PlanInput<unknown>): Member[] {
  const members: Member[] = input.lbs.map((lb) => ({
    id: nodeIdOf(lb.name, dropletIdOf(lb)),
    address: view === "witness" ? lb.publicAddress : lb.vpcAddress,
    port: PEER_PORT,
    role: "lb",
    color: lb.color,
    priority: 100,
  }));
  const w = input.witness;
  if (w) members.push({ id: nodeIdOf(w.name, dropletIdOf(w)), address: w.publicAddress, port: PEER_PORT, role: "witness", priority: 100 });
  return members;
}

function identityOf<K>(input: PlanInput<K>, name: string): DropletIdentity<K> {
  const id = input.keys.identities[name];
  assert(id, `${name} has no identity (have ${Object.keys(input.keys.identities).join(", ") || "none"})`);
  return id;
}

/** Every member's public keys, in member order: what each config lists. */
function publicKeysOf(input: PlanInput<unknown>): Array<{ id: string; publicKey: string; previousPublicKey?: string }> {
  return [...input.lbs, ...(input.witness ? [input.witness] : [])].map((d) => {
    const k = identityOf(input, d.name);
    return { id: nodeIdOf(d.name, dropletIdOf(d)), publicKey: k.publicKey, ...(k.previous ? { previousPublicKey: k.previous.publicKey } : {}) };
  });
}

function planDroplet<K>(input: PlanInput<K>, d: DropletFacts, lb: LbFacts | null): DropletPlan<K> {
  const c = input.config;
  const acme = c.acme ?? [];
  const role = lb ? "lb" : "witness";
  const dropletId = dropletIdOf(d);
  const nodeId = nodeIdOf(d.name, dropletId);
  const agentConfig: AgentConfigInput = {
    nodeId,
    membershipVersion: input.membershipVersion,
    members: membersSeenFrom(role, input),
    activeColor: c.activeColor,
    // Only an LB assigns the Reserved IP; its droplet ID saves a metadata lookup at start.
    ...(lb ? { reservedIp: input.reservedIp, dropletId } : {}),
    listen: { address: ANY_IPV4, port: PEER_PORT },
    ...(c.failover ? { failover: c.failover } : {}),
    // The firewalls open the metrics port to metricsCidrs only; without them, nobody outside may scrape.
    metrics: { enabled: true, address: c.metricsCidrs.length ? ANY_IPV4 : LOOPBACK_IPV4, port: METRICS_PORT },
    // Every member's public keys; apply-config sets the key files.
    peerAuth: { publicKeys: publicKeysOf(input) },
    logLevel: "info",
    // Only LBs order and serve ACME certificates; the key files and the directory's CA are written by
    // apply-config, which points the config at them (keyDir, directoryCaFile).
    ...(lb && acme.length
      ? {
          acme: {
            certificates: acme.map((a) => ({
              name: a.name,
              domains: [...a.domains],
              email: a.email,
              directoryUrl: a.directoryUrl,
              ...(a.eabKid !== undefined ? { eabKid: a.eabKid } : {}),
            })),
          },
        }
      : {}),
  };
  const k = input.keys;
  const own = identityOf(input, d.name);
  const acmeShipments = acme.map((a): AcmeShipment<K> => {
    const refs = k.acme?.[a.name];
    assert(refs, `the ACME certificate ${a.name} has no key references`);
    assert((refs.eabHmacKey !== undefined) === (a.eabKid !== undefined), `the ACME certificate ${a.name}: an EAB key id goes with an EAB HMAC key`);
    return { name: a.name, ...refs, ...(a.directoryCaPem !== undefined ? { directoryCaPem: a.directoryCaPem } : {}) };
  });
  return {
    name: d.name,
    role,
    color: lb ? lb.color : null,
    nodeId,
    dropletId,
    host: d.publicAddress,
    agentConfig,
    secrets: {
      ...(lb ? { agentToken: k.agentToken } : {}),
      identityKey: own.key,
      ...(own.previous ? { previousIdentityKey: own.previous.key } : {}),
      ...(lb && acmeShipments.length ? { acme: acmeShipments } : {}),
    },
    haproxy: lb
      ? {
          ...(c.frontends && c.pools
            ? { frontends: [...c.frontends], pools: { ...c.pools } }
            : { listenPorts: [...(c.listenPorts ?? [80])], backends: [...(c.backends ?? [])] }),
          ...(c.maxconn !== undefined ? { maxconn: c.maxconn } : c.size ? { maxconn: maxconnForSize(c.colors?.[lb.color]?.size ?? c.size) } : {}),
          ...(c.metricsCidrs.length ? { metricsCidrs: [...c.metricsCidrs] } : {}),
          ...(acme.length ? { acmeResponderPort: ACME_RESPONDER_PORT } : {}),
          serverName: d.name,
        }
      : null,
  };
}

/** The `acme` field of apply-config's payload (the stack's and the bed's): per certificate name, its keys and the directory's CA (agent/apply-config.ts). */
export function acmePayload(
  acme: readonly AcmeShipment<string>[],
): Record<string, { accountKey: string; key: string; eabHmacKey?: string; directoryCaPem?: string }> {
  return Object.fromEntries(
    acme.map((x) => [
      x.name,
      {
        accountKey: x.accountKey,
        key: x.key,
        ...(x.eabHmacKey !== undefined ? { eabHmacKey: x.eabHmacKey } : {}),
        ...(x.directoryCaPem !== undefined ? { directoryCaPem: x.directoryCaPem } : {}),
      },
    ]),
  );
}

/** The plan for every droplet: LBs in input order, then the witness. Throws on inconsistent input. */
export function planCluster<K>(input: PlanInput<K>): ClusterPlan<K> {
  assert(input.lbs.length >= 1, "needs at least one load balancer");
  assert(
    Number.isSafeInteger(input.membershipVersion) && input.membershipVersion >= 0,
    `membershipVersion ${input.membershipVersion} is not a non-negative integer`,
  );
  assert(input.reservedIp.length > 0, "the Reserved IP's address is empty");
  const memberIds = memberIdsOf(input.lbs, input.witness);
  const names = [...input.lbs, ...(input.witness ? [input.witness] : [])].map((d) => d.name);
  assert(new Set(names).size === names.length, `droplet names repeat: ${names.join(", ")}`);
  assert(new Set(memberIds).size === memberIds.length, `node ids repeat: ${memberIds.join(", ")}`);
  const droplets = [...input.lbs.map((lb) => planDroplet(input, lb, lb)), ...(input.witness ? [planDroplet(input, input.witness, null)] : [])];
  // Postcondition: every node is told the same member ids, in the same order, and is one of them.
  for (const d of droplets) {
    const ids = (d.agentConfig.members ?? []).map((m) => m.id);
    assert(ids.join(",") === memberIds.join(","), `${d.name} would be told members ${ids.join(", ")}, not ${memberIds.join(", ")}`);
    assert(ids.includes(d.nodeId), `${d.name} (${d.nodeId}) is not among its own members`);
  }
  return { membershipVersion: input.membershipVersion, memberIds, droplets };
}
