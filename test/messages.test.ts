/**
 * The peer-message boundary (agent/messages.ts): what the schemas drop and why, and a property that
 * whatever an authenticated peer sends, the parse plus the election core never throw and never
 * leave the node asserting the IP without a lease.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Election } from "../agent/election/node.js";
import type { NodeStatus, PeerMessage } from "../agent/election/types.js";
import { MAX_MEMBER_IDS, MAX_REASON_CHARS, PEER_MESSAGE_KINDS, parsePeerMessage } from "../agent/messages.js";
import { lbStatus, TWO_LBS_AND_WITNESS as config } from "./fixtures/election.js";

const status: NodeStatus = lbStatus(config);
/** The wire: what a peer's JSON body looks like once parsed on arrival. */
const wire = (x: unknown): unknown => JSON.parse(JSON.stringify(x));

describe("peer message schemas", () => {
  it("drops the malformed prevote-request of issue 12 (no status) with reason schema, naming the field", () => {
    const r = parsePeerMessage(wire({ kind: "prevote-request", from: "b2", nextTerm: 3 }), "b2");
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.reason).toBe("schema");
    expect(r.kind).toBe("prevote-request");
    expect(r.problems).toEqual(["status: is required (the sender's status (a mapping))"]);
  });

  it("drops unknown kinds (reason unknown-kind) and mistyped fields (reason schema), one line per problem", () => {
    const unknown = parsePeerMessage({ kind: "gossip", from: "b2" }, "b2");
    expect(unknown).toMatchObject({ ok: false, reason: "unknown-kind", kind: '"gossip"' });
    expect(parsePeerMessage({ from: "b2" }, "b2")).toMatchObject({ ok: false, reason: "unknown-kind" });
    expect(parsePeerMessage([1, 2], "b2")).toMatchObject({ ok: false, reason: "schema" });
    expect(parsePeerMessage("heartbeat", "b2")).toMatchObject({ ok: false, reason: "schema" });
    // Inherited names are not kinds.
    expect(parsePeerMessage({ kind: "toString" }, "b2")).toMatchObject({ ok: false, reason: "unknown-kind" });
    const bad = parsePeerMessage(
      { kind: "vote-request", term: -1, sentAt: "now", transfer: false, status: { ...status, eligible: "yes", memberIds: ["B 2"] } },
      "b2",
    );
    expect(bad.ok).toBe(false);
    if (bad.ok) return;
    expect(bad.reason).toBe("schema");
    expect(bad.problems).toEqual([
      "term: must be a whole number, 0 or more, got -1",
      'sentAt: must be a finite number of milliseconds, got "now"',
      'status.eligible: must be true or false, got "yes"',
      "status.memberIds[0]: must be a node id: 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit, got \"B 2\"",
    ]);
  });

  it("bounds strings and lists", () => {
    const many = Array.from({ length: MAX_MEMBER_IDS + 1 }, (_, i) => `n${i}`);
    expect(parsePeerMessage({ kind: "prevote-request", nextTerm: 1, status: { ...status, memberIds: many } }, "b2")).toMatchObject({
      ok: false,
      reason: "schema",
    });
    const long = "x".repeat(MAX_REASON_CHARS + 1);
    expect(parsePeerMessage({ kind: "release", term: 1, successor: null, colorInForce: "blue", reason: long }, "b2")).toMatchObject({
      ok: false,
      reason: "schema",
    });
    expect(parsePeerMessage({ kind: "release", term: 1, successor: null, colorInForce: "blue", reason: long.slice(1) }, "b2").ok).toBe(true);
  });

  it("ignores and removes extra fields (a newer build's), and takes the sender from the authenticated header", () => {
    const r = parsePeerMessage(
      wire({
        kind: "heartbeat",
        from: "mallory",
        term: 2,
        seq: 7,
        sentAt: 1234.5,
        epoch: 9,
        status: { ...status, build: "0e00e00e00e00e00", zone: "ams3" },
        leader: { colorInForce: "blue", committedMembershipVersion: 1, pendingSwitchReason: null, lag: [1, 2] },
      }),
      "b2",
    );
    expect(r).toEqual({
      ok: true,
      message: {
        kind: "heartbeat",
        from: "b2",
        term: 2,
        seq: 7,
        sentAt: 1234.5,
        status: { ...status, build: "0e00e00e00e00e00" },
        leader: { colorInForce: "blue", committedMembershipVersion: 1, pendingSwitchReason: null },
      },
    });
  });

  it("a malformed prevote-request never reaches the core: the core, fed only what the parse admits, stays a quiet follower", () => {
    const node = new Election(config, 0);
    node.step({ type: "health", now: 0, healthy: true });
    const sent: PeerMessage[] = [];
    for (let now = 1; now < 50; now++) {
      const r = parsePeerMessage(wire({ kind: "prevote-request", from: "b2", nextTerm: now }), "b2");
      if (r.ok) sent.push(...node.step({ type: "message", now, message: r.message }).send.map((s) => s.message));
    }
    expect(sent).toEqual([]);
    expect(node.snapshot(50).members.find((m) => m.id === "b2")!.lastHeardAt).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------
// The property: arbitrary authenticated messages, valid or not, in any order.

const id = fc.constantFrom("b1", "b2", "w", "x");
const color = fc.constantFrom("blue", "green");
const term = fc.nat(6);
const time = fc.oneof(fc.nat(5_000), fc.double({ noNaN: true, noDefaultInfinity: true }));
const arbStatus = fc.record({
  role: fc.constantFrom("lb", "witness"),
  color: fc.option(color),
  healthy: fc.boolean(),
  maintenance: fc.boolean(),
  eligible: fc.boolean(),
  membershipVersion: fc.nat(3),
  memberIds: fc.oneof(fc.constant(["b1", "b2", "w"]), fc.uniqueArray(id, { maxLength: 4 })),
  jointOldIds: fc.array(fc.uniqueArray(id, { maxLength: 4 }), { maxLength: 2 }),
  colorInForce: color,
  requestedColor: color,
});
/** Messages of the right shape, with values that matter to the core (small terms, members' ids). */
const validShape = fc.oneof(
  fc.record({
    kind: fc.constant("heartbeat"),
    term,
    seq: fc.nat(),
    sentAt: time,
    status: arbStatus,
    leader: fc.option(fc.record({ colorInForce: color, committedMembershipVersion: fc.nat(3), pendingSwitchReason: fc.option(fc.string()) })),
  }),
  fc.record({ kind: fc.constant("heartbeat-ack"), term, seq: fc.nat(), echoSentAt: time, status: arbStatus }),
  fc.record({ kind: fc.constant("prevote-request"), nextTerm: term, status: arbStatus }),
  fc.record({ kind: fc.constant("prevote-response"), nextTerm: term, granted: fc.boolean(), status: arbStatus }),
  fc.record({ kind: fc.constant("vote-request"), term, sentAt: time, transfer: fc.boolean(), status: arbStatus }),
  fc.record({ kind: fc.constant("vote-response"), term, echoSentAt: time, granted: fc.boolean(), status: arbStatus }),
  fc.record({ kind: fc.constant("release"), term, successor: fc.option(id), colorInForce: color, reason: fc.string() }),
);
/** A valid shape broken in one place: a field removed, retyped or added, at the top or in `status`. */
const mutated = fc
  .tuple(validShape, fc.nat(), fc.jsonValue({ maxDepth: 2 }), fc.constantFrom("drop", "retype", "add", "drop-status-field", "retype-status-field"))
  .map(([m, pick, value, how]) => {
    const o: Record<string, unknown> = { ...m };
    const st = typeof o.status === "object" && o.status !== null ? { ...(o.status as Record<string, unknown>) } : null;
    const keys = Object.keys(o);
    const key = keys[pick % keys.length];
    if (how === "drop") delete o[key];
    else if (how === "retype") o[key] = value;
    else if (how === "add") o[`x${pick % 5}`] = value;
    else if (st) {
      const sk = Object.keys(st)[pick % Object.keys(st).length];
      if (how === "drop-status-field") delete st[sk];
      else st[sk] = value;
      o.status = st;
    }
    return o;
  });
/** Anything at all, and objects with a known kind but arbitrary fields. */
const junk = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.dictionary(fc.constantFrom(...PEER_MESSAGE_KINDS, "kind", "from", "term", "status"), fc.jsonValue({ maxDepth: 2 })),
  fc.record({ kind: fc.constantFrom(...PEER_MESSAGE_KINDS) }, { requiredKeys: [] }),
);
const arbBody = fc.oneof({ arbitrary: validShape, weight: 4 }, { arbitrary: mutated, weight: 3 }, { arbitrary: junk, weight: 1 });

/** The granting answer to a request (or the ack of a leader's heartbeat); null when there is nothing to answer. */
function answer(m: PeerMessage | undefined): object | null {
  const st = { ...status, memberIds: ["b1", "b2", "w"] };
  if (m?.kind === "prevote-request") return { kind: "prevote-response", nextTerm: m.nextTerm, granted: true, status: st };
  if (m?.kind === "vote-request") return { kind: "vote-response", term: m.term, echoSentAt: m.sentAt, granted: true, status: st };
  if (m?.kind === "heartbeat" && m.leader) return { kind: "heartbeat-ack", term: m.term, seq: m.seq, echoSentAt: m.sentAt, status: st };
  return null;
}

const arbEvents = fc.array(
  fc.tuple(
    fc.nat(200),
    fc.oneof(
      { arbitrary: fc.record({ sender: id, body: arbBody }), weight: 8 },
      // A peer that answers the node's latest request in kind and grants it: lets the node win and lead.
      { arbitrary: fc.record({ answer: fc.constantFrom("b2", "w") }), weight: 3 },
      { arbitrary: fc.constant("tick" as const), weight: 2 },
      { arbitrary: fc.boolean(), weight: 1 },
    ),
  ),
  { maxLength: 80, size: "medium" },
);

describe("parse + core under arbitrary authenticated messages", () => {
  it("never throws, never sends what its peers would drop, and never asserts without a lease", () => {
    let admitted = 0;
    let dropped = 0;
    let ledWithLease = 0;
    fc.assert(
      fc.property(arbEvents, (events) => {
        const node = new Election(config, 0);
        node.step({ type: "health", now: 0, healthy: true });
        let now = 0;
        let asserting = false;
        const lastSent = new Map<string, PeerMessage>();
        for (const [dt, e] of events) {
          now += dt;
          let out;
          if (e === "tick") out = node.step({ type: "tick", now });
          else if (typeof e === "boolean") out = node.step({ type: "health", now, healthy: e });
          else {
            const body = "answer" in e ? answer(lastSent.get(e.answer)) : e.body;
            const r = parsePeerMessage(wire(body), "answer" in e ? e.answer : e.sender);
            if (!r.ok) {
              dropped++;
              continue;
            }
            admitted++;
            out = node.step({ type: "message", now, message: r.message });
          }
          // What the core sends, its peers admit (the schemas are not stricter than the core).
          for (const s of out.send) {
            expect(parsePeerMessage(wire(s.message), "b1")).toMatchObject({ ok: true });
            // The latest message that asks for an answer (not a follower's status beacon).
            if (s.message.kind !== "heartbeat" || s.message.leader) lastSent.set(s.to, s.message);
          }
          for (const eff of out.effects) {
            if (eff.type === "start-asserting") asserting = true;
            if (eff.type === "stop-asserting") asserting = false;
          }
          // A1 on what the shell is told (the effects) and on the core's own flag.
          const p = node.probe(now);
          expect(p.asserting).toBe(asserting);
          if (asserting) {
            expect(p.leaseValid, `asserting at ${now} without a lease (role ${p.role})`).toBe(true);
            ledWithLease++;
          }
          // S3: only an eligible node of the color it believes in force holds a lease.
          if (p.leaseValid) expect(p.eligible && p.color === p.colorInForce).toBe(true);
        }
      }),
      { numRuns: 250 },
    );
    // The property must have exercised both sides of the boundary and a leader's lease.
    expect(admitted).toBeGreaterThan(1_000);
    expect(dropped).toBeGreaterThan(1_000);
    expect(ledWithLease).toBeGreaterThan(0);
  });
});
