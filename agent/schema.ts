/**
 * The validation pieces every boundary shares (valibot): the agent's config file, the stack's
 * `ha-lb:*` keys, and next peer messages and the load-balancer config. One home for:
 *
 * - the message shape of a bad value: `must be <what>, got <value>` (`mustBe`), with the value shown
 *   escaped and cut short (`show`), so a message is always one printable line whatever the input;
 * - the common values: durations in ms, ports, IPv4 addresses and CIDRs, node ids, URLs, lists;
 * - strict objects (an unknown key is an error, listed with the known keys) and rules across fields
 *   (`crossCheck`, `exactlyOneOf`) that run as soon as the fields they read are valid, so one parse
 *   reports every problem;
 * - turning issues into lines, `path: message` (`formatIssues`), through `problemsOf`, which the
 *   stack uses to print one line per `ha-lb:` key instead.
 *
 * How to write a schema for a new boundary:
 *   const Hello = v.pipe(
 *     strictObject({ from: nodeId, term: integer(0, Number.MAX_SAFE_INTEGER), leaseMs: durationMs(50, 60_000) }),
 *     crossCheck([["from"]], (m, report) => { if (m.from === "x") report(["from"], "must not be x"); }),
 *   );
 *   const r = check(Hello, JSON.parse(text));   // bound the input's size before parsing it
 *   if (!r.ok) throw new Error(`bad hello:\n  ${formatIssues(r.issues).join("\n  ")}`);
 * Pass every parse through `check` (never `v.parse`): it supplies the one-line message for any schema
 * built without one. Pulumi's inferred multi-language schemas have no unions, so the stack's public
 * config uses optional fields plus `exactlyOneOf`, never `v.union`/`v.variant`.
 *
 * Like agent/config.ts, this module has no I/O and no `@pulumi/*` import: the agent bundle includes it.
 */
import * as v from "valibot";

// ---------------------------------------------------------------------------------------------
// Showing input in a message

/** Longest excerpt of an input value a message shows. */
const SHOW_CHARS = 60;
/** Longest line formatIssues returns (a message plus its path). */
const LINE_CHARS = 400;
/** At most this many lines from formatIssues; the rest are counted in one last line. */
const MAX_LINES = 50;

/**
 * Escapes what a terminal would not print as itself (control, format, surrogate, private-use and
 * unassigned code points, line breaks included) as `\u{…}`, and cuts the text at `max` characters,
 * so that any input (a binary file, a hostile datagram) yields one printable line. Idempotent, so
 * a line built from escaped parts may be passed through again.
 */
export function printable(text: string, max = LINE_CHARS): string {
  const cut = text.length > max ? text.slice(0, max) : text;
  const escaped = cut.replace(/[\p{C}\p{Zl}\p{Zp}]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
  return text.length > max ? `${escaped}… (${text.length} characters)` : escaped;
}

/** An input value as a message shows it: strings quoted and escaped, collections by kind. */
export function show(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "string") return `"${printable(value, SHOW_CHARS)}"`;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint" || value === null) return String(value);
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (typeof value === "object") return "a mapping";
  return `a ${typeof value}`;
}

/** The message of a bad value: `must be <what>, got <value>`. */
export const mustBe =
  (what: string) =>
  (issue: v.BaseIssue<unknown>): string =>
    `must be ${what}, got ${show(issue.input)}`;

/**
 * The fallback message for an issue of a schema built without one (see `check`); valibot's own
 * messages print the raw input.
 */
function fallbackMessage(issue: v.BaseIssue<unknown>): string {
  return `must be ${issue.expected ?? "valid"}, got ${show(issue.input)}`;
}

// ---------------------------------------------------------------------------------------------
// Values. Each carries its description (`v.description`): the phrase after "must be", which the
// message for a missing key repeats.

/** A whole number in [min, max] (safe integers only: YAML and JSON read 1e300 as a number). */
export function integer(min: number, max: number, what = `an integer from ${min} to ${max}`) {
  const m = mustBe(what);
  return v.pipe(v.number(m), v.safeInteger(m), v.minValue(min, m), v.maxValue(max, m), v.description(what));
}

