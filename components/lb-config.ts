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
import { HAPROXY_HEALTH_PORT, HAPROXY_METRICS_PORT, METRICS_PORT, PEER_PORT, SSH_PORT } from "../agent/ports.js";
import { boolean, cidr4, crossCheck, durationMs, exactlyOneOf, integer, listOf, matching, oneOf, port, secret, show, strictObject } from "../agent/schema.js";

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
export const hostName = matching(
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/,
  "a lowercase host name such as www.example.com",
);
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

export const CertificatesSchema = v.pipe(
  notList,
  v.record(certificateName, strictObject({ certificate: pem("a PEM certificate with its chain"), privateKey: pem("a PEM private key") })),
  v.check((m) => Object.keys(m).length <= MAX_CERTIFICATES, `must have at most ${MAX_CERTIFICATES} certificates`),
);
export type Certificates = Record<string, { certificate: string; privateKey: string }>;

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
  for (const [n, cert] of Object.entries(c.certificates ?? {})) {
    const r = checkCertificate(cert, now);
    for (const p of r.problems) errors.push(line("certificates", `${n}: ${p}`, undefined, "a current certificate chain and its matching key, in PEM"));
    for (const w of r.warnings) warnings.push(line("certificates", `${n}: ${w}`));
    if (!usedCerts.has(n)) warnings.push(line("certificates", `${n}: no frontend uses it`));
  }
  return { errors, warnings };
}

/** The frontends and pools to render: the long form as given, or the short form as one pool `app`. */
export function normalizeLb(c: LbInput): { frontends: Frontend[]; pools: Record<string, Pool> } {
  if (c.frontends && c.pools) return { frontends: c.frontends, pools: c.pools };
  return {
    frontends: (c.listenPorts ?? [80]).map((p) => ({ port: p, protocol: "http" as const, pool: SHORT_FORM_POOL })),
    pools: { [SHORT_FORM_POOL]: { servers: [...(c.backends ?? [])], healthCheck: { type: "tcp", intervalMs: 1000, rise: 2, fall: 2 } } },
  };
}
