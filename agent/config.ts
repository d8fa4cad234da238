/**
 * The fipd configuration file: its schema, defaults and the one place that turns a bad file into
 * precise, operator-readable errors.
 *
 * This schema is the contract between the Pulumi stack (which renders one file per droplet) and the
 * agent (which validates it at start and on SIGHUP). Both import this module, so they cannot drift.
 * It must stay free of I/O and of `@pulumi/*` imports: the agent bundle includes it.
 *
 * Every duration is an integer number of milliseconds and its key ends in `Ms`.
 */
import * as v from "valibot";
import {
  ACME_RESPONDER_PORT,
  ANY_IPV4,
  HAPROXY_HEALTH_PORT,
  HAPROXY_HEALTH_URL,
  HAPROXY_METRICS_PORT,
  LOOPBACK_IPV4,
  METADATA_URL,
  METRICS_PORT,
  PEER_PORT,
} from "./ports.js";
import {
  boolean,
  check,
  crossCheck,
  durationMs,
  formatIssues,
  hostOrIp,
  integer,
  ipAddress,
  isHostOrIp,
  ipv4,
  isLoopbackHost,
  listOf,
  nodeId,
  nonEmptyString,
  numberIn,
  oneOf,
  port,
  strictObject,
  url,
  matching,
  mustBe,
  show,
} from "./schema.js";

export const COLORS = ["blue", "green"] as const;
export type Color = (typeof COLORS)[number];

const path = nonEmptyString("a non-empty file path");
const absolutePath = matching(/^\/[^\0]*$/, "an absolute path such as /run/fipd/fipd.sock");

/** Where the HAProxy install publishes the running set's certificates (chains only, 0644) for fipd's expiry metric. */
export const CERTIFICATE_DIR = "/etc/haproxy/ha-lb-certs";

/** A URL's host without IPv6 brackets, lower case; "" when `text` is not a URL. */
function hostOf(text: string): string {
  try {
    return new URL(text).hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  } catch {
    return "";
  }
}

/**
 * Election timing. Defaults give a failover of about 300 ms after a leader's death with 0 ms network
 * delay (see agent/election/README.md for the derivation) while riding out 1 % loss and 20 ms jitter.
 */
export const FailoverTimingSchema = v.pipe(
  strictObject({
    /** How often every node sends a heartbeat to every other member. */
    heartbeatIntervalMs: v.optional(durationMs(10, 5_000), 50),
    /** How long a vote or heartbeat acknowledgement promises not to back another leader. */
    leaseMs: v.optional(durationMs(50, 60_000), 300),
    /** Upper bound on the rate difference between any node's monotonic clock and real time (0.01 = 1 %). */
    maxClockDrift: v.optional(numberIn(0, 0.1, "a fraction from 0 to 0.1 (0.01 is 1 %)"), 0.01),
    /** Extra wait per rank before a lower-ranked node stands for election, so the best node usually goes first. */
    candidateBackoffMs: v.optional(durationMs(0, 10_000), 25),
    /** How long a vote request waits for answers before the candidate gives up and retries later. */
    electionTimeoutMs: v.optional(durationMs(10, 60_000), 150),
    /** A returning better node takes over a working leader only when true (keepalived's preemption). */
    preempt: v.optional(boolean, false),
    /**
     * When no node of the color in force has been eligible for COLOR_FALLBACK_AFTER_LEASES leases, a
     * healthy node of the other color may lead until one is back (see README "Blue-green"). False keeps
     * the strict rule, for colors whose backends are incompatible.
     */
    colorFallback: v.optional(boolean, true),
  }),
  crossCheck([["heartbeatIntervalMs"], ["leaseMs"]], (t, report) => {
    if (t.heartbeatIntervalMs * 3 > t.leaseMs) {
      report(["leaseMs"], `must be at least 3 × heartbeatIntervalMs (${t.heartbeatIntervalMs * 3} ms) so that one lost heartbeat does not end a lease`);
    }
  }),
);
export type FailoverTiming = v.InferOutput<typeof FailoverTimingSchema>;

export const MemberSchema = v.pipe(
  strictObject({
    /** Stable identifier; ties between equal priorities go to the lowest id. */
    id: nodeId,
    /** Address and port the peer transport reaches this member on (VPC address for LBs, public for the witness). */
    address: hostOrIp,
    port: v.optional(port, PEER_PORT),
    /** `witness` votes but never leads. */
    role: v.optional(oneOf(["lb", "witness"]), "lb"),
    /** The color of an LB; a witness has none. */
    color: v.optional(oneOf(COLORS)),
    /** Higher leads first. */
    priority: v.optional(integer(0, 255), 100),
  }),
  crossCheck([["role"], ["color"]], (m, report) => {
    if (m.role === "lb" && !m.color) report(["color"], 'is required for a member with role "lb" ("blue" or "green")');
    if (m.role === "witness" && m.color) report(["color"], "must not be set for a witness (a witness never leads)");
  }),
);
export type Member = v.InferOutput<typeof MemberSchema>;

