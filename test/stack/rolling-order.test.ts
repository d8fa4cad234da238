import { describe, expect, it } from "vitest";
import { compareRank } from "../../agent/election/rank.js";
import { nodeIdOf } from "../../components/plan.js";
import { rollingOrder } from "../../components/rolling-order.js";

const lb = (name: string, color: "blue" | "green") => ({ name, color, role: "lb" as const });

describe("rollingOrder", () => {
  it("standby color first, then the color in force, each by rank, then the witness", () => {
    const nodes = [
      lb("p-lb-blue-1", "blue"),
      lb("p-lb-blue-2", "blue"),
      lb("p-lb-green-1", "green"),
      lb("p-lb-green-2", "green"),
      { name: "p-witness", role: "witness" as const },
    ];
    expect(rollingOrder(nodes, "blue").map((n) => n.name)).toEqual(["p-lb-green-1", "p-lb-green-2", "p-lb-blue-1", "p-lb-blue-2", "p-witness"]);
    expect(rollingOrder(nodes, "green").map((n) => n.name)).toEqual(["p-lb-blue-1", "p-lb-blue-2", "p-lb-green-1", "p-lb-green-2", "p-witness"]);
  });

  it("within a color, the agents' rank order, whatever the droplet IDs (also past 9 nodes)", () => {
    const names = Array.from({ length: 12 }, (_, i) => `prod-lb-blue-${i + 1}`);
    // Droplet IDs that would sort the other way round if compared as part of the name.
    const ids = names.map((n, i) => nodeIdOf(n, 900000 - i * 7919));
    const members = ids.map((id) => ({ id, address: "198.51.100.1", port: 7946, role: "lb" as const, color: "blue" as const, priority: 100 }));
    const agentsBest = [...members].sort((a, b) => compareRank(a, b, "blue"));
    const order = rollingOrder(
      names.map((n) => lb(n, "blue")),
      "blue",
    ).map((n) => ids[names.indexOf(n.name)]);
    expect(order).toEqual(agentsBest.map((m) => m.id));
  });

  it("keeps every node exactly once", () => {
    const nodes = [lb("a-lb-green-1", "green"), { name: "a-witness", role: "witness" as const }, lb("a-lb-blue-1", "blue")];
    expect(rollingOrder(nodes, "blue")).toHaveLength(3);
    expect(new Set(rollingOrder(nodes, "blue"))).toEqual(new Set(nodes));
  });
});
