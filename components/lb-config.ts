/**
 * The load balancer's own config: `ha-lb:frontends`, `ha-lb:pools` and `ha-lb:certificates` (secret),
 * their schema and the rules across them (names that must exist, ports that must not repeat or clash
 * with the tier's own, certificates that must parse, match their key and be current).
 *
 * Pulumi's inferred multi-language schemas have no unions, so "this or that" is two optional fields
 * plus an "exactly one" check (`servers`/`tag`), never `v.union`.
 *
 * The short form of older stacks (`backends` + `listenPorts`) becomes one pool, `app`, behind one
 * http frontend per port (`normalizeLb`), so the renderer knows one shape only.
 */
import { X509Certificate, createPrivateKey } from "node:crypto";
import * as v from "valibot";
import { ACME_RESPONDER_PORT, HAPROXY_HEALTH_PORT, HAPROXY_METRICS_PORT, METRICS_PORT, PEER_PORT, SSH_PORT } from "../agent/ports.js";
import {
  boolean,
  cidr4,
  crossCheck,
  durationMs,
  exactlyOneOf,
  integer,
  listOf,
  matching,
  mustBe,
  oneOf,
  port,
  secret,
  show,
  strictObject,
} from "../agent/schema.js";

/** Bounds: a config is written by hand, and these keep the rendered HAProxy config reasonable. */
const MAX_FRONTENDS = 64;
const MAX_POOLS = 64;
const MAX_SERVERS = 256;
const MAX_ROUTES = 256;
const MAX_CIDRS = 1000;
const MAX_CERTIFICATES = 100;
/** A PEM chain or key larger than this is not a certificate a load balancer serves. */
const MAX_PEM_CHARS = 64 * 1024;

const name = (what: string) => matching(/^[a-z][a-z0-9_-]{0,31}$/, `${what}: 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter`);
export const poolName = name("a pool name");
export const certificateName = name("a certificate name");
export const hostPort = matching(/^[A-Za-z0-9.-]{1,253}:\d{1,5}$/, "host:port, such as 10.0.0.5:8080");
/** A lowercase DNS name (what a Host header or an SNI name is compared with). */
const HOST_NAME_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
export const hostName = matching(HOST_NAME_RE, "a lowercase host name such as www.example.com");
/** Characters of a URL path that need no quoting in an HAProxy config line (no space, quote, '#' or '\'). */
const pathPrefix = matching(/^\/[A-Za-z0-9._~!$&()*+,;=:@%/-]{0,255}$/, "a path starting with '/', such as /api/");
const cookieName = matching(/^[A-Za-z0-9_-]{1,64}$/, "a cookie name: 1-64 characters of A-Z, a-z, 0-9, '_' and '-'");
const dropletTag = matching(/^[A-Za-z0-9:_-]{1,255}$/, "a DigitalOcean tag: letters, digits, ':', '-' and '_'");
const pem = (what: string) => v.pipe(secret(what), v.maxLength(MAX_PEM_CHARS, `must be ${what} of at most ${MAX_PEM_CHARS} characters`));
const publicPem = matching(/^-----BEGIN CERTIFICATE-----[\s\S]{1,65536}$/, "PEM certificates (-----BEGIN CERTIFICATE-----)");
const cidrs = v.pipe(listOf(cidr4, { min: 1 }), v.maxLength(MAX_CIDRS, `must have at most ${MAX_CIDRS} CIDRs`));
const notList = v.custom<Record<string, unknown>>(
  (x) => typeof x === "object" && x !== null && !Array.isArray(x),
  (i) => `must be a mapping, got ${show(i.input)}`,
);

// ---------------------------------------------------------------------------------------------
// Frontends

export const FRONTEND_PROTOCOLS = ["http", "https", "tcp"] as const;

const RouteObject = strictObject({ host: v.optional(hostName), pathPrefix: v.optional(pathPrefix), pool: poolName });
const RouteSchema = v.pipe(
  RouteObject,
  crossCheck<v.InferOutput<typeof RouteObject>>([["host"], ["pathPrefix"]], (r, report) => {
    if (r.host === undefined && r.pathPrefix === undefined)
      report([], "needs host, pathPrefix or both (a route matching everything is the frontend's own pool)");
  }),
);

