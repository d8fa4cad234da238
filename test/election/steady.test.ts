/**
 * F1: a healthy cluster on a lossy, jittery network keeps its leader. 3 LBs + a witness 80 ms away,
 * 1 % loss, 20 ms jitter, clocks drifting within the bound, one simulated hour: no leader change.
 * And the failover budget: 3 LBs, 0 ms delay, the successor asserts within 350 ms of the death.
 */
import { describe, expect, it } from "vitest";
import type { Member } from "../../agent/config.js";
import { checkReachableMajority, checkSafety } from "../../testbed/sim/invariants.js";
import { DEFAULT_TIMING } from "../../testbed/sim/scenario.js";
import { keeperAsserting, World } from "../../testbed/sim/world.js";

const lb = (id: string): Member => ({ id, address: "sim", port: 1, role: "lb", color: "blue", priority: 100 });
const members: Member[] = [lb("b1"), lb("b2"), lb("b3"), { id: "w", address: "sim", port: 1, role: "witness", priority: 100 }];

describe("steady state and failover budget", () => {
  for (const seed of [1, 2]) {
    it(`F1 (seed ${seed}): no leader change in one simulated hour at 1 % loss and 20 ms jitter`, () => {
      const w = new World({
        seed,
        members,
        activeColor: "blue",
        timing: DEFAULT_TIMING,
        actualDrift: DEFAULT_TIMING.maxClockDrift,
        network: { loss: 0.01, minDelayMs: 0.5, maxDelayMs: 20.5, duplicate: 0 },
        extraDelayMs: (a, b) => (a === "w" || b === "w" ? 80 : 0),
        afterStep: checkSafety,
        onStartAsserting: checkReachableMajority,
      });
      for (const m of members) w.addNode(m);
      for (const m of members) w.start(m.id);
      w.runUntil(5_000);
      const leader = w.leaseHolders()[0]?.id;
      expect(leader).toBeDefined();
      const changesBefore = w.leadersByTerm.size;
      for (let t = 5_000; t <= 3_600_000; t += 60_000) {
        w.runUntil(t);
        expect(w.leaseHolders()[0]?.id).toBe(leader);
      }
      expect(w.leadersByTerm.size).toBe(changesBefore);
    }, 120_000);
  }

  it("failover budget: with 0 ms delay the successor asserts within 350 ms of the leader's death", () => {
    const w = new World({
      seed: 3,
      members: members.slice(0, 3),
      activeColor: "blue",
      timing: DEFAULT_TIMING,
      actualDrift: 0,
      network: { loss: 0, minDelayMs: 0, maxDelayMs: 0, duplicate: 0 },
      afterStep: checkSafety,
      onStartAsserting: checkReachableMajority,
    });
    for (const m of members.slice(0, 3)) w.addNode(m);
    for (const m of members.slice(0, 3)) w.start(m.id);
    w.runUntil(2_000);
    const dead = w.leaseHolders()[0].id;
    w.crash(dead);
    const t0 = w.now;
    let asserted: number | null = null;
    for (let t = t0; t <= t0 + 1_000 && asserted === null; t += 1) {
      w.runUntil(t);
      const n = [...w.nodes.values()].find((x) => x.alive && keeperAsserting(x));
      if (n) asserted = w.now - t0;
    }
    // Derivation: the promise ends leaseMs (300) after the last heartbeat (≤ 50 ms before the death),
    // the best survivor stands at once (rank 0), PreVote and vote take two round trips (0 ms here).
    expect(asserted).not.toBeNull();
    expect(asserted!).toBeLessThanOrEqual(350);
  });
});
