import { mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fileDurableStore, MAX_BOOT, nextBoot, parseDurableState } from "../agent/durable-state.js";
import { Election } from "../agent/election/node.js";
import { lbStatus, THREE_LBS as cfg } from "./fixtures/election.js";

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

  it("the boot counter goes up by one on every start, whatever the wall clock does, and survives the election's saves", () => {
    const file = join(tmp(), "state.json");
    const errors: string[] = [];
    let nowMs = Date.parse("2026-12-03T08:00:00Z");
    /** One start, as the controller does it: a new store on the same file, load, then beginBoot. */
    const start = () => {
      const store = fileDurableStore(file, (m) => errors.push(m), { nowMs: () => nowMs });
      const state = store.load();
      return { store, state, boot: store.beginBoot() };
    };
    const first = start();
    expect(first.state).toBeNull();
    expect(first.boot).toBe(nowMs / 1000 + 1); // a first boot: the wall clock's floor
    first.store.save({ term: 3, votedFor: "b2" }); // the election saves: the counter must stay in the file
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ term: 3, votedFor: "b2", boot: first.boot });
    nowMs -= 3_600_000; // the clock steps back an hour
    const second = start();
    expect(second.state).toEqual({ term: 3, votedFor: "b2" });
    expect(second.boot).toBe(first.boot + 1);
    nowMs -= 86_400_000 * 365; // and a year
    const third = start();
    expect(third.boot).toBe(first.boot + 2);
    expect(third.store.load()).toEqual({ term: 3, votedFor: "b2" });
    expect(errors).toEqual([]);
  });

  it("an older build's file (no boot counter) loads, and the first counter is above the boot ids that build sent", () => {
    const file = join(tmp(), "state.json");
    writeFileSync(file, '{"term":4,"votedFor":"b2"}\n');
    // The older build sent its boot time in unix seconds; it wrote the file after it booted.
    const oldBootS = Date.parse("2026-12-03T08:00:00Z") / 1000;
    utimesSync(file, oldBootS + 30, oldBootS + 30);
    const errors: string[] = [];
    // Upgraded with the clock stepped back a day: the file's time stands in for the counter.
    const store = fileDurableStore(file, (m) => errors.push(m), { nowMs: () => (oldBootS - 86_400) * 1000 });
    expect(store.load()).toEqual({ term: 4, votedFor: "b2" });
    const boot = store.beginBoot();
    expect(boot).toBe(oldBootS + 31);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ term: 4, votedFor: "b2", boot });
    // Without the file's time (e.g. it was not written in the last run), the wall clock is the floor.
    expect(nextBoot(null, (oldBootS + 5) * 1000 + 999)).toBe(oldBootS + 6);
    expect(nextBoot(oldBootS + 100, oldBootS * 1000)).toBe(oldBootS + 101);
    expect(errors).toEqual([]);
  });

  it("a bad boot counter is reported as damage, and one that would pass the wire's 32 bits stops the start", () => {
    const file = join(tmp(), "state.json");
    writeFileSync(file, `{"term":2,"votedFor":null,"boot":${MAX_BOOT + 1}}`);
    const errors: string[] = [];
    const store = fileDurableStore(file, (m) => errors.push(m), { nowMs: () => 0 });
    expect(store.load()).toBeNull();
    expect(errors).toEqual([`${file}: "boot" must be an integer from 1 to ${MAX_BOOT}, or absent; starting from term 0`]);
    writeFileSync(file, `{"term":2,"votedFor":null,"boot":${MAX_BOOT}}`);
    const full = fileDurableStore(file, () => {}, { nowMs: () => 0 });
    expect(full.load()).toEqual({ term: 2, votedFor: null });
    expect(() => full.beginBoot()).toThrow(`${file}: the boot counter would pass ${MAX_BOOT}`);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ term: 2, votedFor: null, boot: MAX_BOOT });
  });

  it("the core emits persist before anything else, and a restarted core resumes its term and vote", () => {
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
        status: lbStatus(cfg),
      },
    });
    expect(out.effects[0]).toEqual({ type: "persist", state: { term: 5, votedFor: "b2" } });
    const again = new Election(cfg, 0, { durable: { term: 5, votedFor: "b2" } });
    expect(again.snapshot(0).term).toBe(5);
  });
});