const FrontendObject = strictObject({
  port,
  protocol: oneOf(FRONTEND_PROTOCOLS),
  pool: poolName,
  routes: v.optional(v.pipe(listOf(RouteSchema, { min: 1 }), v.maxLength(MAX_ROUTES, `must have at most ${MAX_ROUTES} routes`))),
  certificates: v.optional(v.pipe(listOf(certificateName, { min: 1 }), v.maxLength(MAX_CERTIFICATES, `must name at most ${MAX_CERTIFICATES} certificates`))),
  http2: v.optional(boolean),
  redirectToHttps: v.optional(boolean),
  /** Strict-Transport-Security max-age, in seconds (two years at most, as browsers cap it). */
  hsts: v.optional(integer(0, 63_072_000, "a max-age in seconds from 0 to 63072000")),
  allowCidrs: v.optional(cidrs),
  denyCidrs: v.optional(cidrs),
  rateLimit: v.optional(strictObject({ requestsPerSecond: integer(1, 1_000_000), burst: v.optional(integer(0, 1_000_000)) })),
  timeouts: v.optional(
    strictObject({
      clientMs: v.optional(durationMs(100, 3_600_000)),
      httpRequestMs: v.optional(durationMs(100, 600_000)),
      httpKeepAliveMs: v.optional(durationMs(100, 600_000)),
    }),
  ),
});
const FrontendSchema = v.pipe(
  FrontendObject,
  crossCheck<v.InferOutput<typeof FrontendObject>>(
    [["protocol"], ["certificates"], ["http2"], ["redirectToHttps"], ["hsts"], ["routes"], ["rateLimit"]],
    (f, report) => {
      const only = (key: keyof typeof f, protocols: string, why: string) => report([key], `is for ${protocols} frontends only, not ${f.protocol} (${why})`);
      if (f.protocol === "https" && f.certificates === undefined)
        report([], 'needs certificates: an https frontend terminates TLS with them (e.g. "certificates": ["site"])');
      if (f.protocol !== "https" && f.certificates !== undefined)
        only("certificates", "https", f.protocol === "tcp" ? "tcp passes TLS through to the servers" : "http has no TLS");
      if (f.protocol !== "https" && f.http2 !== undefined) only("http2", "https", "h2 is offered by ALPN in the TLS handshake");
      if (f.protocol !== "https" && f.hsts !== undefined) only("hsts", "https", "browsers ignore HSTS over plain http");
      if (f.protocol !== "http" && f.redirectToHttps !== undefined)
        only("redirectToHttps", "http", f.protocol === "https" ? "it is https already" : "tcp carries no HTTP requests");
      if (f.protocol === "tcp" && f.routes !== undefined) only("routes", "http and https", "tcp sees no host or path");
      if (f.protocol === "tcp" && f.rateLimit !== undefined) only("rateLimit", "http and https", "a 429 is an HTTP answer");
    },
  ),
);
export type Frontend = v.InferOutput<typeof FrontendSchema>;

export const FrontendsSchema = v.pipe(
  listOf(FrontendSchema, { min: 1, fewer: "needs at least one frontend" }),
  v.maxLength(MAX_FRONTENDS, `must have at most ${MAX_FRONTENDS} frontends`),
  crossCheck<Frontend[]>([["$", "port"]], (fs, report) => {
    const seen = new Map<number, number>();
    fs.forEach((f, i) => {
      const first = seen.get(f.port);
      if (first !== undefined) report([i, "port"], `repeats port ${f.port} of frontend [${first}]; one frontend per port`);
      else seen.set(f.port, i);
      const reserved = RESERVED_PORTS.find((r) => r.port === f.port);
      if (reserved) report([i, "port"], `${f.port} is the tier's own ${reserved.what} port; choose another`);
    });
  }),
);

/** Ports the tier uses itself: never a frontend (agent/ports.ts is their one home). */
export const RESERVED_PORTS = [
  { port: SSH_PORT, what: "SSH" },
  { port: PEER_PORT, what: "peer (fipd)" },
  { port: METRICS_PORT, what: "fipd metrics" },
  { port: HAPROXY_HEALTH_PORT, what: "HAProxy health" },
  { port: HAPROXY_METRICS_PORT, what: "HAProxy metrics" },
  { port: ACME_RESPONDER_PORT, what: "ACME challenge responder (fipd)" },
] as const;

