/**
 * The seed sweep: thousands of random runs (crashes, partitions, loss, delay, duplicates, clock drift,
 * health flaps, maintenance, handovers, color switches, membership changes), safety invariants after
 * every step, liveness after a calm period. A failure prints the command that replays the seed.
 */
import { describe, expect, it } from "vitest";
import { runSeed } from "../../agent/sim/scenario.js";

const SEEDS = Number(process.env.SIM_SEEDS ?? 1500);
const FROM = Number(process.env.SIM_FROM ?? 1);

describe(`simulator: seeds ${FROM}..${FROM + SEEDS - 1}`, () => {
  it("holds every invariant on every seed", () => {
    const failures: string[] = [];
    for (let s = FROM; s < FROM + SEEDS; s++) {
      const r = runSeed(s);
      if (!r.ok) failures.push(`seed ${s}: ${r.violation!.invariant} at ${r.violation!.atMs} ms: ${r.violation!.detail} (replay: npm run sim -- --seed ${s} --trace)`);
      if (failures.length >= 5) break;
    }
    expect(failures).toEqual([]);
  }, 300_000);
});
