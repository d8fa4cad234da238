/**
 * The stack's configuration (`ha-lb:*` keys in Pulumi.<stack>.yaml), validated once, before any
 * resource is declared. A bad value fails the program with one line per bad key: the key, what is
 * wrong, and the form expected.
 */
import * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { FailoverTimingSchema } from "../agent/config.js";

const REGION = /^[a-z]{3}\d$/;
const region = z.string().regex(REGION, "must be a DigitalOcean region slug such as nyc3, fra1 or sgp1");
const cidr = z.string().refine((s) => {
  const m = s.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/);
  return !!m && m.slice(1, 5).every((o) => Number(o) <= 255) && Number(m[5]) <= 32;
}, "must be an IPv4 CIDR such as 198.51.100.0/24");
const hostPort = z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, "must be host:port, such as 10.0.0.5:8080");
const port = z.number().int().min(1).max(65535);
const colorEntry = z.strictObject({ count: z.number().int().min(0).max(9), size: z.string().min(1).optional(), image: z.string().min(1).optional() });

export const StackConfigSchema = z
  .strictObject({
    region,
    image: z.string().min(1).default("ubuntu-24-04-x64"),
    size: z.string().min(1).default("s-1vcpu-1gb"),
    colors: z.strictObject({ blue: colorEntry.partial().optional(), green: colorEntry.partial().optional() }).default({}),
    activeColor: z.enum(["blue", "green"]).default("blue"),
    witnessRegion: region.optional(),
    sshKeys: z.array(z.string().min(1)).min(1, "needs at least one DigitalOcean SSH key ID or fingerprint"),
    sshPrivateKey: z.string().min(1),
    adminCidrs: z.array(cidr).min(1, "needs at least one CIDR that may reach SSH"),
    metricsCidrs: z.array(cidr).default([]),
    backends: z.array(hostPort).min(1, "needs at least one backend host:port"),
    listenPorts: z.array(port).min(1).default([80]),
    agentToken: z.string().min(1),
    reservedIp: z.ipv4().optional(),
    retainReservedIp: z.boolean().default(true),
    failover: FailoverTimingSchema.optional(),
    /** Bump (1, 2, 3, …) to rotate the peers' shared key; the previous key stays accepted during the roll. */
    peerKeyGeneration: z.number().int().min(1).default(1),
  })
  .transform((c) => ({
    ...c,
    colors: {
      blue: { count: 2, ...c.colors.blue },
      green: { count: 0, ...c.colors.green },
    },
  }));
export type StackConfig = z.output<typeof StackConfigSchema>;

const EXPECTED: Record<string, string> = {
  region: "a region slug, e.g. nyc3",
  image: "a DigitalOcean image slug, e.g. ubuntu-24-04-x64",
  size: "a droplet size slug, e.g. s-1vcpu-1gb",
  retainReservedIp: "true or false",
  peerKeyGeneration: "an integer ≥ 1, bumped to rotate the peer key",
  colors: '{"blue": {"count": 2}, "green": {"count": 0}}',
  activeColor: "blue or green",
  witnessRegion: "a region slug different from region, e.g. sfo3",
  sshKeys: '["<key id or fingerprint>"]',
  sshPrivateKey: "pulumi config set --secret ha-lb:sshPrivateKey < ~/.ssh/id_ed25519",
  adminCidrs: '["203.0.113.0/24"]',
  metricsCidrs: '["10.0.0.0/8"]',
  backends: '["10.10.0.5:8080"]',
  listenPorts: "[80, 443]",
  agentToken: "pulumi config set --secret ha-lb:agentToken (a token with reserved_ip:update)",
  reservedIp: "an existing Reserved IP in the same region, e.g. 203.0.113.7",
  failover: '{"leaseMs": 300, "heartbeatIntervalMs": 50}',
};

export class StackConfigError extends Error {
  constructor(readonly lines: string[]) {
    super(`invalid stack configuration:\n  ${lines.join("\n  ")}`);
  }
}

/** Keys that hold secrets: read with getSecret so Pulumi keeps them encrypted. */
export const SECRET_KEYS = ["sshPrivateKey", "agentToken"] as const;