// ---------------------------------------------------------------------------------------------
// Pools

/** Health check defaults, documented in the README ("pools"). */
export const HEALTH_DEFAULTS = { type: "tcp", path: "/", expectStatus: 200, intervalMs: 2000, rise: 2, fall: 3 } as const;

const HealthCheckObject = strictObject({
  type: oneOf(["http", "tcp"]),
  path: v.optional(pathPrefix),
  expectStatus: v.optional(integer(100, 599, "an HTTP status from 100 to 599")),
  intervalMs: v.optional(durationMs(100, 3_600_000)),
  rise: v.optional(integer(1, 100)),
  fall: v.optional(integer(1, 100)),
});
const HealthCheckSchema = v.pipe(
  HealthCheckObject,
  crossCheck<v.InferOutput<typeof HealthCheckObject>>([["type"], ["path"], ["expectStatus"]], (h, report) => {
    if (h.type === "tcp" && h.path !== undefined) report(["path"], 'goes with type "http" (a tcp check only connects)');
    if (h.type === "tcp" && h.expectStatus !== undefined) report(["expectStatus"], 'goes with type "http" (a tcp check only connects)');
  }),
);

const PoolObject = strictObject({
  servers: v.optional(v.pipe(listOf(hostPort, { min: 1 }), v.maxLength(MAX_SERVERS, `must have at most ${MAX_SERVERS} servers`))),
  tag: v.optional(dropletTag),
  port: v.optional(port),
  balance: v.optional(oneOf(["roundrobin", "leastconn", "source"])),
  healthCheck: v.optional(HealthCheckSchema),
  stickySessions: v.optional(strictObject({ cookie: cookieName })),
  proxyProtocol: v.optional(oneOf(["v1", "v2"])),
  tls: v.optional(strictObject({ verify: boolean, ca: v.optional(publicPem), serverName: v.optional(hostName) })),
  timeouts: v.optional(
    strictObject({
      connectMs: v.optional(durationMs(100, 600_000)),
      serverMs: v.optional(durationMs(100, 3_600_000)),
      queueMs: v.optional(durationMs(100, 600_000)),
      tunnelMs: v.optional(durationMs(1000, 86_400_000)),
    }),
  ),
});
type PoolObject = v.InferOutput<typeof PoolObject>;
const PoolSchema = v.pipe(
  PoolObject,
  exactlyOneOf<PoolObject>(["servers", "tag"]),
  crossCheck<PoolObject>([["tag"], ["port"], ["tls"]], (p, report) => {
    if (p.tag !== undefined && p.port === undefined) report([], 'needs port with tag: the port the tagged droplets serve on (e.g. "port": 8080)');
    if (p.tag === undefined && p.port !== undefined) report(["port"], "goes with tag (servers carry their own port: host:port)");
    if (p.tls?.verify && (p.tls.ca === undefined || p.tls.serverName === undefined))
      report(
        ["tls"],
        'verify needs ca and serverName: VPC addresses match no certificate (e.g. {"verify": true, "ca": "-----BEGIN CERTIFICATE-----…", "serverName": "app.internal"})',
      );
    if (p.tls?.ca !== undefined) {
      for (const block of p.tls.ca.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [""]) {
        try {
          new X509Certificate(block);
        } catch {
          report(["tls", "ca"], "does not parse as PEM certificates");
          break;
        }
      }
    }
  }),
);
export type Pool = v.InferOutput<typeof PoolSchema>;

export const PoolsSchema = v.pipe(
  notList,
  v.record(poolName, PoolSchema),
  v.check((m) => Object.keys(m).length >= 1, "needs at least one pool"),
  v.check((m) => Object.keys(m).length <= MAX_POOLS, `must have at most ${MAX_POOLS} pools`),
);

// ---------------------------------------------------------------------------------------------
// Certificates (secret): messages name the certificate and the field, never the value.
//
// An entry is PEMs (`certificate` + `privateKey`) or `acme` (the cluster obtains and renews it
// itself over ACME, HTTP-01): two optional shapes and an "exactly one" check, not a union.

