/**
 * The stack's configuration (`ha-lb:*` keys in Pulumi.<stack>.yaml), validated once, before any
 * resource is declared. A bad value fails the program with one line per bad key: the key, what is
 * wrong, and the form expected.
 */
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
      const what = i.code === "invalid_type" && i.input === undefined ? "is required" : i.code === "unrecognized_keys" ? `has unknown keys ${i.keys.join(", ")}` : i.message;
      if (!byKey.has(key)) byKey.set(key, `ha-lb:${key}: ${what}${where}${EXPECTED[key] ? `; expected ${EXPECTED[key]}` : ""}`);
    }
    throw new StackConfigError([...byKey.values()]);
  }
  const c = r.data;
  const errors: string[] = [];
  const warnings: string[] = [];
  if (c.witnessRegion && c.witnessRegion === c.region) errors.push(`ha-lb:witnessRegion: must differ from region (${c.region}), or a datacenter outage takes the witness too; expected another region slug, e.g. sfo3`);
  if (c.colors[c.activeColor].count < 1) errors.push(`ha-lb:activeColor: ${c.activeColor} has no droplets (colors.${c.activeColor}.count is 0); expected a color with count ≥ 1`);
  const lbs = c.colors.blue.count + c.colors.green.count;
  const voters = lbs + (c.witnessRegion ? 1 : 0);
  const majority = Math.floor(voters / 2) + 1;
  if (lbs >= 2 && voters - 1 < majority) {
    errors.push(`ha-lb:witnessRegion: ${lbs} load balancers and no witness cannot survive the loss of one (${voters} voters need ${majority}); set ha-lb:witnessRegion (a small droplet in another region) or add a load balancer`);
  } else if (voters % 2 === 0) {
    warnings.push(`${voters} voters (${lbs} load balancers${c.witnessRegion ? " + witness" : ""}) is an even number: it tolerates no more failures than ${voters - 1}; consider ${c.witnessRegion ? "removing the witness or adding a load balancer" : "adding a witness"}`);
  }
  if (errors.length) throw new StackConfigError(errors);
  return { config: c, warnings };
}

const OBJECT_KEYS = ["colors", "sshKeys", "adminCidrs", "metricsCidrs", "backends", "listenPorts", "failover", "retainReservedIp"];
const ALL_KEYS = ["region", "image", "size", "colors", "activeColor", "witnessRegion", "sshKeys", "sshPrivateKey", "adminCidrs", "metricsCidrs", "backends", "listenPorts", "agentToken", "reservedIp", "retainReservedIp", "failover"];

/** Read every `ha-lb:*` key through a getter (pulumi.Config in the program, a map in tests). */
export function readRawConfig(get: (key: string) => string | undefined): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  const bad: string[] = [];
  for (const key of ALL_KEYS) {
    const v = get(key);
    if (v === undefined) continue;
    if (OBJECT_KEYS.includes(key)) {
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
