/** The color fallback rule's pure pieces (agent/election/rank.ts); the behaviour is in scenarios.test.ts. */
import { describe, expect, it } from "vitest";
import { COLOR_FALLBACK_AFTER_LEASES, colorFallbackAfterMs, colorMayLead, rankedEligible, type PeerView } from "../../agent/election/rank.js";
import type { NodeStatus } from "../../agent/election/types.js";

const status = (eligible: boolean): NodeStatus => ({
  role: "lb",
  color: "blue",
  healthy: eligible,
  maintenance: false,
  eligible,
  membershipVersion: 1,
  memberIds: [],
  jointOldIds: [],
  colorInForce: "green",
  requestedColor: "green",
});
const view = (id: string, color: "blue" | "green"): PeerView => ({
  id,
  member: { id, address: "sim", port: 1, role: "lb", color, priority: 100 },
  status: status(true),
  reachable: true,
});

describe("color fallback rule", () => {
  it("the bound is three leases, in milliseconds", () => {
    expect(COLOR_FALLBACK_AFTER_LEASES).toBe(3);
    expect(colorFallbackAfterMs(300)).toBe(900);
  });

  it("another color may lead only with the fallback open; a witness (no color) never", () => {
    expect(colorMayLead("blue", "green", "green")).toBe(false);
    expect(colorMayLead("blue", "green", "green", true)).toBe(true);
    expect(colorMayLead(undefined, "green", "green", true)).toBe(false);
    expect(colorMayLead("green", "green", "green")).toBe(true);
  });

  it("ranks the fallback color's nodes only with the fallback open, after the color in force", () => {
    const views = [view("b1", "blue"), view("g1", "green")];
    expect(rankedEligible(views, "green", "green").map((v) => v.id)).toEqual(["g1"]);
    expect(rankedEligible(views, "green", "green", true).map((v) => v.id)).toEqual(["g1", "b1"]);
  });
});