/** Let's Encrypt's production directory: the default of `acme.directoryUrl`. */
export const LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory";
/** Let's Encrypt's staging directory (untrusted certificates, generous rate limits): for trying it out. */
export const LETS_ENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory";
/** Let's Encrypt issues at most 100 names per certificate. */
const MAX_ACME_DOMAINS = 100;

/**
 * Why a name cannot be on an ACME certificate of this tier, or null. HTTP-01 proves control of a
 * name by serving a file on it, so only a DNS name that resolves to the Reserved IP can pass.
 */
export function acmeDomainProblem(d: string): string | null {
  if (d.includes("*"))
    return `"${d}" is a wildcard: ha-lb validates names with ACME's HTTP-01 challenge, which cannot prove a wildcard (only DNS-01 can, and that needs a DNS API token ha-lb does not hold); list each name, e.g. www.example.com`;
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(d)) return `"${d}" is an IP address; an ACME certificate here names DNS names whose A record is the Reserved IP`;
  if (!HOST_NAME_RE.test(d)) return `${show(d)} is not a lowercase DNS name such as www.example.com`;
  if (!d.includes(".")) return `"${d}" is a single label; a public CA issues only for names under a public suffix, such as www.example.com`;
  return null;
}
const acmeDomain = v.pipe(
  v.string(mustBe("a DNS name such as www.example.com")),
  v.check(
    (d) => acmeDomainProblem(d) === null,
    (i) => `must be a DNS name for HTTP-01: ${acmeDomainProblem(String(i.input))}`,
  ),
);
const email = matching(
  /^(?=.{3,254}$)[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/i,
  "an email address such as ops@example.com (the CA's account contact)",
);
/** An ACME directory: https only (the account key signs every request, but the directory itself must not be spoofable). */
const directoryUrl = v.pipe(
  v.string(mustBe("an https URL")),
  v.check(
    (s) => {
      try {
        const u = new URL(s);
        return s.length <= 2048 && u.protocol === "https:" && !u.username && !u.password && !u.hash;
      } catch {
        return false;
      }
    },
    (i) => `must be the https URL of an ACME directory, such as ${LETS_ENCRYPT_STAGING_DIRECTORY}, got ${show(i.input)}`,
  ),
);
const AcmeObject = strictObject({
  domains: v.pipe(
    listOf(acmeDomain, { min: 1, fewer: 'needs at least one domain (e.g. ["www.example.com"])' }),
    v.maxLength(MAX_ACME_DOMAINS, `must have at most ${MAX_ACME_DOMAINS} domains (Let's Encrypt's limit per certificate)`),
  ),
  email,
  directoryUrl: v.optional(directoryUrl),
  /** The directory's CA when it is not publicly trusted (a private CA, Pebble in the tests). */
  directoryCaPem: v.optional(publicPem),
  /** External account binding, for CAs that require it (ZeroSSL, Google): the key id and its base64url HMAC key. */
  eab: v.optional(
    strictObject({
      kid: matching(/^[A-Za-z0-9_.:-]{1,256}$/, "the CA's EAB key id: 1-256 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'"),
      hmacKey: v.pipe(
        secret("a base64url HMAC key"),
        v.check(
          (k) => /^[A-Za-z0-9_-]{16,1024}={0,2}$/.test(k),
          (i) => `must be a base64url HMAC key of 16 to 1024 characters, got ${String(i.input).length} characters`,
        ),
      ),
    }),
  ),
});
type AcmeObject = v.InferOutput<typeof AcmeObject>;
const AcmeSchema = v.pipe(
  AcmeObject,
  crossCheck<AcmeObject>([["domains"]], (a, report) => {
    const seen = new Set<string>();
    a.domains.forEach((d, i) => {
      if (seen.has(d)) report(["domains", i], `repeats "${d}"`);
      seen.add(d);
    });
  }),
  crossCheck<AcmeObject>([["directoryCaPem"]], (a, report) => {
    for (const block of a.directoryCaPem?.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ??
      (a.directoryCaPem === undefined ? [] : [""])) {
      try {
        new X509Certificate(block);
      } catch {
        report(["directoryCaPem"], "does not parse as PEM certificates");
        break;
      }
    }
  }),
);
export type AcmeSpec = v.InferOutput<typeof AcmeSchema>;

const CertificateObject = strictObject({
  certificate: v.optional(pem("a PEM certificate with its chain")),
  privateKey: v.optional(pem("a PEM private key")),
  acme: v.optional(AcmeSchema),
});
type CertificateObject = v.InferOutput<typeof CertificateObject>;
const CertificateSchema = v.pipe(
  CertificateObject,
  crossCheck<CertificateObject>([["certificate"], ["privateKey"], ["acme"]], (c, report) => {
    const pems = c.certificate !== undefined || c.privateKey !== undefined;
    if (c.acme !== undefined && pems)
      report([], "needs exactly one of acme or certificate + privateKey, got both (an ACME certificate is obtained by the cluster; drop the PEMs or acme)");
    else if (c.acme === undefined && !pems)
      report(
        [],
        'needs exactly one of acme or certificate + privateKey, got none (e.g. {"acme": {"domains": ["www.example.com"], "email": "ops@example.com"}})',
      );
    else if (c.acme === undefined && c.certificate === undefined) report([], "needs certificate (the PEM chain) with privateKey");
    else if (c.acme === undefined && c.privateKey === undefined) report([], "needs privateKey (the PEM key) with certificate");
  }),
);

export const CertificatesSchema = v.pipe(
  notList,
  v.record(certificateName, CertificateSchema),
  v.check((m) => Object.keys(m).length <= MAX_CERTIFICATES, `must have at most ${MAX_CERTIFICATES} certificates`),
);
/** A certificate given as PEMs (what HAProxy's `crt` file is made of). */
export interface PemCertificate {
  certificate: string;
  privateKey: string;
}
/** One entry of ha-lb:certificates: PEMs, or `acme` (never both; CertificatesSchema checks it). */
export interface CertificateEntry {
  certificate?: string;
  privateKey?: string;
  acme?: AcmeSpec;
}
export type Certificates = Record<string, CertificateEntry>;

/** The PEM entries only. */
export function pemCertificates(certs: Readonly<Certificates>): Record<string, PemCertificate> {
  const out: Record<string, PemCertificate> = {};
  for (const [n, c] of Object.entries(certs))
    if (c.acme === undefined && c.certificate !== undefined && c.privateKey !== undefined) out[n] = { certificate: c.certificate, privateKey: c.privateKey };
  return out;
}

/**
 * What is public about an ACME certificate (everything but the EAB HMAC key), with the directory
 * defaulted: the stack shapes resources from it (keys, placeholder) and tells the agents.
 */
export interface AcmeCertificate {
  name: string;
  domains: string[];
  email: string;
  directoryUrl: string;
  directoryCaPem?: string;
  eabKid?: string;
}
export function acmeCertificates(certs: Readonly<Certificates> | undefined): AcmeCertificate[] {
  return Object.entries(certs ?? {}).flatMap(([name, c]) =>
    c.acme
      ? [
          {
            name,
            domains: [...c.acme.domains],
            email: c.acme.email,
            directoryUrl: c.acme.directoryUrl ?? LETS_ENCRYPT_DIRECTORY,
            ...(c.acme.directoryCaPem !== undefined ? { directoryCaPem: c.acme.directoryCaPem } : {}),
            ...(c.acme.eab ? { eabKid: c.acme.eab.kid } : {}),
          },
        ]
      : [],
  );
}

/** Certificates expiring within this many days are warned about at preview. */
export const CERT_WARN_DAYS = 14;

/**
 * Checks one certificate at preview: the chain parses, the key parses and matches the first
 * certificate, and that certificate is valid now. Returns problems and warnings as phrases.
 */
export function checkCertificate(c: { certificate: string; privateKey: string }, now: Date): { problems: string[]; warnings: string[]; notAfter?: Date } {
  const blocks = c.certificate.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
  if (!blocks) return { problems: ["certificate has no PEM certificate (-----BEGIN CERTIFICATE-----)"], warnings: [] };
  const chain: X509Certificate[] = [];
  for (const [i, b] of blocks.entries()) {
    try {
      chain.push(new X509Certificate(b));
    } catch {
      return { problems: [`certificate: block ${i + 1} of the chain does not parse`], warnings: [] };
    }
  }
  const leaf = chain[0];
  const problems: string[] = [];
  const warnings: string[] = [];
  try {
    const key = createPrivateKey(c.privateKey);
    if (!leaf.checkPrivateKey(key)) problems.push(`privateKey does not match the certificate (${leaf.subject.replace(/\n/g, ", ")})`);
  } catch {
    problems.push("privateKey does not parse as an unencrypted PEM private key");
  }
  const notAfter = new Date(leaf.validTo);
  const notBefore = new Date(leaf.validFrom);
  if (notAfter.getTime() <= now.getTime()) problems.push(`certificate expired on ${notAfter.toISOString()}`);
  else if (notBefore.getTime() > now.getTime()) problems.push(`certificate is not valid before ${notBefore.toISOString()}`);
  else if (notAfter.getTime() - now.getTime() < CERT_WARN_DAYS * 86_400_000)
    warnings.push(`certificate expires on ${notAfter.toISOString()}, within ${CERT_WARN_DAYS} days`);
  return { problems, warnings, notAfter };
}

// ---------------------------------------------------------------------------------------------
// Rules across keys, and the short form

/** The pool the short form (`backends` + `listenPorts`) becomes. */
export const SHORT_FORM_POOL = "app";

export interface LbInput {
  frontends?: Frontend[];
  pools?: Record<string, Pool>;
  backends?: string[];
  listenPorts?: number[];
  certificates?: Certificates;
}

/**
 * Rules across `frontends`, `pools`, `certificates` and the short form; only called once each key
 * parsed. Returns lines of the form `ha-lb:<key>: <what> (at <where>); expected <form>`.
 */
export function checkLb(c: LbInput, now: Date): { errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  const line = (key: string, what: string, where?: string, expected?: string) =>
    `ha-lb:${key}: ${what}${where ? ` (at ${where})` : ""}${expected ? `; expected ${expected}` : ""}`;
  if (c.frontends && c.backends)
    errors.push(line("backends", "cannot be combined with frontends (backends is the short form of one pool)", undefined, "a pool in ha-lb:pools"));
  if (c.frontends && c.listenPorts)
    errors.push(
      line(
        "listenPorts",
        "cannot be combined with frontends (listenPorts is the short form of http frontends)",
        undefined,
        '{"port": 80, …} in ha-lb:frontends',
      ),
    );
  if (!c.frontends && !c.backends) errors.push(line("backends", "is required unless ha-lb:frontends and ha-lb:pools are set", undefined, '["10.10.0.5:8080"]'));
  if (c.frontends && !c.pools) errors.push(line("pools", "is required with ha-lb:frontends", undefined, '{"web": {"servers": ["10.10.0.5:8080"]}}'));
  if (!c.frontends && c.pools) errors.push(line("pools", "is used only with ha-lb:frontends (set both, or use the short form backends + listenPorts)"));
  for (const [i, p] of (c.frontends ? [] : (c.listenPorts ?? [])).entries()) {
    const reserved = RESERVED_PORTS.find((r) => r.port === p);
    if (reserved) errors.push(line("listenPorts", `${p} is the tier's own ${reserved.what} port; choose another`, String(i), "[80, 443]"));
  }
  if (!c.frontends && c.listenPorts?.includes(443))
    warnings.push(
      line("listenPorts", "443 serves plain HTTP in the short form, so HTTPS clients fail; use ha-lb:frontends with protocol https and certificates"),
    );
  const pools = c.pools ?? {};
  const poolNames = Object.keys(pools);
  const certNames = Object.keys(c.certificates ?? {});
  const mode = new Map<string, { mode: "http" | "tcp"; port: number }>();
  const used = new Set<string>();
  const usedCerts = new Set<string>();
  (c.frontends ?? []).forEach((f, i) => {
    const fMode = f.protocol === "tcp" ? "tcp" : "http";
    const refs: [string, string][] = [[f.pool, `${i}.pool`], ...(f.routes ?? []).map((r, j): [string, string] => [r.pool, `${i}.routes[${j}].pool`])];
    for (const [p, where] of refs) {
      used.add(p);
      if (c.pools && !pools[p]) {
        errors.push(line("frontends", `names the pool "${p}", which ha-lb:pools does not define`, where, `one of ${poolNames.join(", ") || "(none)"}`));
        continue;
      }
      const prior = mode.get(p);
      if (prior && prior.mode !== fMode)
        errors.push(
          line(
            "frontends",
            `pool "${p}" serves both a ${prior.mode} frontend (port ${prior.port}) and a ${fMode} one (port ${f.port})`,
            where,
            "a separate pool per mode",
          ),
        );
      else mode.set(p, { mode: fMode, port: f.port });
      if (fMode === "tcp" && pools[p]?.stickySessions)
        errors.push(
          line(
            "pools",
            `stickySessions is for http pools, and "${p}" serves the tcp frontend on port ${f.port}`,
            `${p}.stickySessions`,
            "no stickySessions, or an http frontend",
          ),
        );
    }
    for (const [j, cn] of (f.certificates ?? []).entries()) {
      usedCerts.add(cn);
      if (!c.certificates?.[cn])
        errors.push(
          line(
            "frontends",
            `names the certificate "${cn}", which ha-lb:certificates does not define`,
            `${i}.certificates[${j}]`,
            `one of ${certNames.join(", ") || "(none)"}`,
          ),
        );
    }
  });
  for (const p of poolNames) if (!used.has(p)) warnings.push(line("pools", `the pool "${p}" serves no frontend`));
  for (const [n, cert] of Object.entries(pemCertificates(c.certificates ?? {}))) {
    const r = checkCertificate(cert, now);
    for (const p of r.problems) errors.push(line("certificates", `${n}: ${p}`, undefined, "a current certificate chain and its matching key, in PEM"));
    for (const w of r.warnings) warnings.push(line("certificates", `${n}: ${w}`));
  }
  for (const n of certNames) if (!usedCerts.has(n)) warnings.push(line("certificates", `${n}: no frontend uses it`));
  const acme = acmeCertificates(c.certificates);
  if (acme.length) errors.push(...acmeReachabilityProblems(c, acme).map((p) => line("certificates", p.what, undefined, p.expected)));
  const owner = new Map<string, string>();
  for (const a of acme)
    for (const d of a.domains) {
      const first = owner.get(d);
      if (first !== undefined)
        warnings.push(line("certificates", `${a.name}: "${d}" is on the ACME certificate ${first} too; each order counts against the CA's rate limits`));
      else owner.set(d, a.name);
    }
  return { errors, warnings };
}

/**
 * Why the CA's HTTP-01 validation requests could not reach this tier, per ACME certificate: they
 * arrive on port 80 of the Reserved IP, from addresses the CA does not publish, so an http frontend
 * must listen there and admit everyone.
 */
function acmeReachabilityProblems(c: LbInput, acme: readonly AcmeCertificate[]): { what: string; expected: string }[] {
  const names = acme.map((a) => a.name).join(", ");
  const on80 = (c.frontends ?? normalizeLb(c).frontends).find((f) => f.port === 80);
  if (!on80 || on80.protocol !== "http")
    return [
      {
        what: `${names}: an ACME certificate needs an http frontend on port 80, where the CA's HTTP-01 validation requests arrive; ${on80 ? `port 80 is a ${on80.protocol} frontend` : "no frontend listens on port 80"}`,
        expected: '{"port": 80, "protocol": "http", "pool": "web", "redirectToHttps": true} in ha-lb:frontends',
      },
    ];
  if (on80.allowCidrs)
    return [
      {
        what: `${names}: the http frontend on port 80 admits only its allowCidrs, so the CA's HTTP-01 validation requests (from addresses the CA does not publish) would be refused`,
        expected: "no allowCidrs on the port 80 frontend (denyCidrs is fine), or PEM certificates instead of acme",
      },
    ];
  return [];
}

/** The frontends and pools to render: the long form as given, or the short form as one pool `app`. */
export function normalizeLb(c: LbInput): { frontends: Frontend[]; pools: Record<string, Pool> } {
  if (c.frontends && c.pools) return { frontends: c.frontends, pools: c.pools };
  return {
    frontends: (c.listenPorts ?? [80]).map((p) => ({ port: p, protocol: "http" as const, pool: SHORT_FORM_POOL })),
    pools: { [SHORT_FORM_POOL]: { servers: [...(c.backends ?? [])], healthCheck: { type: "tcp", intervalMs: 1000, rise: 2, fall: 2 } } },
  };
}