/** A DNS name an ACME certificate covers: HTTP-01 validates exact host names, so no wildcard. */
const acmeDomain = (() => {
  const what = "a lower-case DNS name with a dot, such as www.example.com";
  const valid = (s: string) => isHostOrIp(s) && !v.IP_REGEX.test(s) && s.includes(".") && !s.endsWith(".") && s === s.toLowerCase();
  return v.pipe(
    v.string(mustBe(what)),
    v.check(valid, (i) => (String(i.input).startsWith("*.") ? "must be an exact host name: HTTP-01 cannot validate a wildcard (*.) name" : mustBe(what)(i))),
    v.description(what),
  );
})();

/** One certificate fipd obtains over ACME. Its keys are files under acme.keyDir named after it. */
export const AcmeCertificateSchema = v.pipe(
  strictObject({
    /** The certificate's name in the stack's `certificates` map; also names its files (`<name>.key`, `<name>.chain.pem`). */
    name: matching(
      /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/,
      "a certificate name: 1-100 characters of A-Z, a-z, 0-9, '.', '_', '-', starting with a letter or digit",
    ),
    /** Every name the certificate covers (its subjectAltNames); each must resolve to the Reserved IP. */
    domains: v.pipe(
      listOf(acmeDomain, { min: 1, what: "a list of 1 to 100 DNS names" }),
      v.maxLength(100, (i) => `must have at most 100 domains (the CA's limit), got ${show(i.input)}`),
    ),
    /** The ACME account's contact. */
    email: matching(/^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$/, "an email address such as ops@example.com"),
    /** The CA's ACME directory (https). */
    directoryUrl: url,
    /** A PEM file of CA certificates to trust for the directory's TLS (a private or test CA such as Pebble's); default: the system's. */
    directoryCaFile: v.optional(absolutePath),
    /** External account binding key id; its HMAC key is `<keyDir>/<name>.eab`. */
    eabKid: v.optional(nonEmptyString("a non-empty EAB key id")),
  }),
  crossCheck([["directoryUrl"]], (c, report) => {
    if (new URL(c.directoryUrl).protocol !== "https:") report(["directoryUrl"], `must be an https URL (RFC 8555 requires it), got ${show(c.directoryUrl)}`);
  }),
  crossCheck([["domains"]], (c, report) => {
    const seen = new Set<string>();
    c.domains.forEach((d, i) => {
      if (seen.has(d)) report(["domains", i], `duplicate domain "${d}"`);
      seen.add(d);
    });
  }),
);

/** Automatic HTTPS: the certificates fipd orders while it leads, and where it keeps them. */
export const AcmeSchema = v.pipe(
  strictObject({
    /** The HTTP-01 responder's port on 127.0.0.1; every http frontend routes /.well-known/acme-challenge/ to it. */
    responderPort: v.optional(port, ACME_RESPONDER_PORT),
    /** Where fipd writes the issued chains (public, no key): `<name>.chain.pem`, 0600. */
    stateDir: v.optional(absolutePath, "/var/lib/fipd/acme"),
    /** Where the stack put the keys: `<name>.account.key`, `<name>.key`, `<name>.eab`. */
    keyDir: v.optional(absolutePath, "/etc/fipd/acme"),
    /** Renew when this fraction of the certificate's lifetime remains (1/3: day 60 of 90, day 30 of 45). */
    renewAtRemainingFraction: v.optional(numberIn(0.05, 0.9, "a fraction from 0.05 to 0.9"), 1 / 3),
    /** Each HTTP request of the ACME child to the CA. */
    requestTimeoutMs: v.optional(durationMs(1_000, 120_000), 15_000),
    /** One step of an order (an authorization's validation, the finalization): how long the child polls. */
    stepTimeoutMs: v.optional(durationMs(5_000, 600_000), 90_000),
    /** A whole order, from the account to the chain: the child is killed after it. */
    orderDeadlineMs: v.optional(durationMs(10_000, 3_600_000), 600_000),
    /** The first wait after a failed order; each failure doubles it (with jitter) up to retryMaxMs. */
    retryInitialMs: v.optional(durationMs(1_000, 86_400_000), 60_000),
    retryMaxMs: v.optional(durationMs(1_000, 86_400_000), 6 * 3_600_000),
    /** How often the leader checks whether a certificate is missing or due. */
    checkIntervalMs: v.optional(durationMs(100, 3_600_000), 60_000),
    certificates: listOf(AcmeCertificateSchema, { min: 1, what: "a list of at least 1 certificate" }),
  }),
  crossCheck([["certificates", "$", "name"]], (c, report) => {
    const names = new Set<string>();
    c.certificates.forEach((cert, i) => {
      if (names.has(cert.name)) report(["certificates", i, "name"], `duplicate certificate name "${cert.name}"`);
      names.add(cert.name);
    });
  }),
  crossCheck([["retryInitialMs"], ["retryMaxMs"]], (c, report) => {
    if (c.retryMaxMs < c.retryInitialMs) report(["retryMaxMs"], `must be at least retryInitialMs (${c.retryInitialMs})`);
  }),
);
export type AcmeConfig = v.InferOutput<typeof AcmeSchema>;