/**
 * Validate raw values (already JSON-parsed where the key is an object or list). Returns the config and
 * warnings; throws StackConfigError with one line per bad key.
 */
export function parseStackConfig(raw: Record<string, unknown>): { config: StackConfig; warnings: string[] } {
  const r = StackConfigSchema.safeParse(raw);
  if (!r.success) {
    const byKey = new Map<string, string>();
    for (const i of r.error.issues) {
      const key = String(i.path[0] ?? "(root)");
      const where = i.path.length > 1 ? ` (at ${i.path.slice(1).join(".")})` : "";
      const what =
        i.code === "invalid_type" && i.input === undefined
          ? "is required"
          : i.code === "unrecognized_keys"
            ? `has unknown keys ${i.keys.join(", ")}`
            : i.message;
      if (!byKey.has(key)) byKey.set(key, `ha-lb:${key}: ${what}${where}${EXPECTED[key] ? `; expected ${EXPECTED[key]}` : ""}`);
    }
    throw new StackConfigError([...byKey.values()]);
  }
  const c = r.data;
  const errors: string[] = [];
  const warnings: string[] = [];
  if (c.witnessRegion && c.witnessRegion === c.region)
    errors.push(
      `ha-lb:witnessRegion: must differ from region (${c.region}), or a datacenter outage takes the witness too; expected another region slug, e.g. sfo3`,
    );
  if (c.colors[c.activeColor].count < 1)
    errors.push(`ha-lb:activeColor: ${c.activeColor} has no droplets (colors.${c.activeColor}.count is 0); expected a color with count ≥ 1`);
  const lbs = c.colors.blue.count + c.colors.green.count;
  const voters = lbs + (c.witnessRegion ? 1 : 0);
  const majority = Math.floor(voters / 2) + 1;
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
const JSON_KEYS = ["colors", "sshKeys", "adminCidrs", "metricsCidrs", "backends", "listenPorts", "failover", "retainReservedIp", "peerKeyGeneration"];
export const ALL_KEYS = Object.keys(StackConfigSchema.in.shape);

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
export type PublicStackConfig = Omit<StackConfig, (typeof SECRET_KEYS)[number]>;

/**
 * Pure: read, validate, split off the secrets. Throws one StackConfigError listing every bad key
 * (unknown keys, bad JSON and bad values alike are reported together where possible).
 */
export function loadStackConfig(
  get: (key: string) => unknown,
  present: string[] = [],
): { config: PublicStackConfig; secrets: Record<(typeof SECRET_KEYS)[number], string>; warnings: string[] } {
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
  const { sshPrivateKey, agentToken, ...config } = parsed.config;
  return { config, secrets: { sshPrivateKey, agentToken }, warnings: parsed.warnings };
}

/**
 * The program's reader: validates every `ha-lb:*` key of the running stack, then hands the secrets
 * out only as secret Outputs (read with getSecret, so Pulumi keeps them encrypted and masked).
 */
export function readStackConfig(): { config: PublicStackConfig; secrets: Record<(typeof SECRET_KEYS)[number], pulumi.Output<string>>; warnings: string[] } {
  const cfg = new pulumi.Config("ha-lb");
  const present = Object.keys(pulumi.runtime.allConfig())
    .filter((k) => k.startsWith("ha-lb:"))
    .map((k) => k.slice("ha-lb:".length));
  const { config, warnings } = loadStackConfig((key) => cfg.get(key), present);
  // A secret set without --secret sits in clear text in Pulumi.<stack>.yaml. The SDK's check is
  // internal, hence the guarded lookup.
  const isSecret = (pulumi.runtime as unknown as { isConfigSecret?: (k: string) => boolean }).isConfigSecret;
  for (const key of SECRET_KEYS) {
    if (typeof isSecret === "function" && !isSecret(`ha-lb:${key}`)) {
      warnings.push(`ha-lb:${key}: is stored in plain text in the stack file; set it with pulumi config set --secret ha-lb:${key}`);
    }
  }
  return { config, warnings, secrets: { agentToken: cfg.requireSecret("agentToken"), sshPrivateKey: cfg.requireSecret("sshPrivateKey") } };
}
