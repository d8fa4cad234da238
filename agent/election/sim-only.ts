/**
 * `SIM` guards the code that exists for the simulator only: the planted bugs and `probe()` of
 * agent/election/node.ts.
 *
 * It is false only in the agent bundle: agent/build.ts defines `__SIM__` as false, esbuild inlines
 * this constant into every `SIM && …` and `if (SIM)`, folds them and drops the code behind them, so
 * the source the simulator runs is the source that ships, minus those branches
 * (test/bundle.test.ts checks that their names are gone). Everywhere else (tests, the simulator,
 * tsx) nothing defines `__SIM__`, and `SIM` is true.
 *
 * A module of its own, with no imports: esbuild inlines a constant across modules, but not within a
 * module that imports others.
 */
declare const __SIM__: boolean | undefined;
export const SIM: boolean = typeof __SIM__ === "undefined" || __SIM__;