/** A number (not NaN, not infinite) in [min, max]. */
export function numberIn(min: number, max: number, what = `a number from ${min} to ${max}`) {
  const m = mustBe(what);
  return v.pipe(v.number(m), v.finite(m), v.minValue(min, m), v.maxValue(max, m), v.description(what));
}

/** A duration: a whole number of milliseconds in [minMs, maxMs]; its key ends in `Ms`. */
export const durationMs = (minMs: number, maxMs: number) => integer(minMs, maxMs, `a whole number of milliseconds from ${minMs} to ${maxMs}`);

export const port = integer(1, 65535, "a port number from 1 to 65535");

export const boolean = v.pipe(v.boolean(mustBe("true or false")), v.description("true or false"));

/** A string matching `re`; `what` says which strings in words. */
export function matching(re: RegExp, what: string) {
  const m = mustBe(what);
  return v.pipe(v.string(m), v.regex(re, m), v.description(what));
}

export function nonEmptyString(what = "a non-empty string") {
  const m = mustBe(what);
  return v.pipe(v.string(m), v.minLength(1, m), v.description(what));
}

/**
 * A secret (a token, a key): a string of at least `minLength` characters. Its messages give the
 * length or the kind of the value, never the value.
 */
export function secret(what: string, minLength = 1) {
  const m = (issue: v.BaseIssue<unknown>) =>
    `must be ${what}, got ${typeof issue.input === "string" ? `${issue.input.length} characters` : show(issue.input === null ? null : typeof issue.input)}`;
  return v.pipe(v.string(m), v.minLength(minLength, m), v.description(what));
}

/** One of a fixed set of strings. */
export function oneOf<const T extends readonly [string, ...string[]]>(options: T) {
  const what = options.length === 2 ? `"${options[0]}" or "${options[1]}"` : `one of ${options.map((o) => `"${o}"`).join(", ")}`;
  return v.pipe(v.picklist(options, mustBe(what)), v.description(what));
}

export const ipv4 = (() => {
  const what = "an IPv4 address such as 198.51.100.7";
  const m = mustBe(what);
  return v.pipe(v.string(m), v.ipv4(m), v.description(what));
})();

/** An IPv4 or IPv6 address, without brackets or zone: what a listener binds. */
export const ipAddress = (() => {
  const what = "an IP address such as 0.0.0.0, 127.0.0.1 or ::1";
  const m = mustBe(what);
  return v.pipe(v.string(m), v.ip(m), v.description(what));
})();

/** A host name in RFC 1123 syntax: dot-separated labels of a-z, 0-9 and '-' (not first or last), at most 253 characters. */
const HOST_NAME = /^(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

/** True for an IP address, or a host name whose last label is not all digits (`999.1.1.1` is a bad address, not a name). */
export function isHostOrIp(s: string): boolean {
  if (v.IP_REGEX.test(s)) return true;
  return HOST_NAME.test(s) && !/(?:^|\.)[0-9]+\.?$/.test(s);
}

/** Where a peer is reached: an IP address or a host name (resolved when sending). */
export const hostOrIp = (() => {
  const what = "an IP address or a host name such as 10.10.0.2 or lb-1.example.com";
  const m = mustBe(what);
  return v.pipe(v.string(m), v.check(isHostOrIp, m), v.description(what));
})();

/**
 * True when a URL's host (`new URL(…).hostname`, IPv6 in brackets) is this machine's loopback:
 * `localhost`, 127.0.0.0/8 or ::1.
 */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, "");
  if (h === "localhost" || h === "[::1]") return true;
  return v.IPV4_REGEX.test(h) && h.startsWith("127.");
}

/** An IPv4 CIDR: address / prefix length 0-32, as in firewall rules. */
export const cidr4 = (() => {
  const what = "an IPv4 CIDR such as 198.51.100.0/24";
  const m = mustBe(what);
  const valid = (s: string) => {
    const [addr, len, extra] = s.split("/");
    return extra === undefined && len !== undefined && v.IPV4_REGEX.test(addr) && /^(?:[0-9]|[12][0-9]|3[0-2])$/.test(len);
  };
  return v.pipe(v.string(m), v.check(valid, m), v.description(what));
})();

