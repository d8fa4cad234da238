/**
 * The peer messages' schemas: the boundary between the network and the election core. The transport
 * authenticates a packet, then passes its body through `parsePeerMessage`; only what comes out
 * reaches the core, so the core may read every field its type promises without checking.
 *
 * - One schema per `PeerMessage` kind (agent/election/types.ts). A compile-time check below keeps
 *   the schemas and the type equal: a field the core reads is a field the schema requires.
 * - Unknown kinds and missing or mistyped fields drop the message, with a reason the transport
 *   counts (`unknown-kind`, `schema`).
 * - Extra fields are ignored and removed (valibot `object`, not `strictObject`): during a rolling
 *   upgrade a newer build may add a field, and the older nodes must go on reading the rest.
 * - Every string and list is bounded, so a message costs the core a bounded amount of work.
 *
 * Like agent/schema.ts, no I/O: the transport, the tests and the simulator use the same parse.
 */
import * as v from "valibot";
import { COLORS } from "./config.js";
import type { PeerMessage } from "./election/types.js";
import { boolean, check, formatIssues, integer, matching, mustBe, nodeId, numberIn, oneOf, openObject, show } from "./schema.js";

/** Most member ids in one list (a stack has at most 19 voters; hand-written configs get room to spare). */
export const MAX_MEMBER_IDS = 64;
/** Most earlier member lists in joint consensus at once (one per membership change still in flight). */
export const MAX_JOINT_LISTS = 8;
/** Longest reason text (the core writes them: a sentence with a few node ids in it). */
export const MAX_REASON_CHARS = 1_000;
/** Longest build id (today the first 16 hex digits of the bundle's SHA-256). */
export const MAX_BUILD_CHARS = 64;

const count = integer(0, Number.MAX_SAFE_INTEGER, "a whole number, 0 or more");
/** A sender's monotonic time in ms, echoed back to it: any finite number (never compared across nodes). */
const localTimeMs = numberIn(-Number.MAX_VALUE, Number.MAX_VALUE, "a finite number of milliseconds");
const color = oneOf(COLORS);

function boundedString(max: number, what: string) {
  const m = mustBe(what);
  return v.pipe(v.string(m), v.maxLength(max, m), v.description(what));
}
const reason = boundedString(MAX_REASON_CHARS, `a text of at most ${MAX_REASON_CHARS} characters`);

function boundedList<const S extends v.GenericSchema>(item: S, max: number, what: string) {
  const m = mustBe(what);
  return v.pipe(v.array(item, m), v.maxLength(max, m), v.description(what));
}
const memberIds = boundedList(nodeId, MAX_MEMBER_IDS, `a list of at most ${MAX_MEMBER_IDS} node ids`);

const NodeStatusSchema = v.pipe(
  openObject(
    {
      role: oneOf(["lb", "witness"]),
      color: v.nullable(color),
      healthy: boolean,
      maintenance: boolean,
      eligible: boolean,
      membershipVersion: count,
      memberIds,
      jointOldIds: boundedList(memberIds, MAX_JOINT_LISTS, `a list of at most ${MAX_JOINT_LISTS} member id lists`),
      colorInForce: color,
      requestedColor: color,
      holdsReservedIp: v.optional(boolean),
      build: v.optional(boundedString(MAX_BUILD_CHARS, `a build id of at most ${MAX_BUILD_CHARS} characters`)),
    },
    "the sender's status (a mapping)",
  ),
  v.description("the sender's status (a mapping)"),
);

const LeaderInfoSchema = v.pipe(
  openObject({ colorInForce: color, committedMembershipVersion: count, pendingSwitchReason: v.nullable(reason) }, "the leader's information (a mapping)"),
  v.description("the leader's information (a mapping) or null"),
);

const message = <const K extends string, const E extends v.ObjectEntries>(kind: K, entries: E) =>
  openObject({ kind: v.literal(kind), from: nodeId, ...entries }, `a ${kind} message (a mapping)`);

/** One schema per kind: the only place that says what a peer message must hold. */
export const PEER_MESSAGE_SCHEMAS = {
  heartbeat: message("heartbeat", { term: count, seq: count, sentAt: localTimeMs, status: NodeStatusSchema, leader: v.nullable(LeaderInfoSchema) }),
  "heartbeat-ack": message("heartbeat-ack", { term: count, seq: count, echoSentAt: localTimeMs, status: NodeStatusSchema }),
  "prevote-request": message("prevote-request", { nextTerm: count, status: NodeStatusSchema }),
  "prevote-response": message("prevote-response", { nextTerm: count, granted: boolean, reason: v.optional(reason), status: NodeStatusSchema }),
  "vote-request": message("vote-request", { term: count, sentAt: localTimeMs, transfer: boolean, status: NodeStatusSchema }),
  "vote-response": message("vote-response", {
    term: count,
    echoSentAt: localTimeMs,
    granted: boolean,
    reason: v.optional(reason),
    status: NodeStatusSchema,
  }),
  release: message("release", { term: count, successor: v.nullable(nodeId), colorInForce: color, reason }),
} as const;

