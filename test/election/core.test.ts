/** Unit properties of the pure core: determinism and robustness against arbitrary input. */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createElectionNode } from "../../agent/election/index.js";
import type { ElectionConfig, ElectionEvent, PeerMessage } from "../../agent/election/types.js";
import { DEFAULT_TIMING } from "../../testbed/sim/scenario.js";

const config: ElectionConfig = {
  nodeId: "b1",
  membershipVersion: 1,
  activeColor: "blue",
  timing: DEFAULT_TIMING,
  members: [
    { id: "b1", address: "x", port: 1, role: "lb", color: "blue", priority: 100 },
    { id: "b2", address: "x", port: 1, role: "lb", color: "blue", priority: 100 },
    { id: "w", address: "x", port: 1, role: "witness", priority: 100 },
  ],
};
const status = {
  role: "lb" as const,
  color: "blue" as const,
  healthy: true,
  maintenance: false,
  eligible: true,
  membershipVersion: 1,
  memberIds: ["b1", "b2", "w"],
  jointOldIds: [] as string[][],
  colorInForce: "blue" as const,
  requestedColor: "blue" as const,
};

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

const arbEvents = fc.array(
  fc.tuple(
    fc.nat(400),
    fc.oneof(
      fc.constant({ type: "tick" as const }),
      arbMessage.map((message) => ({ type: "message" as const, message })),
      fc.boolean().map((healthy) => ({ type: "health" as const, healthy })),
      fc.boolean().map((on) => ({ type: "maintenance" as const, on })),
      fc.constant({ type: "handover" as const, reason: "test" }),
    ),
  ),
  { maxLength: 60 },
);

function run(events: Array<[number, object]>) {
  const node = createElectionNode(config, 0);
  let now = 0;
  const outs = [];
  for (const [dt, e] of events) {
    now += dt;
    outs.push(node.step({ ...e, now } as ElectionEvent));
  }
  return { outs, snap: node.snapshot(now) };
}

describe("election core", () => {
  it("is deterministic and never throws on arbitrary event sequences", () => {
    fc.assert(
      fc.property(arbEvents, (events) => {
        const a = run(events);
        const b = run(events);
        expect(b).toEqual(a);
        for (const o of a.outs) expect(o.wakeAt).toBeGreaterThanOrEqual(0);
      }),
      { numRuns: 300 },
    );
  });

  it("never asserts without a lease, whatever arrives", () => {
    fc.assert(
      fc.property(arbEvents, (events) => {
        const node = createElectionNode(config, 0);
        let now = 0;
        for (const [dt, e] of events) {
          now += dt;
          node.step({ ...e, now } as ElectionEvent);
          const s = node.snapshot(now);
          if (s.asserting) expect(s.role === "leader" && s.leaseValidUntil! > now).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
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
