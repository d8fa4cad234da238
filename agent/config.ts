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
import { z } from "zod";
import { ANY_IPV4, HAPROXY_HEALTH_URL, LOOPBACK_IPV4, METADATA_URL, METRICS_PORT, PEER_PORT } from "./ports.js";

export const COLORS = ["blue", "green"] as const;
export type Color = (typeof COLORS)[number];

const durationMs = (min: number, max: number) => z.number().int().min(min).max(max);
const port = z.number().int().min(1).max(65535);
const ipv4 = z.ipv4();
const nodeId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit");

/**
 * Election timing. Defaults give a failover of about 300 ms after a leader's death with 0 ms network
 * delay (see agent/election/README.md for the derivation) while riding out 1 % loss and 20 ms jitter.
 */
export const FailoverTimingSchema = z
  .strictObject({
    /** How often every node sends a heartbeat to every other member. */
    heartbeatIntervalMs: durationMs(10, 5_000).default(50),
    /** How long a vote or heartbeat acknowledgement promises not to back another leader. */
    leaseMs: durationMs(50, 60_000).default(300),
    /** Upper bound on the rate difference between any node's monotonic clock and real time (0.01 = 1 %). */
    maxClockDrift: z.number().min(0).max(0.1).default(0.01),
    /** Extra wait per rank before a lower-ranked node stands for election, so the best node usually goes first. */
    candidateBackoffMs: durationMs(0, 10_000).default(25),
    /** How long a vote request waits for answers before the candidate gives up and retries later. */
    electionTimeoutMs: durationMs(10, 60_000).default(150),
    /** A returning better node takes over a working leader only when true (keepalived's preemption). */
    preempt: z.boolean().default(false),
  })
  .check((ctx) => {
    const t = ctx.value;
    if (t.heartbeatIntervalMs * 3 > t.leaseMs) {
      ctx.issues.push({
        code: "custom",
        input: t.leaseMs,
        path: ["leaseMs"],
        message: `must be at least 3 × heartbeatIntervalMs (${t.heartbeatIntervalMs * 3} ms) so that one lost heartbeat does not end a lease`,
      });
    }
  });
export type FailoverTiming = z.output<typeof FailoverTimingSchema>;

export const MemberSchema = z
  .strictObject({
    /** Stable identifier; ties between equal priorities go to the lowest id. */
    id: nodeId,
    /** Address and port the peer transport reaches this member on (VPC address for LBs, public for the witness). */
    address: z.string().min(1),
    port: port.default(PEER_PORT),
    /** `witness` votes but never leads. */
    role: z.enum(["lb", "witness"]).default("lb"),
    /** The color of an LB; a witness has none. */
    color: z.enum(COLORS).optional(),
    /** Higher leads first. */
    priority: z.number().int().min(0).max(255).default(100),
  })
  .check((ctx) => {
    const m = ctx.value;
    if (m.role === "lb" && !m.color) {
      ctx.issues.push({ code: "custom", input: m, path: ["color"], message: 'is required for a member with role "lb" ("blue" or "green")' });
    }
    if (m.role === "witness" && m.color) {
      ctx.issues.push({ code: "custom", input: m.color, path: ["color"], message: "must not be set for a witness (a witness never leads)" });
    }
  });
export type Member = z.output<typeof MemberSchema>;

