/**
 * The seed sweep, shared by the seeds-*.test.ts files (four files so that both cores run it): random
 * runs of 60 simulated seconds (57 s of crashes, symmetric and one-way partitions, loss, delay,
 * duplicates, clock drift, health flaps, maintenance, handovers, color switches and membership
 * changes, then 3 s of calm), with the safety invariants checked after every step and liveness after
 * the calm. A failure prints the command that replays the seed.
 */
import { describe, expect, it } from "vitest";
import { runSeed } from "../../testbed/sim/scenario.js";

export const SWEEP_FAULT_MS = 57_000;
export const SWEEP_CALM_MS = 3_000;

export function sweep(from: number, count: number): void {
  // SIM_SEEDS_SCALE lets a developer run a longer sweep locally (e.g. 5 → 10,000 seeds in all).
  const scale = Number(process.env.SIM_SEEDS_SCALE ?? 1);
  const first = from * scale - (scale - 1);
  const n = count * scale;
  describe(`simulator: seeds ${first}..${first + n - 1}, ${(SWEEP_FAULT_MS + SWEEP_CALM_MS) / 1000} simulated s each`, () => {
    it("holds every invariant on every seed", () => {
      const failures: string[] = [];
      for (let s = first; s < first + n; s++) {
        const r = runSeed(s, { faultMs: SWEEP_FAULT_MS, calmMs: SWEEP_CALM_MS });
        if (!r.ok)
          failures.push(`seed ${s}: ${r.violation!.invariant} at ${r.violation!.atMs} ms: ${r.violation!.detail} (replay: npm run sim -- --seed ${s} --trace)`);
        if (failures.length >= 5) break;
      }
      expect(failures).toEqual([]);
    }, 600_000);
  });
}