export const nodeId = matching(/^[a-z0-9][a-z0-9-]{0,62}$/, "a node id: 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit");

export const url = (() => {
  const what = "a URL such as http://127.0.0.1:8405/healthz";
  const m = mustBe(what);
  return v.pipe(v.string(m), v.url(m), v.description(what));
})();

/** A list of `item`, with at least `min` entries; `what` names it, `fewer` overrides the message for too few. */
export function listOf<const S extends v.GenericSchema>(item: S, o: { min?: number; what?: string; fewer?: string } = {}) {
  const min = o.min ?? 0;
  const what = o.what ?? `a list${min ? ` of at least ${min}` : ""}`;
  const fewer = o.fewer;
  return v.pipe(
    v.array(item, mustBe(what)),
    v.minLength(min, (i) => fewer ?? `must have at least ${min} ${min === 1 ? "entry" : "entries"}, got ${show(i.input)}`),
    v.description(what),
  );
}

// ---------------------------------------------------------------------------------------------
// Objects and rules across fields

const keyList = (keys: readonly string[]) => keys.join(", ");

/**
 * An object with exactly these keys: a missing required key and an unknown key are errors. All the
 * unknown keys are named in one issue, with the keys that are known. A list is not an object here.
 */
export function strictObject<const E extends v.ObjectEntries>(entries: E) {
  const known = Object.keys(entries);
  const object = v.strictObject(entries, (issue) => {
    const at = issue.path?.[issue.path.length - 1];
    if (at?.origin !== "key") return `must be a mapping, got ${show(issue.input)}`;
    if (issue.expected !== "never") {
      const what = v.getDescription(entries[String(at.key)]);
      return `is required${what ? ` (${what})` : ""}`;
    }
    const unknown = Object.keys(at.input as object).filter((k) => !Object.hasOwn(entries, k));
    return `has unknown key${unknown.length === 1 ? "" : "s"} ${unknown.map((k) => show(k)).join(", ")} (known keys: ${keyList(known)})`;
  });
  // valibot's objects take a list for an object (its indexes as keys).
  const notList = v.custom<v.InferInput<typeof object>>((x) => !Array.isArray(x), mustBe("a mapping"));
  return v.pipe(notList, object);
}

/**
 * An object that ignores and removes unknown keys (valibot `object`), for messages between builds:
 * a newer build may add a field that an older one must skip. A missing key says what it must be,
 * like `strictObject`; `what` names the object in any other message.
 */
export function openObject<const E extends v.ObjectEntries>(entries: E, what: string) {
  return v.object(entries, (issue) => {
    const at = issue.path?.[issue.path.length - 1];
    if (at?.origin === "key") {
      const desc = v.getDescription(entries[String(at.key)]);
      return `is required${desc ? ` (${desc})` : ""}`;
    }
    return `must be ${what}, got ${show(issue.input)}`;
  });
}

type PathKey = string | number;

/** True when no issue lies on, above or under `read` ("$" matches any index of a list). */
function isValidAt(issues: readonly v.BaseIssue<unknown>[] | undefined, read: readonly PathKey[]): boolean {
  for (const issue of issues ?? []) {
    const path = issue.path ?? [];
    const n = Math.min(read.length, path.length);
    let apart = false;
    for (let i = 0; i < n && !apart; i++) apart = !(read[i] === path[i].key || (read[i] === "$" && path[i].type === "array"));
    if (!apart) return false;
  }
  return true;
}

/** The valibot path of `keys` inside `value`. */
function pathItems(value: unknown, keys: readonly PathKey[]): v.IssuePathItem[] {
  const items: v.IssuePathItem[] = [];
  let cur: unknown = value;
  for (const key of keys) {
    const next = (cur as Record<PathKey, unknown> | undefined)?.[key];
    items.push(
      Array.isArray(cur)
        ? { type: "array", origin: "value", input: cur as unknown[], key: key as number, value: next }
        : { type: "object", origin: "value", input: cur as Record<string, unknown>, key: String(key), value: next },
    );
    cur = next;
  }
  return items;
}