export type PeerMessageKind = keyof typeof PEER_MESSAGE_SCHEMAS;
export const PEER_MESSAGE_KINDS = Object.keys(PEER_MESSAGE_SCHEMAS) as PeerMessageKind[];

type Parsed = v.InferOutput<(typeof PEER_MESSAGE_SCHEMAS)[PeerMessageKind]>;
// The schemas and the core's type must agree both ways: whatever a schema admits is a PeerMessage
// (so the core never meets a missing field), and every PeerMessage passes (so nothing the core
// sends is dropped by its peers). Either line fails to compile when one side changes alone.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemasMatchTheCore: Same<Parsed, PeerMessage> = true;
void schemasMatchTheCore;

export type PeerMessageParse =
  | { ok: true; message: PeerMessage }
  /** `unknown-kind`: not a message kind this build knows (perhaps a newer build's); `schema`: a known kind, badly formed. */
  | { ok: false; reason: "unknown-kind" | "schema"; kind: string; problems: string[] };

/**
 * Checks one decoded message body (already authenticated). `sender` is the id from the authenticated
 * header: it replaces any `from` in the body, which therefore cannot claim to be someone else.
 */
export function parsePeerMessage(body: unknown, sender: string): PeerMessageParse {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return { ok: false, reason: "schema", kind: "?", problems: [`(root): must be a message (a mapping), got ${show(body)}`] };
  }
  const kind = (body as { kind?: unknown }).kind;
  if (typeof kind !== "string" || !Object.hasOwn(PEER_MESSAGE_SCHEMAS, kind)) {
    return {
      ok: false,
      reason: "unknown-kind",
      kind: typeof kind === "string" ? show(kind) : "?",
      problems: [`kind: must be one of ${PEER_MESSAGE_KINDS.join(", ")}, got ${show(kind)}`],
    };
  }
  const r = check(PEER_MESSAGE_SCHEMAS[kind as PeerMessageKind], { ...body, from: sender });
  if (!r.ok) return { ok: false, reason: "schema", kind, problems: formatIssues(r.issues) };
  return { ok: true, message: r.value as PeerMessage };
}

// ---------------------------------------------------------------------------------------------
// Side messages: peer messages that are not the election's. They ride the same authenticated
// transport but never reach the core; the transport hands them to their own handler. A build that
// does not know a side kind drops it as `unknown-kind` (parsePeerMessage), so adding one is safe in
// a rolling upgrade.

/** Longest ACME challenge token a peer may send (RFC 8555 §8.1: base64url; Let's Encrypt's are 43). */
export const MAX_ACME_TOKEN_CHARS = 128;
/** An ACME key authorization: the token, a dot, and the account key's 43-character base64url thumbprint. */
const MAX_KEY_AUTHORIZATION_CHARS = MAX_ACME_TOKEN_CHARS + 1 + 43;

const acmeToken = matching(
  new RegExp(`^[A-Za-z0-9_-]{16,${MAX_ACME_TOKEN_CHARS}}$`),
  `an ACME token: 16 to ${MAX_ACME_TOKEN_CHARS} base64url characters (A-Z, a-z, 0-9, '-', '_')`,
);

export const SIDE_MESSAGE_SCHEMAS = {
  /** A challenge the leader answers (HTTP-01): every LB answers it too, so a failover mid-validation still passes. */
  "acme-token": v.pipe(
    message("acme-token", {
      token: acmeToken,
      keyAuthorization: matching(
        new RegExp(`^[A-Za-z0-9_-]{16,${MAX_ACME_TOKEN_CHARS}}\\.[A-Za-z0-9_-]{43}$`),
        `an ACME key authorization: the token, a dot and a 43-character base64url thumbprint (at most ${MAX_KEY_AUTHORIZATION_CHARS} characters)`,
      ),
      /** When the token stops being answered (the sender's wall clock, ms since the epoch); the receiver caps it. */
      expiresAtMs: integer(0, Number.MAX_SAFE_INTEGER, "a time in ms since the epoch"),
    }),
    v.check((m) => m.keyAuthorization.startsWith(`${m.token}.`), "keyAuthorization: must start with the token and a dot"),
  ),
} as const;

export type SideMessageKind = keyof typeof SIDE_MESSAGE_SCHEMAS;
export type AcmeTokenMessage = v.InferOutput<(typeof SIDE_MESSAGE_SCHEMAS)["acme-token"]>;
export type SideMessage = AcmeTokenMessage;

/**
 * Checks a body whose kind is a side kind (null when it is not one: then parsePeerMessage decides).
 * As parsePeerMessage, `sender` (from the authenticated header) replaces any `from` in the body.
 */
export function parseSideMessage(body: unknown, sender: string): { ok: true; message: SideMessage } | { ok: false; kind: string; problems: string[] } | null {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return null;
  const kind = (body as { kind?: unknown }).kind;
  if (typeof kind !== "string" || !Object.hasOwn(SIDE_MESSAGE_SCHEMAS, kind)) return null;
  const r = check(SIDE_MESSAGE_SCHEMAS[kind as SideMessageKind], { ...body, from: sender });
  if (!r.ok) return { ok: false, kind, problems: formatIssues(r.issues) };
  return { ok: true, message: r.value };
}
