/**
 * The one shell (agent/shell.ts), which the controller and the simulator both run: durable state
 * before any message, nothing sent when the write fails, and the keeper checked against the core.
 */
import { describe, expect, it } from "vitest";
import { Election } from "../agent/election/node.js";
import type { ElectionConfig, ElectionOutput, NodeStatus, PeerMessage } from "../agent/election/types.js";
import { IpKeeper } from "../agent/ip-keeper.js";
import { silentLogger } from "../agent/log.js";
import { carryOut, ShellAssertionError, stepAndCarryOut, type KeeperPort, type ShellPorts } from "../agent/shell.js";
import { lbStatus, THREE_LBS as cfg } from "./fixtures/election.js";

const status = (over: Partial<NodeStatus> = {}): NodeStatus => lbStatus(cfg, over);
const voteRequest = (term: number): PeerMessage => ({ kind: "vote-request", from: "b2", term, sentAt: 1, transfer: false, status: status() });

/** Ports that record everything in one ordered log. */
function recording(over: Partial<ShellPorts> = {}) {
  const log: string[] = [];
  const sent: Array<{ to: string; message: PeerMessage }> = [];
  const ports: ShellPorts = {
    durable: { save: (s) => log.push(`persist ${s.term}/${s.votedFor}`) },
    transport: {
      send: (to, message) => {
        log.push(`send ${message.kind} to ${to}`);
        sent.push({ to, message });
      },
    },
    schedule: (wakeAt) => log.push(`wake ${Number.isFinite(wakeAt) ? "at" : "never"}`),
    ...over,
  };
  return { log, sent, ports };
}

/** A keeper that remembers what it was told, optionally ignoring `stop` (a deliberately broken one). */
function fakeKeeper(ignoreStop = false): KeeperPort & { calls: string[] } {
  let asserting = false;
  const calls: string[] = [];
  return {
    calls,
    start: (term) => {
      calls.push(`start ${term}`);
      asserting = true;
    },
    stop: (reason) => {
      calls.push(`stop ${reason}`);
      if (!ignoreStop) asserting = false;
    },
    isAsserting: () => asserting,
    holdsReservedIp: () => asserting,
  };
}

describe("the shell", () => {
  it("persists a granted vote before the vote leaves, then schedules the next wake", () => {
    const e = new Election(cfg, 0);
    e.step({ type: "health", now: 1, healthy: true });
    const { log, sent, ports } = recording();
    stepAndCarryOut(e, { type: "message", now: 2_000, message: voteRequest(5) }, ports);
    expect(log[0]).toBe("persist 5/b2");
    expect(log.indexOf("persist 5/b2")).toBeLessThan(log.indexOf("send vote-response to b2"));
    expect(log.at(-1)).toBe("wake at");
    expect(sent.find((s) => s.message.kind === "vote-response")?.message).toMatchObject({ granted: true, term: 5 });
  });

  it("sends nothing, starts nothing and schedules nothing when the durable write throws", () => {
    const e = new Election(cfg, 0);
    e.step({ type: "health", now: 1, healthy: true });
    const keeper = fakeKeeper();
    const { log, ports } = recording({
      keeper,
      durable: {
        save: () => {
          throw new Error("cannot write the election state /var/lib/fipd/state.json: EROFS");
        },
      },
    });
    expect(() => stepAndCarryOut(e, { type: "message", now: 2_000, message: voteRequest(5) }, ports)).toThrow(/EROFS/);
    expect(log).toEqual([]);
    expect(keeper.calls).toEqual([]);
  });

  it("stamps whether the IP is here and the build on every status sent", () => {
    const out: ElectionOutput = {
      send: [
        { to: "b2", message: { kind: "prevote-request", from: "b1", nextTerm: 3, status: status() } },
        { to: "b3", message: { kind: "release", from: "b1", term: 2, successor: null, colorInForce: "blue", reason: "test" } },
      ],
      effects: [],
      wakeAt: 10,
    };
    const keeper = fakeKeeper();
    keeper.start(2);
    const { sent, ports } = recording({ keeper, build: "0123456789abcdef" });
    carryOut(out, ports, () => true);
    expect(sent[0].message).toMatchObject({ status: { holdsReservedIp: true, build: "0123456789abcdef" } });
    expect(sent[1].message).not.toHaveProperty("status");
  });

  it("A1: throws when the keeper asserts although the core says it must not (and not when they agree)", () => {
    const stop: ElectionOutput = { send: [], effects: [{ type: "stop-asserting", term: 4, reason: "lease expired" }], wakeAt: 10 };
    const broken = fakeKeeper(true);
    broken.start(4);
    const err = (() => {
      try {
        carryOut(stop, recording({ keeper: broken }).ports, () => false);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ShellAssertionError);
    expect((err as ShellAssertionError).message).toBe("A1: the IP keeper asserts the reserved IP but the election core says it must not");
    // The simulator skips the check under its planted keeper bug, so its own A1 catches it instead.
    expect(() => carryOut(stop, recording({ keeper: fakeKeeper(true), skipKeeperCheck: true }).ports, () => false)).not.toThrow();
    const good = fakeKeeper();
    good.start(4);
    expect(() => carryOut(stop, recording({ keeper: good }).ports, () => false)).not.toThrow();
    expect(good.isAsserting()).toBe(false);
  });

  it("A1 with the real IpKeeper: a core that leads and holds a lease has its keeper asserting; a handover stops it", () => {
    const single: ElectionConfig = { ...cfg, members: [cfg.members[0]] };
    const e = new Election(single, 0);
    const keeper = new IpKeeper({
      reservedIp: "192.0.2.10",
      dropletId: 7,
      metadata: { reservedIpv4: () => new Promise(() => {}) },
      api: { getReservedIp: () => new Promise(() => {}), assign: () => new Promise(() => {}) },
      log: silentLogger,
      checkIntervalMs: 1_000,
      verifyIntervalMs: 60_000,
      assignDeadlineMs: 10_000,
      now: () => 0,
      timers: { setTimeout: () => null, clearTimeout: () => {} },
    });
    const { ports } = recording({ keeper });
    stepAndCarryOut(e, { type: "health", now: 1, healthy: true }, ports);
    let t = 1;
    for (; t < 2_000 && !keeper.isAsserting(); t += 10) stepAndCarryOut(e, { type: "tick", now: t }, ports);
    expect(keeper.isAsserting()).toBe(true);
    expect(e.snapshot(t).asserting).toBe(true);
    stepAndCarryOut(e, { type: "maintenance", now: t + 1, on: true }, ports);
    expect(keeper.isAsserting()).toBe(false);
  });
});