export const AgentConfigSchema = v.pipe(
  strictObject({
    /** This node's id; must appear in `members`. */
    nodeId: nodeId,
    /**
     * Monotonic version of the member list, raised by the stack whenever `members` changes.
     * Nodes with different versions run joint consensus (see agent/election/README.md).
     */
    membershipVersion: v.optional(integer(0, Number.MAX_SAFE_INTEGER, "a whole number, 0 or more"), 0),
    /** Every voter: all LB droplets and the witness, this node included. */
    members: listOf(MemberSchema, { min: 1, what: "a list of at least 1 member" }),
    /** The color the operator wants in force; it takes force only when a healthy node of it can lead. */
    activeColor: v.optional(oneOf(COLORS), "blue"),
    /** The Reserved IP the cluster serves. Not needed on the witness. */
    reservedIp: v.optional(ipv4),
    /** Droplet ID override; normally read from the metadata service. */
    dropletId: v.optional(integer(1, Number.MAX_SAFE_INTEGER, "a droplet ID (a whole number, 1 or more)")),
    /** Maintenance mode at start (also switchable with `fipd maintenance on|off`). */
    maintenance: v.optional(boolean, false),
    listen: v.optional(
      strictObject({
        /** Address the peer transport binds (UDP). */
        address: v.optional(ipAddress, ANY_IPV4),
        port: v.optional(port, PEER_PORT),
      }),
      {},
    ),
    peerAuth: v.optional(
      strictObject({
        /** File with the current shared key (at least 32 bytes, hex or raw). Mode 0600. */
        keyFile: v.optional(path, "/etc/fipd/peer.key"),
        /** File with the previous key, accepted (never used to sign) during a key roll. */
        previousKeyFile: v.optional(path),
      }),
      {},
    ),
    api: v.optional(
      strictObject({
        /** https, or http on loopback; plain http elsewhere only with `allowInsecureHttp` (a test bed). */
        baseUrl: v.optional(url, "https://api.digitalocean.com"),
        /** Test beds only: allow an http baseUrl on a non-loopback host (the token would cross the network in clear). */
        allowInsecureHttp: v.optional(boolean, false),
        /** File holding the DigitalOcean token; fipd refuses to start if group or others can read it. */
        tokenFile: v.optional(path, "/etc/fipd/token"),
        /** Per-request timeout. */
        requestTimeoutMs: v.optional(durationMs(100, 60_000), 5_000),
        /** Overall deadline for one assignment, retries included. */
        assignDeadlineMs: v.optional(durationMs(1_000, 600_000), 120_000),
        /** How often the leader confirms through the API (rare: the API is rate limited and shared). */
        verifyIntervalMs: v.optional(durationMs(10_000, 3_600_000), 300_000),
      }),
      {},
    ),
    metadata: v.optional(
      strictObject({
        baseUrl: v.optional(url, METADATA_URL),
        requestTimeoutMs: v.optional(durationMs(50, 30_000), 2_000),
        /** How often the leader checks, for free, that the IP is still on its droplet. */
        checkIntervalMs: v.optional(durationMs(100, 600_000), 1_000),
      }),
      {},
    ),
    health: v.optional(
      strictObject({
        /** The local HAProxy health endpoint: http on loopback or on one of this droplet's own addresses. */
        url: v.optional(url, HAPROXY_HEALTH_URL),
        intervalMs: v.optional(durationMs(10, 60_000), 100),
        timeoutMs: v.optional(durationMs(10, 60_000), 250),
        /** Consecutive successes to become healthy (HAProxy's `rise`). */
        rise: v.optional(integer(1, 100), 2),
        /** Consecutive failures to become unhealthy (HAProxy's `fall`). */
        fall: v.optional(integer(1, 100), 2),
      }),
      {},
    ),
    failover: v.optional(FailoverTimingSchema, {}),
    metrics: v.optional(
      strictObject({
        /** Prometheus endpoint; loopback by default. Set enabled=false to turn it off. */
        enabled: v.optional(boolean, true),
        address: v.optional(ipAddress, LOOPBACK_IPV4),
        port: v.optional(port, METRICS_PORT),
        /** Certificates to export the expiry of (fipd_certificate_expiry_timestamp_seconds); a missing directory exports none. */
        certificateDir: v.optional(absolutePath, CERTIFICATE_DIR),
      }),
      {},
    ),
    /** The election's term and vote, kept across restarts (no secret in it). */
    stateFile: v.optional(path, "/var/lib/fipd/state.json"),
    /** Unix socket for `fipd status|handover|maintenance`. */
    controlSocket: v.optional(absolutePath, "/run/fipd/fipd.sock"),
    /** Log level for the JSON logs on stdout. */
    logLevel: v.optional(oneOf(["debug", "info", "warn", "error"]), "info"),
    /** Automatic HTTPS over ACME (issue 15); absent: none. */
    acme: v.optional(AcmeSchema),
  }),
  // The responder binds 127.0.0.1: it must not take a port another loopback listener of the droplet needs.
  crossCheck(
    [
      ["acme", "responderPort"],
      ["metrics", "port"],
      ["metrics", "enabled"],
    ],
    (c, report) => {
      if (!c.acme) return;
      const taken: [number, string][] = [
        [HAPROXY_HEALTH_PORT, "HAProxy's health frontend"],
        [HAPROXY_METRICS_PORT, "HAProxy's metrics"],
        ...(c.metrics.enabled ? ([[c.metrics.port, "fipd's metrics (metrics.port)"]] as [number, string][]) : []),
      ];
      const clash = taken.find(([p]) => p === c.acme!.responderPort);
      if (clash) report(["acme", "responderPort"], `must differ from ${clash[1]}: both are ${clash[0]}`);
    },
  ),
  crossCheck([["members", "$", "id"]], (c, report) => {
    const ids = new Set<string>();
    c.members.forEach((m, i) => {
      if (ids.has(m.id)) report(["members", i, "id"], `duplicate member id "${m.id}"`);
      ids.add(m.id);
    });
  }),
  // The token travels in the API's Authorization header: never in clear over a network.
  crossCheck(
    [
      ["api", "baseUrl"],
      ["api", "allowInsecureHttp"],
    ],
    (c, report) => {
      const u = new URL(c.api.baseUrl);
      if (u.protocol === "https:") return;
      if (u.protocol !== "http:") report(["api", "baseUrl"], `must be an https URL, got the scheme "${u.protocol.slice(0, -1)}"`);
      else if (!isLoopbackHost(u.hostname) && !c.api.allowInsecureHttp)
        report(
          ["api", "baseUrl"],
          `must be https (the token would cross the network in clear), got http to ${u.hostname}; plain http is allowed on loopback, or with api.allowInsecureHttp: true in a test bed`,
        );
    },
  ),
  // The health check asks this droplet's HAProxy; another host's answer would make a dead LB eligible.
  crossCheck([["health", "url"], ["nodeId"], ["members", "$", "id"], ["members", "$", "address"], ["listen", "address"]], (c, report) => {
    const u = new URL(c.health.url);
    if (u.protocol !== "http:") return report(["health", "url"], `must be an http URL (HAProxy's monitor-uri), got the scheme "${u.protocol.slice(0, -1)}"`);
    const own = [c.members.find((m) => m.id === c.nodeId)?.address, c.listen.address].filter((a): a is string => !!a && a !== ANY_IPV4 && a !== "::");
    const host = hostOf(c.health.url);
    if (!isLoopbackHost(u.hostname) && !own.some((a) => a.toLowerCase() === host)) {
      report(
        ["health", "url"],
        `must be on loopback (127.0.0.1, ::1, localhost) or one of this droplet's own addresses (${own.join(", ") || "none set"}), got ${host}`,
      );
    }
  }),
  crossCheck([["nodeId"], ["members", "$", "id"], ["members", "$", "role"], ["reservedIp"]], (c, report) => {
    const self = c.members.find((m) => m.id === c.nodeId);
    if (!self) {
      report(["nodeId"], `"${c.nodeId}" is not one of members[].id (${[...new Set(c.members.map((m) => m.id))].join(", ")})`);
    } else if (self.role === "lb" && !c.reservedIp) {
      report(["reservedIp"], "is required on a load-balancer node (the IPv4 address of the Reserved IP)");
    }
  }),
);

export type AgentConfig = v.InferOutput<typeof AgentConfigSchema>;
/** What the stack writes: defaults may be left out. */
export type AgentConfigInput = v.InferInput<typeof AgentConfigSchema>;

/** One line per problem: `path: message` (agent/schema.ts). */
export { formatIssues };

export class ConfigError extends Error {
  constructor(
    public readonly problems: string[],
    source: string,
  ) {
    super(`invalid configuration in ${source}:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/** Validate an already-parsed document. Throws ConfigError listing every problem. */
export function parseAgentConfig(doc: unknown, source = "config"): AgentConfig {
  const r = check(AgentConfigSchema, doc);
  if (!r.ok) throw new ConfigError(formatIssues(r.issues), source);
  return r.value;
}
