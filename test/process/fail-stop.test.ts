/**
 * Fail-stop with the real bundle: an agent whose state file cannot be written exits with status 70
 * and one `crit` line at its start, when it writes its boot counter, before any datagram leaves
 * (agent/durable-state.ts; the same write records a term or vote later). The others (an LB and the
 * witness, a majority) elect a leader regardless.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { LocalCluster } from "../../testbed/harness/local-cluster.js";

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

describe("fail-stop (real fipd processes)", () => {
  it("an unwritable state file: the agent exits 70 with one crit line; the others elect a leader", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue"], witness: true });
    const c = cluster;
    const broken = c.node("lb-blue-2");
    // A directory where the atomic write puts its temporary file: opening it for writing fails
    // (EISDIR), for root too.
    mkdirSync(join(broken.stateDir, "state.json.tmp"));
    c.startAll();
    const code = await Promise.race([broken.exit!, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 20_000))]);
    expect(code).toBe(70);
    const leader = await c.waitFor("a leader holding the reserved IP", async () => {
      const l = await c.leader();
      return l && c.holder() === l ? l : null;
    });
    expect(leader).toBe("lb-blue-1");
    const lines = readFileSync(join(c.dir, "lb-blue-2.log"), "utf8")
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { level: string; msg: string; PRIORITY: number });
    const crit = lines.filter((l) => l.level === "crit");
    expect(crit).toHaveLength(1);
    expect(crit[0].msg).toMatch(/^fipd stops: cannot write the boot counter to the election state .*state\.json: EISDIR/);
    expect(crit[0].PRIORITY).toBe(2);
    // It is the last thing the agent said.
    expect(lines.at(-1)).toEqual(crit[0]);
  });
});
