/**
 * The stack's configuration (`ha-lb:*` keys in Pulumi.<stack>.yaml), validated once, before any
 * resource is declared. A bad value fails the program with one line per bad key: the key, what is
 * wrong, and the form expected.
 */
import * as pulumi from "@pulumi/pulumi";
import * as v from "valibot";
import { FailoverTimingSchema } from "../agent/config.js";
import { majorityOf } from "../agent/election/quorum.js";
import { boolean, check, cidr4, integer, ipv4, listOf, matching, nonEmptyString, oneOf, port, problemsOf, secret, strictObject } from "../agent/schema.js";
import { CertificatesSchema, FrontendsSchema, PoolsSchema, acmeCertificates, checkLb, hostPort, normalizeLb, type Certificates } from "./lb-config.js";

const region = matching(/^[a-z]{3}\d$/, "a DigitalOcean region slug such as nyc3, fra1 or sgp1");
const slug = nonEmptyString("a non-empty slug");
/** DigitalOcean's VPC ids are lowercase UUIDs (`doctl vpcs list`); tagged droplets report theirs in that form, compared as is. */
const vpcId = matching(
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
  "a DigitalOcean VPC id, a lowercase UUID as `doctl vpcs list` prints it",
);
/** A partial entry: what is left out comes from the color's default (see StackConfigSchema). */
const colorEntry = strictObject({ count: v.optional(integer(0, 9)), size: v.optional(slug), image: v.optional(slug) });

const StackConfigEntries = {
  region,
  image: v.optional(slug, "ubuntu-24-04-x64"),
  size: v.optional(slug, "s-1vcpu-1gb"),
  colors: v.optional(strictObject({ blue: v.optional(colorEntry), green: v.optional(colorEntry) }), {}),
  activeColor: v.optional(oneOf(["blue", "green"]), "blue"),
  witnessRegion: v.optional(region),
  /** An existing VPC in region for the LBs, instead of the stack's own (network.ts); pools by tag must be in it. */
  vpcUuid: v.optional(vpcId),
  sshKeys: listOf(nonEmptyString("a DigitalOcean SSH key ID or fingerprint"), { min: 1, fewer: "needs at least one DigitalOcean SSH key ID or fingerprint" }),
  sshPrivateKey: secret("a private key"),
  adminCidrs: listOf(cidr4, { min: 1, fewer: "needs at least one CIDR that may reach SSH" }),
  metricsCidrs: v.optional(listOf(cidr4), []),
  /** The short form: one pool behind http frontends on listenPorts (see lb-config.ts). */
  backends: v.optional(listOf(hostPort, { min: 1, fewer: "needs at least one backend host:port" })),
  listenPorts: v.optional(listOf(port, { min: 1 })),
  frontends: v.optional(FrontendsSchema),
  pools: v.optional(PoolsSchema),
  certificates: v.optional(CertificatesSchema),
  /** HAProxy's global maxconn; the default is sized for the droplet (defaultMaxconn). */
  maxconn: v.optional(integer(100, 1_000_000)),
  agentToken: secret("a DigitalOcean token"),
  reservedIp: v.optional(ipv4),
  retainReservedIp: v.optional(boolean, true),
  failover: v.optional(FailoverTimingSchema),
  /** Bump (1, 2, 3, …) to rotate the peers' shared key; the previous key stays accepted during the roll. */
  peerKeyGeneration: v.optional(integer(1, Number.MAX_SAFE_INTEGER, "a whole number, 1 or more"), 1),
};

export const StackConfigSchema = v.pipe(
  strictObject(StackConfigEntries),
  v.transform((c) => ({
    ...c,
    listenPorts: c.frontends ? c.frontends.map((f) => f.port) : (c.listenPorts ?? [80]),
    ...normalizeLb(c),
    /** The public part of the ACME certificates (no EAB HMAC key): it shapes the keys and placeholders the stack makes. */
    acme: acmeCertificates(c.certificates),
    colors: {
      blue: { count: 2, ...c.colors.blue },
      green: { count: 0, ...c.colors.green },
    },
  })),
);
export type StackConfig = v.InferOutput<typeof StackConfigSchema>;