export type Report = (path: readonly PathKey[], message: string) => void;

/**
 * A rule across the fields of one object. It runs once every path in `reads` is valid (paths are
 * relative to the object; "$" is any list index), even when other fields are not, so one parse
 * reports every problem; `report` adds an issue at a path relative to the object ([] for the
 * object itself). The rule must read only what `reads` names: nothing else is known to be valid.
 */
export function crossCheck<T>(reads: readonly (readonly PathKey[])[], rule: (value: T, report: Report) => void): v.RawCheckAction<T> {
  return v.rawCheck<T>(({ dataset, addIssue }) => {
    // Not `dataset.typed`: a value of the right type that breaks a bound (a validation issue)
    // leaves the dataset typed, and a rule must not build on it.
    if (!reads.every((r) => isValidAt(dataset.issues, r))) return;
    const value = dataset.value as T;
    rule(value, (path, message) => {
      const items = pathItems(value, path);
      addIssue({
        message,
        input: items.length ? items[items.length - 1].value : value,
        path: items.length ? (items as [v.IssuePathItem, ...v.IssuePathItem[]]) : undefined,
      });
    });
  });
}

/**
 * Exactly one of `keys` must be set: how the stack's config says "this or that" (Pulumi's inferred
 * schemas have no unions). Reported on the object itself.
 */
export function exactlyOneOf<T extends Record<string, unknown>>(keys: readonly (keyof T & string)[]): v.RawCheckAction<T> {
  return crossCheck<T>(
    keys.map((k) => [k]),
    (o, report) => {
      const set = keys.filter((k) => o[k] !== undefined);
      if (set.length !== 1) report([], `needs exactly one of ${keyList(keys)}, got ${set.length ? keyList(set) : "none"}`);
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Parsing and reporting

/** Parses with every issue collected and every message one printable line (see fallbackMessage). */
export function check<S extends v.GenericSchema>(
  schema: S,
  input: unknown,
): { ok: true; value: v.InferOutput<S> } | { ok: false; issues: readonly v.BaseIssue<unknown>[] } {
  const r = v.safeParse(schema, input, { abortEarly: false, message: fallbackMessage });
  return r.success ? { ok: true, value: r.output } : { ok: false, issues: r.issues };
}

/** One problem: where (keys and list indexes from the root) and what. */
export interface Problem {
  path: PathKey[];
  message: string;
  /** A required key is absent (the stack says "is required" and its own expected form). */
  missing: boolean;
}

/**
 * The issues as problems, in order, without repeats. An unknown key is a problem of the object that
 * holds it, so its path stops at that object.
 */
export function problemsOf(issues: readonly v.BaseIssue<unknown>[]): Problem[] {
  const out: Problem[] = [];
  const seen = new Set<string>();
  for (const issue of issues) {
    const items = issue.path ?? [];
    const last = items[items.length - 1];
    const onKey = last?.origin === "key";
    const unknownKey = onKey && issue.expected === "never";
    const path = (unknownKey ? items.slice(0, -1) : items).map((p) => p.key as PathKey);
    const p: Problem = { path, message: printable(issue.message), missing: onKey && !unknownKey };
    const id = JSON.stringify([p.path, p.message]);
    if (!seen.has(id)) out.push(p);
    seen.add(id);
  }
  return out;
}

/** `members[1].color`, `failover.leaseMs`, `(root)`; keys shown escaped. */
export function formatPath(path: readonly PathKey[]): string {
  if (!path.length) return "(root)";
  return path.map((p, n) => (typeof p === "number" ? `[${p}]` : `${n ? "." : ""}${printable(p, SHOW_CHARS)}`)).join("");
}

/** One line per problem: `path: message`, e.g. `failover.leaseMs: must be at least ...`. */
export function formatIssues(issues: readonly v.BaseIssue<unknown>[], prefix = ""): string[] {
  const lines = problemsOf(issues).map((p) => printable(`${prefix}${formatPath(p.path)}: ${p.message}`));
  return lines.length > MAX_LINES ? [...lines.slice(0, MAX_LINES - 1), `… and ${lines.length - MAX_LINES + 1} more problems`] : lines;
}
