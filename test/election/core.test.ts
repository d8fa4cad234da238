/** Unit properties of the pure core: determinism and robustness against arbitrary input. */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createElectionNode } from "../../agent/election/index.js";
import { Election } from "../../agent/election/node.js";
import type { ElectionEvent, ElectionOutput, PeerMessage } from "../../agent/election/types.js";
import { lbStatus, TWO_LBS_AND_WITNESS as config } from "../fixtures/election.js";

const status = lbStatus(config);

const arbMessage: fc.Arbitrary<PeerMessage> = fc.oneof(
  fc.record({
    kind: fc.constant("heartbeat" as const),
    from: fc.constantFrom("b2", "w", "x"),
    term: fc.nat(5),
    seq: fc.nat(),
    sentAt: fc.nat(10_000),
    status: fc.constant(status),
    leader: fc.option(
      fc.record({
        colorInForce: fc.constantFrom("blue" as const, "green" as const),
        committedMembershipVersion: fc.nat(3),
        pendingSwitchReason: fc.constant(null),
      }),
    ),
  }),
  fc.record({
    kind: fc.constant("heartbeat-ack" as const),
    from: fc.constantFrom("b2", "w"),
    term: fc.nat(5),
    seq: fc.nat(),
    echoSentAt: fc.nat(10_000),
    status: fc.constant(status),
  }),
  fc.record({ kind: fc.constant("prevote-request" as const), from: fc.constantFrom("b2", "w"), nextTerm: fc.nat(6), status: fc.constant(status) }),
  fc.record({
    kind: fc.constant("prevote-response" as const),
    from: fc.constantFrom("b2", "w"),
    nextTerm: fc.nat(6),
    granted: fc.boolean(),
    status: fc.constant(status),
  }),
  fc.record({
    kind: fc.constant("vote-request" as const),
    from: fc.constantFrom("b2", "w"),
    term: fc.nat(6),
    sentAt: fc.nat(10_000),
    transfer: fc.boolean(),
    status: fc.constant(status),
  }),
  fc.record({
    kind: fc.constant("vote-response" as const),
    from: fc.constantFrom("b2", "w"),
    term: fc.nat(6),
    echoSentAt: fc.nat(10_000),
    granted: fc.boolean(),
    status: fc.constant(status),
  }),
  fc.record({
    kind: fc.constant("release" as const),
    from: fc.constantFrom("b2", "w"),
    term: fc.nat(6),
    successor: fc.option(fc.constantFrom("b1", "b2")),
    colorInForce: fc.constantFrom("blue" as const, "green" as const),
    reason: fc.constant("test"),
  }),
);

/** b2 answering the node's latest request to it, and granting it: lets the node win and lead. */
function answer(m: PeerMessage | undefined, now: number): ElectionEvent {
  if (m?.kind === "prevote-request")
    return { type: "message", now, message: { kind: "prevote-response", from: "b2", nextTerm: m.nextTerm, granted: true, status } };
  if (m?.kind === "vote-request")
    return { type: "message", now, message: { kind: "vote-response", from: "b2", term: m.term, echoSentAt: m.sentAt, granted: true, status } };
  if (m?.kind === "heartbeat" && m.leader)
    return { type: "message", now, message: { kind: "heartbeat-ack", from: "b2", term: m.term, seq: m.seq, echoSentAt: m.sentAt, status } };
  return { type: "tick", now };
}

type Step = { type: "answer" } | Omit<ElectionEvent, "now">;

const arbEvents: fc.Arbitrary<Array<[number, Step]>> = fc.array(
  fc.tuple(
    fc.nat(400),
    // Ticks and a granting peer's answers weigh more: a node must get through its quiet period and
    // an election to lead at all, and "never asserts without a lease" checks nothing unless some runs lead.
    fc.oneof(
      { arbitrary: fc.constant({ type: "tick" as const }), weight: 4 },
      { arbitrary: fc.constant({ type: "answer" as const }), weight: 6 },
      { arbitrary: arbMessage.map((message) => ({ type: "message" as const, message })), weight: 2 },
      { arbitrary: fc.boolean().map((healthy) => ({ type: "health" as const, healthy })), weight: 1 },
      { arbitrary: fc.boolean().map((on) => ({ type: "maintenance" as const, on })), weight: 1 },
      { arbitrary: fc.constant({ type: "handover" as const, reason: "test" }), weight: 1 },
    ),
  ),
  { maxLength: 60 },
);

/** Steps a fresh node (healthy from the start) through `events`; `each` sees every output. */
function drive(events: Array<[number, Step]>, each: (node: Election, out: ElectionOutput, now: number) => void = () => undefined) {
  const node = new Election(config, 0);
  const outs = [node.step({ type: "health", now: 0, healthy: true })];
  let lastToB2: PeerMessage | undefined;
  let now = 0;
  for (const [dt, e] of events) {
    now += dt;
    const out = node.step(e.type === "answer" ? answer(lastToB2, now) : ({ ...e, now } as ElectionEvent));
    // Remember the latest message that asks for an answer (not a follower's status beacon).
    for (const s of out.send) if (s.to === "b2" && (s.message.kind !== "heartbeat" || s.message.leader)) lastToB2 = s.message;
    outs.push(out);
    each(node, out, now);
  }
  return { outs, snap: node.snapshot(now) };
}

describe("election core", () => {
  it("is deterministic and never throws on arbitrary event sequences", () => {
    fc.assert(
      fc.property(arbEvents, (events) => {
        const a = drive(events);
        const b = drive(events);
        expect(b).toEqual(a);
        for (const o of a.outs) expect(o.wakeAt).toBeGreaterThanOrEqual(0);
      }),
      { numRuns: 300 },
    );
  });

  it("never asserts without a lease, whatever arrives", () => {
    // Judged on what the shell is told (start/stop-asserting effects) and on the core's raw flag,
    // not on snapshot().asserting, which is `asserting && leaseValid` and so cannot disagree.
    let assertingSteps = 0;
    fc.assert(
      fc.property(arbEvents, (events) => {
        let told = false;
        drive(events, (node, out, now) => {
          for (const eff of out.effects) {
            if (eff.type === "start-asserting") told = true;
            if (eff.type === "stop-asserting") told = false;
          }
          const s = node.snapshot(now);
          const leaseValid = s.role === "leader" && s.leaseValidUntil !== null && now < s.leaseValidUntil;
          expect(node.probe(now).asserting, "the core's flag and the effects it emitted disagree").toBe(told);
          if (told) {
            expect(leaseValid, `asserting at ${now} without a valid lease (role ${s.role}, lease until ${s.leaseValidUntil})`).toBe(true);
            assertingSteps++;
          }
        });
      }),
      { numRuns: 300 },
    );
    // Leading must have happened, or the property above checked nothing.
    expect(assertingSteps).toBeGreaterThan(0);
  });

  it("a lone restarted node stays quiet, then stands and leads a one-node cluster", () => {
    const solo = { ...config, members: [config.members[0]] };
    const node = createElectionNode(solo, 1000);
    const first = node.step({ type: "health", now: 1000, healthy: true });
    expect(first.effects.some((e) => e.type === "start-asserting")).toBe(false);
    const out = node.step({ type: "tick", now: first.wakeAt + 400 });
    expect(node.snapshot(first.wakeAt + 400).role).toBe("leader");
    expect(out.effects.some((e) => e.type === "start-asserting")).toBe(true);
  });
});