const EXPECTED: Record<string, string> = {
  region: "a region slug, e.g. nyc3",
  image: "a DigitalOcean image slug, e.g. ubuntu-24-04-x64",
  size: "a droplet size slug, e.g. s-1vcpu-1gb",
  retainReservedIp: "true or false",
  peerKeyGeneration: "an integer ≥ 1, bumped to rotate the peer key",
  colors: '{"blue": {"count": 2}, "green": {"count": 0}}',
  activeColor: "blue or green",
  witnessRegion: "a region slug different from region, e.g. sfo3",
  vpcUuid: "the id of an existing VPC in region, e.g. 5a4f7c2e-1d3b-4c8a-9e6f-0b1c2d3e4f5a (doctl vpcs list)",
  sshKeys: '["<key id or fingerprint>"]',
  sshPrivateKey: "pulumi config set --secret ha-lb:sshPrivateKey < ~/.ssh/id_ed25519",
  adminCidrs: '["203.0.113.0/24"]',
  metricsCidrs: '["10.0.0.0/8"]',
  backends: '["10.10.0.5:8080"]',
  listenPorts: "[80, 443]",
  frontends: '[{"port": 443, "protocol": "https", "pool": "web", "certificates": ["site"]}]',
  pools: '{"web": {"servers": ["10.10.0.5:8080"], "healthCheck": {"type": "http", "path": "/healthz"}}}',
  certificates:
    'pulumi config set --secret --path \'ha-lb:certificates.site.certificate\' < fullchain.pem (and .privateKey < key.pem), or {"site": {"acme": {"domains": ["www.example.com"], "email": "ops@example.com"}}}',
  maxconn: "an integer from 100 to 1000000",
  agentToken: "pulumi config set --secret ha-lb:agentToken (a token with reserved_ip:update)",
  reservedIp: "an existing Reserved IP in the same region, e.g. 203.0.113.7",
  failover: '{"leaseMs": 300, "heartbeatIntervalMs": 50}',
};

/** At most this many error lines: a config pasted into the wrong key should not print thousands. */
const MAX_ERROR_LINES = 50;
/** `0.port`, `[1].routes[0].pool`: list indexes in brackets where a list holds them. */
const formatAt = (path: (string | number)[]) => path.map((k, i) => (typeof k === "number" ? (i === 0 ? `${k}` : `[${k}]`) : `${i ? "." : ""}${k}`)).join("");

export class StackConfigError extends Error {
  constructor(readonly lines: string[]) {
    super(`invalid stack configuration:\n  ${lines.join("\n  ")}`);
  }
}

/** Keys that hold secrets: read with getSecret so Pulumi keeps them encrypted. */
export const SECRET_KEYS = ["sshPrivateKey", "agentToken"] as const;
/** A secret too, but a mapping (name → certificate and key), handed out apart from SECRET_KEYS. */
export const CERTIFICATES_KEY = "certificates";

/**
 * Validate raw values (already JSON-parsed where the key is an object or list). Returns the config and
 * warnings; throws StackConfigError with one line per bad key.
 */
export function parseStackConfig(raw: Record<string, unknown>, now = new Date()): { config: StackConfig; warnings: string[] } {
  const r = check(StackConfigSchema, raw);
  if (!r.ok) {
    // One line per problem (a key may have several: two frontends on one port and an unknown pool).
    const lines = new Set<string>();
    for (const p of problemsOf(r.issues)) {
      const key = String(p.path[0] ?? "(root)");
      const where = p.path.length > 1 ? ` (at ${formatAt(p.path.slice(1))})` : "";
      const what = p.missing ? "is required" : p.message;
      if (lines.size < MAX_ERROR_LINES) lines.add(`ha-lb:${key}: ${what}${where}${EXPECTED[key] ? `; expected ${EXPECTED[key]}` : ""}`);
    }
    throw new StackConfigError([...lines]);
  }
  const c = r.value;
  const lb = checkLb(raw as Parameters<typeof checkLb>[0], now);
  const errors: string[] = [...lb.errors];
  const warnings: string[] = [...lb.warnings];
  if (c.witnessRegion && c.witnessRegion === c.region)
    errors.push(
      `ha-lb:witnessRegion: must differ from region (${c.region}), or a datacenter outage takes the witness too; expected another region slug, e.g. sfo3`,
    );
  if (c.colors[c.activeColor].count < 1)
    errors.push(`ha-lb:activeColor: ${c.activeColor} has no droplets (colors.${c.activeColor}.count is 0); expected a color with count ≥ 1`);
  const lbs = c.colors.blue.count + c.colors.green.count;
  const voters = lbs + (c.witnessRegion ? 1 : 0);
  const majority = majorityOf(voters);
  if (lbs >= 2 && voters - 1 < majority) {
    errors.push(
      `ha-lb:witnessRegion: ${lbs} load balancers and no witness cannot survive the loss of one (${voters} voters need ${majority}); set ha-lb:witnessRegion (a small droplet in another region) or add a load balancer`,
    );
  } else if (voters % 2 === 0) {
    const tolerated = voters - majority;
    warnings.push(
      `ha-lb: ${voters} voters (${lbs} load balancer${lbs === 1 ? "" : "s"}${c.witnessRegion ? " + witness" : ""}) is an even number: a majority is ${majority}, so it survives ${tolerated} lost voter${tolerated === 1 ? "" : "s"}, no more than ${voters - 1} voters would; consider ${c.witnessRegion ? "adding a load balancer or removing the witness" : "adding a witness (ha-lb:witnessRegion)"}`,
    );
  }
  if (errors.length) throw new StackConfigError(errors);
  return { config: c, warnings };
}

