/**
 * Eligibility has one definition (`isEligible` in agent/election/rank.ts): the core's own status, the
 * ranking of peers, and `fipd status` all go through it.
 */
import { describe, expect, it } from "vitest";
import { DEFAULT_TIMING } from "../../testbed/sim/scenario.js";
import { Election } from "../../agent/election/node.js";
import { bestOfColor, claimsEligible, isEligible, rankedEligible, seenEligible, type PeerView } from "../../agent/election/rank.js";
import type { ElectionConfig, NodeStatus, PeerMessage } from "../../agent/election/types.js";
import type { Member } from "../../agent/config.js";

const lb = (id: string): Member => ({ id, address: "192.0.2.1", port: 1, role: "lb", color: "blue", priority: 100 });
const witness: Member = { id: "w", address: "192.0.2.9", port: 1, role: "witness", priority: 0 };

const status = (eligible: boolean): NodeStatus => ({
  role: "lb",
  color: "blue",
  healthy: true,
  maintenance: false,
  eligible,
  membershipVersion: 1,
  memberIds: ["b1", "b2", "w"],
  jointOldIds: [],
  colorInForce: "blue",
  requestedColor: "blue",
});
const view = (id: string, o: { eligible?: boolean; reachable?: boolean; member?: Member } = {}): PeerView => ({
  id,
  member: o.member ?? lb(id),
  status: status(o.eligible ?? true),
  reachable: o.reachable ?? true,
});

describe("eligibility", () => {
  it("is an LB member, healthy and not in maintenance: every other combination is not", () => {
    expect(isEligible(lb("b1"), true, false)).toBe(true);
    expect(isEligible(lb("b1"), false, false)).toBe(false);
    expect(isEligible(lb("b1"), true, true)).toBe(false);
    expect(isEligible(witness, true, false)).toBe(false);
    expect(isEligible(undefined, true, false)).toBe(false);
  });

  it("of a peer: it claims it, it is an LB in this node's configuration, and it is reachable", () => {
    expect(claimsEligible(lb("b2"), status(true))).toBe(true);
    expect(claimsEligible(lb("b2"), status(false))).toBe(false);
    expect(claimsEligible(witness, status(true))).toBe(false);
    expect(seenEligible(view("b2"))).toBe(true);
    expect(seenEligible(view("b2", { reachable: false }))).toBe(false);
    expect(seenEligible(view("b2", { eligible: false }))).toBe(false);
    expect(seenEligible({ ...view("b2"), status: null })).toBe(false);
  });

  it("ranking and the best node of a color consider only peers seen eligible", () => {
    const views = [view("b1", { reachable: false }), view("b2", { eligible: false }), view("b3")];
    expect(rankedEligible(views, "blue", "blue").map((v) => v.id)).toEqual(["b3"]);
    expect(bestOfColor(views.slice(0, 2), "blue", "blue")).toBeNull();
  });

  it("the core tells its peers what isEligible says, and refuses a candidate that does not claim it", () => {
    const cfg: ElectionConfig = { nodeId: "b1", membershipVersion: 1, members: [lb("b1"), lb("b2"), witness], activeColor: "blue", timing: DEFAULT_TIMING };
    const e = new Election(cfg, 0);
    const sentEligible = (now: number): boolean[] =>
      e.step({ type: "tick", now }).send.flatMap((s) => (s.message.kind === "heartbeat" ? [s.message.status.eligible] : []));
    expect(sentEligible(0)).toEqual([false, false]); // HAProxy not yet healthy
    e.step({ type: "health", now: 1, healthy: true });
    expect(sentEligible(100)).toEqual([true, true]);
    e.step({ type: "maintenance", now: 101, on: true });
    expect(sentEligible(200)).toEqual([false, false]);
    e.step({ type: "maintenance", now: 201, on: false });
    const ask = (eligible: boolean, now: number) => {
      const m: PeerMessage = { kind: "prevote-request", from: "b2", nextTerm: 1, status: status(eligible) };
      const reply = e.step({ type: "message", now, message: m }).send.find((s) => s.message.kind === "prevote-response")?.message;
      return reply?.kind === "prevote-response" ? reply : null;
    };
    // After the boot quiet period, no promise given: granted exactly when the candidate claims eligibility.
    expect(ask(false, 1_000)).toMatchObject({ granted: false, reason: "candidate is not eligible" });
    expect(ask(true, 1_001)).toMatchObject({ granted: true });
  });
});