export const AgentConfigSchema = z
  .strictObject({
    /** This node's id; must appear in `members`. */
    nodeId: nodeId,
    /**
     * Monotonic version of the member list, raised by the stack whenever `members` changes.
     * Nodes with different versions run joint consensus (see agent/election/README.md).
     */
    membershipVersion: z.number().int().min(0).default(0),
    /** Every voter: all LB droplets and the witness, this node included. */
    members: z.array(MemberSchema).min(1),
    /** The color the operator wants in force; it takes force only when a healthy node of it can lead. */
    activeColor: z.enum(COLORS).default("blue"),
    /** The Reserved IP the cluster serves. Not needed on the witness. */
    reservedIp: ipv4.optional(),
    /** Droplet ID override; normally read from the metadata service. */
    dropletId: z.number().int().positive().optional(),
    /** Maintenance mode at start (also switchable with `fipd maintenance on|off`). */
    maintenance: z.boolean().default(false),
    listen: z
      .strictObject({
        /** Address the peer transport binds (UDP). */
        address: z.string().min(1).default(ANY_IPV4),
        port: port.default(PEER_PORT),
      })
      .prefault({}),
    peerAuth: z
      .strictObject({
        /** File with the current shared key (at least 32 bytes, hex or raw). Mode 0600. */
        keyFile: z.string().min(1).default("/etc/fipd/peer.key"),
        /** File with the previous key, accepted (never used to sign) during a key roll. */
        previousKeyFile: z.string().min(1).optional(),
      })
      .prefault({}),
    api: z
      .strictObject({
        baseUrl: z.url().default("https://api.digitalocean.com"),
        /** File holding the DigitalOcean token; fipd refuses to start if group or others can read it. */
        tokenFile: z.string().min(1).default("/etc/fipd/token"),
        /** Per-request timeout. */
        requestTimeoutMs: durationMs(100, 60_000).default(5_000),
        /** Overall deadline for one assignment, retries included. */
        assignDeadlineMs: durationMs(1_000, 600_000).default(120_000),
        /** How often the leader confirms through the API (rare: the API is rate limited and shared). */
        verifyIntervalMs: durationMs(10_000, 3_600_000).default(300_000),
      })
      .prefault({}),
    metadata: z
      .strictObject({
        baseUrl: z.url().default(METADATA_URL),
        requestTimeoutMs: durationMs(50, 30_000).default(2_000),
        /** How often the leader checks, for free, that the IP is still on its droplet. */
        checkIntervalMs: durationMs(100, 600_000).default(1_000),
      })
      .prefault({}),
    health: z
      .strictObject({
        /** The local HAProxy health endpoint; must be on loopback. */
        url: z.url().default(HAPROXY_HEALTH_URL),
        intervalMs: durationMs(10, 60_000).default(100),
        timeoutMs: durationMs(10, 60_000).default(250),
        /** Consecutive successes to become healthy (HAProxy's `rise`). */
        rise: z.number().int().min(1).max(100).default(2),
        /** Consecutive failures to become unhealthy (HAProxy's `fall`). */
        fall: z.number().int().min(1).max(100).default(2),
      })
      .prefault({}),
    failover: FailoverTimingSchema.prefault({}),
    metrics: z
      .strictObject({
        /** Prometheus endpoint; loopback by default. Set enabled=false to turn it off. */
        enabled: z.boolean().default(true),
        address: z.string().min(1).default(LOOPBACK_IPV4),
        port: port.default(METRICS_PORT),
      })
      .prefault({}),
    /** The election's term and vote, kept across restarts (no secret in it). */
    stateFile: z.string().min(1).default("/var/lib/fipd/state.json"),
    /** Unix socket for `fipd status|handover|maintenance`. */
    controlSocket: z.string().min(1).default("/run/fipd/fipd.sock"),
    /** Log level for the JSON logs on stdout. */
    logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
  })
  .check((ctx) => {
    const c = ctx.value;
    const ids = new Set<string>();
    c.members.forEach((m, i) => {
      if (ids.has(m.id)) ctx.issues.push({ code: "custom", input: m.id, path: ["members", i, "id"], message: `duplicate member id "${m.id}"` });
      ids.add(m.id);
    });
    const self = c.members.find((m) => m.id === c.nodeId);
    if (!self) {
      ctx.issues.push({ code: "custom", input: c.nodeId, path: ["nodeId"], message: `"${c.nodeId}" is not one of members[].id (${[...ids].join(", ")})` });
    } else if (self.role === "lb" && !c.reservedIp) {
      ctx.issues.push({
        code: "custom",
        input: undefined,
        path: ["reservedIp"],
        message: "is required on a load-balancer node (the IPv4 address of the Reserved IP)",
      });
    }
  });

export type AgentConfig = z.output<typeof AgentConfigSchema>;
/** What the stack writes: defaults may be left out. */
export type AgentConfigInput = z.input<typeof AgentConfigSchema>;

/** One line per problem: `path: message`, e.g. `failover.leaseMs: must be at least ...`. */
export function formatIssues(issues: readonly z.core.$ZodIssue[], prefix = ""): string[] {
  return issues.map((i) => {
    const path = i.path.length ? i.path.map((p, n) => (typeof p === "number" ? `[${p}]` : `${n ? "." : ""}${String(p)}`)).join("") : "(root)";
    return `${prefix}${path}: ${i.message}`;
  });
}

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
  const r = AgentConfigSchema.safeParse(doc);
  if (!r.success) throw new ConfigError(formatIssues(r.error.issues), source);
  return r.data;
}
