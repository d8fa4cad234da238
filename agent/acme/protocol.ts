/**
 * The pipe between fipd and its ACME child (dist/fipd-acme.cjs): JSON lines both ways, each parsed
 * against these schemas and bounded in size, so neither side trusts what the other wrote.
 *
 * fipd → child (stdin): first the order (`OrderRequest`), then one `published` line per challenge
 * once fipd holds the token (in its store and sent to the peers), so the child tells the CA to
 * validate only when every LB can answer. Closing stdin tells the child to stop.
 * child → fipd (stdout): `step` lines (progress, for the status), `challenge`, and finally exactly
 * one `issued` or `error`.
 *
 * No I/O and no acme-client here: fipd's own bundle imports this module.
 */
import * as v from "valibot";
import { check, durationMs, formatIssues, integer, listOf, matching, mustBe, nonEmptyString, printable, secret, strictObject, url } from "../schema.js";
import { ACME_TOKEN, KEY_AUTHORIZATION, MAX_CHAIN_BYTES } from "./store.js";

/** The order line: keys and a CA file are a few KiB; more is not an order. */
export const MAX_INPUT_LINE_BYTES = 256 * 1024;
/** An output line: an issued chain and its JSON escaping. */
export const MAX_OUTPUT_LINE_BYTES = 2 * MAX_CHAIN_BYTES;
/** A reason as the child reports it: one printable line. */
export const MAX_REASON_CHARS = 400;

const pem = (what: string) => secret(`a PEM ${what}`, 32);

export const OrderRequestSchema = strictObject({
  kind: v.literal("order"),
  directoryUrl: url,
  /** PEM CA certificates to trust for the directory's TLS; absent: the system's roots. */
  directoryCaPem: v.optional(v.pipe(nonEmptyString("PEM CA certificates"), v.maxLength(128 * 1024, "must be at most 128 KiB"))),
  email: nonEmptyString("an email address"),
  eab: v.optional(strictObject({ kid: nonEmptyString("an EAB key id"), hmacKey: secret("a base64url EAB HMAC key", 16) })),
  accountKeyPem: pem("account private key"),
  certificateKeyPem: pem("certificate private key"),
  domains: listOf(nonEmptyString("a DNS name"), { min: 1, what: "a list of 1 or more DNS names" }),
  /** Each HTTP request to the CA. */
  requestTimeoutMs: durationMs(100, 600_000),
  /** Each wait for a status (a challenge's validation, the finalization). */
  stepTimeoutMs: durationMs(100, 3_600_000),
});
export type OrderRequest = v.InferOutput<typeof OrderRequestSchema>;

export const PublishedSchema = strictObject({ kind: v.literal("published"), token: matching(ACME_TOKEN, "an ACME token") });

export const STEPS = ["directory", "account", "order", "validation", "finalize", "download"] as const;

/** One schema per `kind` of child line (strict objects: valibot's variant does not take them). */
export const CHILD_LINE_SCHEMAS = {
  step: strictObject({ kind: v.literal("step"), step: v.picklist(STEPS) }),
  challenge: strictObject({
    kind: v.literal("challenge"),
    domain: nonEmptyString("a DNS name"),
    token: matching(ACME_TOKEN, "an ACME token"),
    keyAuthorization: matching(KEY_AUTHORIZATION, "a key authorization (token.thumbprint)"),
  }),
  issued: strictObject({
    kind: v.literal("issued"),
    pem: v.pipe(nonEmptyString("a PEM chain"), v.maxLength(MAX_CHAIN_BYTES, `must be at most ${MAX_CHAIN_BYTES} characters`)),
  }),
  error: strictObject({
    kind: v.literal("error"),
    reason: v.pipe(nonEmptyString("a reason"), v.maxLength(MAX_REASON_CHARS * 2, "must be one short line")),
    /** Seconds the CA asked us to wait (Retry-After). */
    retryAfterS: v.optional(integer(0, 30 * 86_400)),
    /** The CA said rateLimited (RFC 8555 §6.7): no new order before retryAfterS. */
    rateLimited: v.optional(v.boolean()),
  }),
};
export type ChildLine = { [K in keyof typeof CHILD_LINE_SCHEMAS]: v.InferOutput<(typeof CHILD_LINE_SCHEMAS)[K]> }[keyof typeof CHILD_LINE_SCHEMAS];

/** A line of the child's stdout, checked against the schema of its kind. */
export const ChildLineSchema = v.pipe(
  v.looseObject(
    {
      kind: v.picklist(Object.keys(CHILD_LINE_SCHEMAS) as (keyof typeof CHILD_LINE_SCHEMAS)[], mustBe(`a kind: ${Object.keys(CHILD_LINE_SCHEMAS).join(", ")}`)),
    },
    mustBe("an object"),
  ),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const r = check(CHILD_LINE_SCHEMAS[dataset.value.kind] as v.GenericSchema, dataset.value);
    if (r.ok) return r.value as ChildLine;
    for (const i of r.issues) addIssue({ message: formatIssues([i])[0] });
    return NEVER;
  }),
);

/** Parses one line against `schema`; a line too long, not JSON or not matching is an error naming `what`. */
export function parseLine<S extends v.GenericSchema>(schema: S, line: string, maxBytes: number, what: string): v.InferOutput<S> {
  if (Buffer.byteLength(line) > maxBytes) throw new Error(`${what}: a line of ${Buffer.byteLength(line)} bytes, more than the ${maxBytes} allowed`);
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    throw new Error(`${what}: not JSON: ${printable(line, 80)}`);
  }
  const r = check(schema, doc);
  if (!r.ok) throw new Error(`${what}: ${formatIssues(r.issues).join("; ")}`);
  return r.value;
}

/**
 * Splits a byte stream into lines, refusing any line over `maxBytes` (the rest of the stream is then
 * dropped: a peer that overflows once is not trusted to resync).
 */
export function lineSplitter(maxBytes: number, onLine: (line: string) => void, onOverflow: (bytes: number) => void): (chunk: Buffer | string) => void {
  let buf = "";
  let dead = false;
  return (chunk) => {
    if (dead) return;
    buf += chunk.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (Buffer.byteLength(line) > maxBytes) {
        dead = true;
        return onOverflow(Buffer.byteLength(line));
      }
      if (line.trim()) onLine(line);
      if (dead) return;
    }
    if (Buffer.byteLength(buf) > maxBytes) {
      dead = true;
      onOverflow(Buffer.byteLength(buf));
    }
  };
}