/** Keys whose value is JSON (a list, an object, a boolean or a number) in Pulumi.<stack>.yaml. */
const JSON_KEYS = [
  "colors",
  "sshKeys",
  "adminCidrs",
  "metricsCidrs",
  "backends",
  "listenPorts",
  "frontends",
  "pools",
  "certificates",
  "maxconn",
  "failover",
  "retainReservedIp",
  "peerKeyGeneration",
];
export const ALL_KEYS = Object.keys(StackConfigEntries);

/**
 * Read every `ha-lb:*` key through a getter (the Pulumi config in the program, a map in tests).
 * Values may be raw strings (JSON for list/object keys) or already parsed. `present` lists the keys
 * set in the stack, so that a misspelt key is an error rather than silently ignored.
 */
export function readRawConfig(get: (key: string) => unknown, present: string[] = []): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  const bad: string[] = [];
  for (const key of present) {
    if (!ALL_KEYS.includes(key)) bad.push(`ha-lb:${key}: is not a known key; expected one of ${ALL_KEYS.join(", ")}`);
  }
  for (const key of ALL_KEYS) {
    const v = get(key);
    if (v === undefined || v === null) continue;
    if (JSON_KEYS.includes(key) && typeof v === "string") {
      try {
        raw[key] = JSON.parse(v);
      } catch {
        bad.push(`ha-lb:${key}: is not valid JSON${EXPECTED[key] ? `; expected ${EXPECTED[key]}` : ""}`);
      }
    } else raw[key] = v;
  }
  if (bad.length) throw new StackConfigError(bad);
  return raw;
}

/** The validated config without its secrets: safe to pass anywhere. */
export type PublicStackConfig = Omit<StackConfig, (typeof SECRET_KEYS)[number] | typeof CERTIFICATES_KEY>;

/**
 * Pure: read, validate, split off the secrets. Throws one StackConfigError listing every bad key
 * (unknown keys, bad JSON and bad values alike are reported together where possible).
 */
export function loadStackConfig(
  get: (key: string) => unknown,
  present: string[] = [],
): { config: PublicStackConfig; secrets: Record<(typeof SECRET_KEYS)[number], string>; certificates: Certificates; warnings: string[] } {
  let raw: Record<string, unknown>;
  let early: StackConfigError | undefined;
  try {
    raw = readRawConfig(get, present);
  } catch (e) {
    if (!(e instanceof StackConfigError)) throw e;
    early = e;
    raw = readRawConfig((k) => {
      const v = get(k);
      if (JSON_KEYS.includes(k) && typeof v === "string") {
        try {
          return JSON.parse(v);
        } catch {
          return undefined;
        }
      }
      return v;
    });
  }
  let parsed: ReturnType<typeof parseStackConfig> | undefined;
  try {
    parsed = parseStackConfig(raw);
  } catch (e) {
    if (!(e instanceof StackConfigError)) throw e;
    // Merge: one line per key, the early (JSON / unknown key) line wins for its key.
    const lines = [...(early?.lines ?? [])];
    const seen = new Set(lines.map((l) => l.split(":").slice(0, 2).join(":")));
    for (const l of e.lines) if (!seen.has(l.split(":").slice(0, 2).join(":"))) lines.push(l);
    throw new StackConfigError(lines);
  }
  if (early) throw early;
  const { sshPrivateKey, agentToken, certificates, ...config } = parsed.config;
  return { config, secrets: { sshPrivateKey, agentToken }, certificates: certificates ?? {}, warnings: parsed.warnings };
}

/**
 * The program's reader: validates every `ha-lb:*` key of the running stack, then hands the secrets
 * out only as secret Outputs (read with getSecret, so Pulumi keeps them encrypted and masked).
 */
export function readStackConfig(): {
  config: PublicStackConfig;
  secrets: Record<(typeof SECRET_KEYS)[number], pulumi.Output<string>>;
  /** Checked at preview (lb-config.ts); only ever a secret Output from here on. */
  certificates: pulumi.Output<Certificates>;
  warnings: string[];
} {
  const cfg = new pulumi.Config("ha-lb");
  const present = Object.keys(pulumi.runtime.allConfig())
    .filter((k) => k.startsWith("ha-lb:"))
    .map((k) => k.slice("ha-lb:".length));
  const { config, certificates, warnings } = loadStackConfig((key) => cfg.get(key), present);
  // A secret set without --secret sits in clear text in Pulumi.<stack>.yaml. The SDK's check is
  // internal, hence the guarded lookup.
  const isSecret = (pulumi.runtime as unknown as { isConfigSecret?: (k: string) => boolean }).isConfigSecret;
  for (const key of [...SECRET_KEYS, ...(present.includes(CERTIFICATES_KEY) ? [CERTIFICATES_KEY] : [])]) {
    if (typeof isSecret === "function" && !isSecret(`ha-lb:${key}`)) {
      warnings.push(`ha-lb:${key}: is stored in plain text in the stack file; set it with pulumi config set --secret ha-lb:${key}`);
    }
  }
  return {
    config,
    warnings,
    certificates: pulumi.secret(certificates),
    secrets: { agentToken: cfg.requireSecret("agentToken"), sshPrivateKey: cfg.requireSecret("sshPrivateKey") },
  };
}
