import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fileDurableStore, parseDurableState } from "../agent/durable-state.js";
import { Election } from "../agent/election/node.js";
import type { ElectionConfig } from "../agent/election/types.js";
import { DEFAULT_TIMING } from "../testbed/sim/scenario.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "halb-durable-"));
  dirs.push(d);
  return d;
};

describe("durable election state", () => {
  it("round-trips through the file, created with mode 0640 in a new directory", () => {
    const file = join(tmp(), "sub", "state.json");
    const errors: string[] = [];
    const store = fileDurableStore(file, (m) => errors.push(m));
    expect(store.load()).toBeNull();
    store.save({ term: 7, votedFor: "b2" });
    store.save({ term: 8, votedFor: null });
    expect(store.load()).toEqual({ term: 8, votedFor: null });
    expect(statSync(file).mode & 0o777).toBe(0o640);
    expect(errors).toEqual([]);
  });

  it("reports a damaged file precisely and starts from term 0 instead of staying down", () => {
    const file = join(tmp(), "state.json");
    writeFileSync(file, '{"term": -3, "votedFor": null}');
    const errors: string[] = [];
    expect(fileDurableStore(file, (m) => errors.push(m)).load()).toBeNull();
    expect(errors).toEqual([`${file}: "term" must be a non-negative integer; starting from term 0`]);
    expect(() => parseDurableState("{", "f")).toThrow(/^f: not JSON/);
    expect(() => parseDurableState('{"term":1,"votedFor":3}', "f")).toThrow('f: "votedFor" must be a node id or null');
  });

  it("the core emits persist before anything else, and a restarted core resumes its term and vote", () => {
    const cfg: ElectionConfig = {
      nodeId: "b1",
      membershipVersion: 1,
      activeColor: "blue",
      timing: DEFAULT_TIMING,
      members: ["b1", "b2", "b3"].map((id) => ({ id, address: "x", port: 1, role: "lb" as const, color: "blue" as const, priority: 100 })),
    };
    const e = new Election(cfg, 0);
    // A vote request in a newer term: b1 grants it and must persist (term 5, vote b2) first.
    e.step({ type: "health", now: 1, healthy: true });
    const out = e.step({
      type: "message",
      now: 2_000,
      message: {
        kind: "vote-request",
        from: "b2",
        term: 5,
        sentAt: 1,
        transfer: false,
        status: {
          role: "lb",
          color: "blue",
          healthy: true,
          maintenance: false,
          eligible: true,
          membershipVersion: 1,
          memberIds: ["b1", "b2", "b3"],
          jointOldIds: [],
          colorInForce: "blue",
          requestedColor: "blue",
        },
      },
    });
    expect(out.effects[0]).toEqual({ type: "persist", state: { term: 5, votedFor: "b2" } });
    const again = new Election(cfg, 0, { durable: { term: 5, votedFor: "b2" } });
    expect(again.snapshot(0).term).toBe(5);
  });
});
