#!/usr/bin/env node
/**
 * After vitest (`npm test`): a skipped or todo test fails the run. Every test that can run here must
 * run; a test that cannot must fail and say why, never be silently skipped.
 */
import { readFileSync } from "node:fs";

const report = JSON.parse(readFileSync(".tmp/vitest-report.json", "utf8"));
const skipped = report.testResults.flatMap((f) =>
  f.assertionResults.filter((a) => a.status !== "passed" && a.status !== "failed").map((a) => `${f.name}: ${a.fullName} (${a.status})`),
);
if (skipped.length) {
  console.error(`npm test: ${skipped.length} test(s) did not run:\n  ${skipped.join("\n  ")}`);
  process.exit(1);
}
