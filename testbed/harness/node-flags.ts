/**
 * The Node.js flags the droplets' unit runs fipd with (ExecStart in components/assets/fipd.service),
 * so the test beds and benchmarks measure the agent as it runs in production.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

export const UNIT_FILE = join(__dirname, "..", "..", "components", "assets", "fipd.service");

export function agentNodeFlags(unit = readFileSync(UNIT_FILE, "utf8")): string[] {
  const exec = /^ExecStart=(\S+)((?:\s+--\S+)*)\s+\S+\.cjs\s/m.exec(unit);
  if (!exec) throw new Error(`${UNIT_FILE}: no "ExecStart=<node> [--flags] <bundle>.cjs" line`);
  return exec[2].trim().split(/\s+/).filter(Boolean);
}
