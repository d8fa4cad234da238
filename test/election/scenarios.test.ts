/**
 * Targeted scenarios in the deterministic simulator: the behaviours issue 4 names, and proof that the
 * invariants catch each planted bug (so the seed sweep could fail).
 */
import { describe, expect, it } from "vitest";
import type { Color, FailoverTiming, Member } from "../../agent/config.js";
import type { PlantedBugs } from "../../agent/election/node.js";
import { bootQuietMs } from "../../agent/election/quorum.js";
import { colorFallbackAfterMs } from "../../agent/election/rank.js";
import { checkReachableMajority, checkSafety } from "../../testbed/sim/invariants.js";
import { DEFAULT_TIMING } from "../../testbed/sim/scenario.js";
import { InvariantViolation, World, type WorldOptions } from "../../testbed/sim/world.js";
import { rollingOrder } from "../../components/rolling-order.js";

const lb = (id: string, color: Color = "blue", priority = 100): Member => ({ id, address: "sim", port: 1, role: "lb", color, priority });
const witness: Member = { id: "w", address: "sim", port: 1, role: "witness", priority: 100 };

function world(
  members: Member[],
  o: {
    bugs?: PlantedBugs;
    shellBugs?: WorldOptions["shellBugs"];
    timing?: Partial<FailoverTiming>;
    rates?: Record<string, number>;
    delay?: number;
    extra?: Member[];
  } = {},
): World {
  const timing = { ...DEFAULT_TIMING, ...o.timing };
  const w = new World({
    seed: 7,
    members,
    activeColor: "blue",
    timing,
    actualDrift: 0,
    network: { loss: 0, minDelayMs: o.delay ?? 0.2, maxDelayMs: o.delay ?? 0.2, duplicate: 0 },
    bugs: o.bugs,
    shellBugs: o.shellBugs,
    traceLimit: 200,
    afterStep: checkSafety,
    onStartAsserting: checkReachableMajority,
  });
  for (const m of [...members, ...(o.extra ?? [])]) {
    const n = w.addNode(m);
    n.rate = o.rates?.[m.id] ?? 1;
  }
  return w;
}

const startAll = (w: World, ids: string[]) => ids.forEach((id) => w.start(id));
const leader = (w: World) => w.leaseHolders().map((n) => n.id)[0] ?? null;

/** Run `fn` and return the invariant it violated, or null. */
function violation(fn: () => void): string | null {
  return violationOf(fn)?.invariant ?? null;
}
function violationOf(fn: () => void): InvariantViolation | null {
  try {
    fn();
    return null;
  } catch (e) {
    if (e instanceof InvariantViolation) return e;
    throw e;
  }
}

