/**
 * `npm run sim -- [--seeds N] [--from S] [--seed S --trace] [--fault-ms M] [--bug noDriftMargin|minorityLeader|noJointMajority|noBootQuiet|noDurableState|trustEchoes]`
 *
 * Runs the deterministic simulator over many seeds and prints any failing seed; `--seed S --trace`
 * replays one seed exactly and prints its last events.
 */
import { parseArgs } from "node:util";
import type { PlantedBugs } from "../../agent/election/node.js";
import { runSeed } from "./scenario.js";

const { values } = parseArgs({
  options: {
    seeds: { type: "string", default: "1000" },
    from: { type: "string", default: "1" },
    seed: { type: "string" },
    trace: { type: "boolean", default: false },
    bug: { type: "string" },
    drift: { type: "string" },
    "fault-ms": { type: "string" },
  },
});

const bugs: PlantedBugs | undefined = values.bug ? { [values.bug]: true } : undefined;
const common = {
  bugs,
  ...(values.drift ? { timing: { maxClockDrift: Number(values.drift) } } : {}),
  ...(values["fault-ms"] ? { faultMs: Number(values["fault-ms"]) } : {}),
};

if (values.seed !== undefined) {
  const r = runSeed(Number(values.seed), { ...common, traceLimit: values.trace ? 400 : 0 });
  if (values.trace) for (const l of r.trace) console.log(`${l.at.toFixed(2).padStart(10)} ms  ${l.text}`);
  console.log(`seed ${r.seed}: ${r.description}`);
  console.log(
    r.ok ? `ok: ${r.steps} steps, settled in ${r.settleMs} ms` : `VIOLATION ${r.violation!.invariant} at ${r.violation!.atMs} ms: ${r.violation!.detail}`,
  );
  process.exit(r.ok ? 0 : 1);
}

const from = Number(values.from);
const n = Number(values.seeds);
const started = Date.now();
let failed = 0;
let steps = 0;
for (let s = from; s < from + n; s++) {
  const r = runSeed(s, common);
  steps += r.steps;
  if (!r.ok) {
    failed++;
    console.log(
      `seed ${s} FAILED ${r.violation!.invariant} at ${r.violation!.atMs} ms: ${r.violation!.detail}\n  replay: npm run sim -- --seed ${s} --trace${values.bug ? ` --bug ${values.bug}` : ""}`,
    );
    if (failed >= 10) break;
  }
}
console.log(`${n} seeds, ${failed} failed, ${steps} steps in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);