describe("election scenarios", () => {
  it("elects the best node (priority, then lowest id); the witness never leads", () => {
    const w = world([lb("b2"), lb("b1"), lb("b3", "blue", 150), witness]);
    startAll(w, ["b1", "b2", "b3", "w"]);
    w.runUntil(2_000);
    expect(leader(w)).toBe("b3");
    w.crash("b3");
    w.runUntil(4_000);
    expect(leader(w)).toBe("b1");
  });

  it("fails over within a lease plus one election after the leader dies", () => {
    const w = world([lb("b1"), lb("b2"), lb("b3"), witness]);
    startAll(w, ["b1", "b2", "b3", "w"]);
    w.runUntil(2_000);
    const first = leader(w)!;
    w.crash(first);
    const t0 = w.now;
    let took: number | null = null;
    for (let t = t0; t < t0 + 3_000 && took === null; t += 1) {
      w.runUntil(t);
      if (leader(w)) took = w.now - t0;
    }
    const { leaseMs, maxClockDrift, candidateBackoffMs, heartbeatIntervalMs } = DEFAULT_TIMING;
    expect(took).not.toBeNull();
    // The promise runs out a lease after the last heartbeat, then the best survivor stands at once.
    expect(took!).toBeLessThanOrEqual((leaseMs * (1 + maxClockDrift)) / (1 - maxClockDrift) + candidateBackoffMs + 5);
    expect(took!).toBeGreaterThanOrEqual(leaseMs - heartbeatIntervalMs);
  });

  it("a minority never leads: the isolated leader steps down and stays down", () => {
    const w = world([lb("b1"), lb("b2"), lb("b3"), witness]);
    startAll(w, ["b1", "b2", "b3", "w"]);
    w.runUntil(2_000);
    const old = leader(w)!;
    const rest = ["b1", "b2", "b3", "w"].filter((x) => x !== old);
    w.partition([[old], rest]);
    w.runUntil(2_400);
    for (let t = 2_400; t < 6_000; t += 5) {
      w.runUntil(t);
      const holders = w.leaseHolders().map((n) => n.id);
      expect(holders).not.toContain(old);
    }
    expect(leader(w)).not.toBeNull();
  });

  it("is sticky: a better node that returns does not take over, unless preempt is set", () => {
    for (const preempt of [false, true]) {
      const w = world([lb("b1", "blue", 200), lb("b2"), witness], { timing: { preempt } });
      startAll(w, ["b1", "b2", "w"]);
      w.runUntil(2_000);
      expect(leader(w)).toBe("b1");
      w.crash("b1");
      w.runUntil(3_000);
      expect(leader(w)).toBe("b2");
      w.start("b1");
      w.runUntil(6_000);
      expect(leader(w)).toBe(preempt ? "b1" : "b2");
    }
  });

  it("an unhealthy leader hands over at once, without waiting for its lease", () => {
    const w = world([lb("b1"), lb("b2"), witness]);
    startAll(w, ["b1", "b2", "w"]);
    w.runUntil(2_000);
    expect(leader(w)).toBe("b1");
    w.setHealth("b1", false);
    w.runUntil(w.now + 10);
    expect(leader(w)).toBe("b2");
  });

  it("planned handover (maintenance, operator) moves leadership within a few round trips", () => {
    const w = world([lb("b1"), lb("b2"), lb("b3"), witness]);
    startAll(w, ["b1", "b2", "b3", "w"]);
    w.runUntil(2_000);
    w.handover("b1", "b3");
    w.runUntil(w.now + 5);
    expect(leader(w)).toBe("b3");
    w.setMaintenance("b3", true);
    w.runUntil(w.now + 5);
    expect(["b1", "b2"]).toContain(leader(w));
  });

  it("a rolling upgrade as the stack runs it (leader skipped, restarted last after a handover) moves leadership once, whoever leads", () => {
    const OLD = "0ld0ld0ld0ld0ld0";
    const NEW = "0e00e00e00e00e00";
    const roll = (initialLeader: string) => {
      const w = world([lb("b1"), lb("b2"), lb("b3"), witness]);
      startAll(w, ["b1", "b2", "b3", "w"]);
      for (const id of ["b1", "b2", "b3", "w"]) w.nodes.get(id)!.build = OLD;
      w.runUntil(2_000);
      if (initialLeader !== "b1") w.handover("b1", initialLeader); // leaders are sticky after a move
      w.runUntil(w.now + 50);
      expect(leader(w)).toBe(initialLeader);
      const leaders: string[] = [initialLeader];
      const sample = (ms: number) => {
        for (const end = w.now + ms; w.now < end;) {
          w.runUntil(w.now + 5);
          const l = leader(w);
          if (l && l !== leaders[leaders.length - 1]) leaders.push(l);
        }
      };
      const restart = (id: string) => {
        w.crash(id);
        w.nodes.get(id)!.build = NEW;
        w.start(id);
        sample(5_000);
      };
      const order = rollingOrder(
        [lb("b1"), lb("b2"), lb("b3")].map((m) => ({ name: m.id, color: m.color })),
        "blue",
      ).map((n) => n.name);
      for (const id of order) if (leader(w) !== id) restart(id); // first pass: rollingRestartScript
      for (const id of order) {
        // second pass: leaderRestartScript
        if (w.nodes.get(id)!.build === NEW) continue;
        if (leader(w) === id) w.handover(id, undefined, NEW);
        sample(100);
        restart(id);
      }
      return leaders;
    };
    for (const first of ["b1", "b2", "b3"]) {
      const leaders = roll(first);
      expect(leaders, `starting with ${first}`).toHaveLength(2);
    }
  });

  it("a handover with preferBuild picks the best eligible node already running that build", () => {
    const w = world([lb("b1"), lb("b2"), lb("b3"), witness]);
    startAll(w, ["b1", "b2", "b3", "w"]);
    w.nodes.get("b3")!.build = "0e00e00e00e00e00";
    w.runUntil(2_000);
    expect(leader(w)).toBe("b1");
    w.handover("b1", undefined, "0e00e00e00e00e00");
    w.runUntil(w.now + 50);
    expect(leader(w)).toBe("b3"); // b2 ranks better, but runs another build
    w.handover("b3", undefined, "ffffffffffffffff"); // nobody runs it: the best-ranked eligible node
    w.runUntil(w.now + 50);
    expect(leader(w)).toBe("b1");
  });

  it("a color switch waits for a healthy node of the new color; meanwhile blue replaces blue", () => {
    const w = world([lb("b1"), lb("b2"), lb("g1", "green"), witness]);
    startAll(w, ["b1", "b2", "g1", "w"]);
    w.runUntil(1_500);
    expect(leader(w)).toBe("b1");
    w.setHealth("g1", false);
    w.activeColor = "green";
    for (const id of ["b1", "b2", "g1", "w"]) w.reload(id);
    w.runUntil(2_500);
    expect(leader(w)).toBe("b1");
    const snap = w.nodes.get("b2")!.election!.snapshot(w.local(w.nodes.get("b2")!));
    expect(snap.pendingSwitchReason).toMatch(/no healthy green node.*g1: HAProxy unhealthy/);
    w.crash("b1");
    w.runUntil(3_500);
    expect(leader(w)).toBe("b2");
    w.setHealth("g1", true);
    w.runUntil(4_500);
    expect(leader(w)).toBe("g1");
    const after = w.nodes.get("b2")!.election!.snapshot(w.local(w.nodes.get("b2")!));
    expect(after.colorInForce).toBe("green");
    expect(after.pendingSwitchReason).toBeNull();
  });

  it("a color switch during a rolling reload: the successor the leader names wins at once, although most voters still run the old config", () => {
    const w = world([lb("b1"), lb("b2"), lb("g1", "green"), lb("g2", "green"), witness]);
    startAll(w, ["b1", "b2", "g1", "g2", "w"]);
    w.runUntil(1_500);
    expect(leader(w)).toBe("b1");
    const sequence: string[] = [];
    w.activeColor = "green";
    // Only the leader and g1 have the new config yet: b2, g2 and the witness still request blue.
    w.reload("b1");
    w.reload("g1");
    for (let t = 1_500; t <= 2_000; t += 5) {
      w.runUntil(t);
      const l = leader(w);
      if (l && sequence[sequence.length - 1] !== l) sequence.push(l);
    }
    expect(leader(w)).toBe("g1");
    expect(sequence).toEqual(["b1", "g1"]); // one move: no old-color node in between, no flapping back
    for (const id of ["b2", "g2", "w"]) w.reload(id);
    w.runUntil(3_000);
    expect(leader(w)).toBe("g1");
  });

  it("color fallback: with every node of the color in force dead, the other color leads within the bound; the IP returns by a planned handover", () => {
    const w = world([lb("b1"), lb("b2"), lb("g1", "green"), lb("g2", "green"), witness]);
    const all = ["b1", "b2", "g1", "g2", "w"];
    startAll(w, all);
    w.runUntil(1_500);
    w.activeColor = "green";
    for (const id of all) w.reload(id);
    w.runUntil(3_000);
    expect(leader(w)).toBe("g1");
    w.crash("g1");
    w.crash("g2");
    const t0 = w.now;
    let took: number | null = null;
    let sawNone = false;
    for (let t = t0; t < t0 + 5_000 && took === null; t += 1) {
      w.runUntil(t);
      const l = leader(w);
      if (l === null) sawNone = true;
      if (l !== null && l.startsWith("b")) took = w.now - t0;
    }
    expect(sawNone).toBe(true);
    const { leaseMs, maxClockDrift, candidateBackoffMs, electionTimeoutMs } = DEFAULT_TIMING;
    const bound = colorFallbackAfterMs(leaseMs);
    expect(took).not.toBeNull();
    // Not before the bound (the dead leader's promise may run out earlier), and within the bound plus an election.
    expect(took!).toBeGreaterThanOrEqual(bound);
    expect(took!).toBeLessThanOrEqual(bound * (1 + maxClockDrift) + electionTimeoutMs + 2 * candidateBackoffMs);
    expect(leader(w)).toBe("b1");
    w.runUntil(w.now + 1_000);
    const snap = w.nodes.get("b2")!.election!.snapshot(w.local(w.nodes.get("b2")!));
    expect(snap.colorInForce).toBe("blue");
    expect(snap.colorFallback).toMatchObject({ color: "blue", requested: "green" });
    expect(snap.colorFallback!.reason).toMatch(
      /no green node was eligible for 900 ms; now: no healthy green node can take over \(g1: unreachable, g2: unreachable\)/,
    );
    // g2 comes back: the fallback leader hands over to it (a release naming g2), no lease gap.
    w.start("g2");
    const sequence: string[] = [];
    const end = w.now + 3_000;
    for (let t = w.now; t < end; t += 1) {
      w.runUntil(t);
      const l = leader(w);
      if (l && sequence[sequence.length - 1] !== l) sequence.push(l);
    }
    expect(sequence).toEqual(["b1", "g2"]);
    expect(w.trace.some((x) => /handing over: switching to green \(to g2\)/.test(x.text))).toBe(true);
    const after = w.nodes.get("b2")!.election!.snapshot(w.local(w.nodes.get("b2")!));
    expect(after.colorInForce).toBe("green");
    expect(after.colorFallback).toBeNull();
  });

  it("color fallback off: with every node of the color in force dead, no node of the other color leads", () => {
    const w = world([lb("b1"), lb("b2"), lb("g1", "green"), lb("g2", "green"), witness], { timing: { colorFallback: false } });
    const all = ["b1", "b2", "g1", "g2", "w"];
    startAll(w, all);
    w.runUntil(1_500);
    w.activeColor = "green";
    for (const id of all) w.reload(id);
    w.runUntil(3_000);
    expect(leader(w)).toBe("g1");
    w.crash("g1");
    w.crash("g2");
    const until = 10_000;
    for (let t = w.now; t < until; t += 5) {
      w.runUntil(t);
      expect(leader(w)).toBeNull();
    }
    w.start("g2");
    w.runUntil(12_000);
    expect(leader(w)).toBe("g2");
  });

  it("membership changes go through joint consensus and commit", () => {
    const w = world([lb("b1"), lb("b2"), lb("b3")], { extra: [lb("b4"), lb("b5")] });
    startAll(w, ["b1", "b2", "b3"]);
    w.runUntil(1_500);
    w.configVersion = 2;
    w.members = [lb("b1"), lb("b2"), lb("b3"), lb("b4"), lb("b5")];
    w.start("b4");
    w.start("b5");
    w.reload("b1");
    w.runUntil(1_600);
    const b1 = w.nodes.get("b1")!;
    expect(b1.election!.snapshot(w.local(b1)).jointOldMembers).toEqual(["b1", "b2", "b3"]);
    w.reload("b2");
    w.reload("b3");
    w.runUntil(2_500);
    expect(leader(w)).toBe("b1");
    expect(b1.election!.snapshot(w.local(b1)).jointOldMembers).toBeNull();
  });

  it("is deterministic: the same seed gives the same run", async () => {
    const { runSeed } = await import("../../testbed/sim/scenario.js");
    const a = runSeed(4242, { traceLimit: 1000 });
    const b = runSeed(4242, { traceLimit: 1000 });
    expect(a.steps).toBeGreaterThan(1000);
    expect(b).toEqual(a);
  });
});

describe("the invariants catch planted bugs", () => {
  it("minority leader", () => {
    const w = world([lb("b1"), lb("b2"), lb("b3")], { bugs: { minorityLeader: true } });
    const v = violation(() => {
      startAll(w, ["b1", "b2", "b3"]);
      w.runUntil(1_500);
      w.partition([["b1"], ["b2", "b3"]]);
      w.runUntil(3_000);
    });
    expect(v).toBe("S1");
  });

  it("minority leader, caught at the moment it starts asserting (S2), with no other leader around", () => {
    const run = (bugs?: PlantedBugs) =>
      violation(() => {
        const w = world([lb("b1"), lb("b2"), lb("b3"), lb("b4"), lb("b5")], { bugs });
        // b1 and b2 are cut off from the rest: two of five, a minority.
        w.partition([
          ["b1", "b2"],
          ["b3", "b4", "b5"],
        ]);
        startAll(w, ["b1", "b2"]);
        w.runUntil(3_000);
        expect(leader(w)).toBeNull();
      });
    expect(run({ minorityLeader: true })).toBe("S2");
    expect(run()).toBeNull();
  });

  it("no durable state: after a full restart, another node leads a term that was already led (T1)", () => {
    const run = (bugs?: PlantedBugs) =>
      violation(() => {
        const w = world([lb("b1"), lb("b2"), lb("b3")], { bugs });
        startAll(w, ["b1", "b2", "b3"]);
        w.runUntil(1_500);
        expect(leader(w)).toBe("b1");
        for (const id of ["b1", "b2", "b3"]) w.crash(id);
        w.runUntil(1_600);
        w.start("b2");
        w.start("b3");
        w.runUntil(4_000);
        expect(leader(w)).toBe("b2");
      });
    expect(run({ noDurableState: true })).toBe("T1");
    expect(run()).toBeNull();
  });

  it("no boot quiet period: a restarted voter backs a new leader while it may still promise the old one", () => {
    const run = (bugs?: PlantedBugs) =>
      violation(() => {
        const w = world([lb("b1"), lb("b2"), lb("b3")], { bugs });
        startAll(w, ["b1", "b2", "b3"]);
        w.runUntil(1_500);
        expect(leader(w)).toBe("b1");
        w.partition([["b1"], ["b2", "b3"]]);
        w.crash("b2");
        w.crash("b3");
        w.start("b2");
        // Staggered restarts, so the two do not split the vote by standing at the same instant.
        w.runUntil(1_510);
        w.start("b3");
        w.runUntil(3_000);
      });
    // b2 and b3 forgot the lease they granted b1: they elect b2 while b1's lease still runs.
    expect(run({ noBootQuiet: true })).toBe("S1");
    expect(run()).toBeNull();
  });

  it("no joint majority: old and new member lists elect two leaders", () => {
    const run = (bugs?: PlantedBugs) =>
      violation(() => {
        const w = world([lb("b1"), lb("b2"), lb("b3")], { bugs, extra: [lb("b4"), lb("b5")] });
        startAll(w, ["b1", "b2", "b3"]);
        w.runUntil(1_500);
        expect(leader(w)).toBe("b1");
        w.configVersion = 2;
        w.members = [lb("b1"), lb("b2"), lb("b3"), lb("b4"), lb("b5")];
        w.start("b4");
        w.start("b5");
        w.reload("b1");
        w.runUntil(1_510);
        w.partition([
          ["b1", "b4", "b5"],
          ["b2", "b3"],
        ]);
        w.runUntil(3_000);
      });
    expect(run({ noJointMajority: true })).toBe("S1");
    expect(run()).toBeNull();
  });

  it("no clock-drift margin: a slow-clocked leader outlives its followers' promises", () => {
    // A long backoff makes the slow-clocked b1 (quiet period over last) still the first to win.
    const timing = { maxClockDrift: 0.05, candidateBackoffMs: 400 };
    const rates = { b1: 0.95, b2: 1.05, b3: 1.05 };
    const run = (bugs?: PlantedBugs) =>
      violation(() => {
        const w = world([lb("b1"), lb("b2"), lb("b3")], { bugs, timing, rates, delay: 0.05 });
        startAll(w, ["b1", "b2", "b3"]);
        w.runUntil(2_000);
        expect(leader(w)).toBe("b1");
        w.partition([["b1"], ["b2", "b3"]]);
        w.runUntil(3_000);
      });
    expect(run({ noDriftMargin: true })).toBe("S1");
    expect(run()).toBeNull();
  });

  it("trusting echoes: a peer echoing send times from the future stretches a cut-off leader's lease past its promises", () => {
    const run = (bugs?: PlantedBugs) =>
      violation(() => {
        const w = world([lb("b1"), lb("b2"), lb("b3")], { bugs });
        startAll(w, ["b1", "b2", "b3"]);
        w.runUntil(1_500);
        expect(leader(w)).toBe("b1");
        // b2 echoes 3 s ahead: with b1's own time, a majority of {b1, b2, b3} "acknowledges" now.
        w.echoFuture("b2", 3_000);
        w.runUntil(1_700);
        w.partition([["b1"], ["b2", "b3"]]);
        w.runUntil(4_000);
        expect(w.echoesIgnored).toBeGreaterThan(0);
      });
    expect(run({ trustEchoes: true })).toBe("S1");
    expect(run()).toBeNull();
  });

  it("an IP keeper that never stops: A1 is checked on the keeper the shell drives, not on the core", () => {
    const run = (shellBugs?: WorldOptions["shellBugs"]) =>
      violationOf(() => {
        const w = world([lb("b1"), lb("b2"), lb("b3")], { shellBugs });
        startAll(w, ["b1", "b2", "b3"]);
        w.runUntil(1_500);
        expect(leader(w)).toBe("b1");
        // b1 loses its majority: the core steps down when the lease ends; the keeper must follow.
        w.partition([["b1"], ["b2", "b3"]]);
        w.runUntil(3_000);
      });
    const caught = run({ keeperIgnoresStop: true });
    expect(caught?.invariant).toBe("A1");
    expect(caught?.detail).toMatch(/^b1's IP keeper still asserts the IP after its step, without a valid lease/);
    expect(run()).toBeNull();
  });

  it("the boot quiet period outlasts any promise under the drift bound", () => {
    expect(bootQuietMs(300, 0.01)).toBeGreaterThan((300 * 1.01) / 0.99);
  });
});
