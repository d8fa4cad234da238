/**
 * The controller fail-stops: an exception in the core or a failed durable write ends the process
 * (here: `fatal` is recorded), the IP keeper stops at once, and nothing else happens afterwards.
 * The peers are played by hand on a manual clock; the API and metadata are in memory.
 */
import { publicKeysFor } from "../testbed/identity.js";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseAgentConfig, type AgentConfig } from "../agent/config.js";
import { Controller, type ControllerDeps, type TransportLike } from "../agent/controller.js";
import { fileDurableStore } from "../agent/durable-state.js";
import type { NodeStatus, PeerMessage } from "../agent/election/types.js";
import { silentLogger } from "../agent/log.js";
import { createMetrics } from "../agent/metrics.js";

const dirs: string[] = [];
const controllers: Controller[] = [];
afterEach(async () => {
  for (const c of controllers.splice(0)) await c.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function config(members: Array<{ id: string; role?: "lb" | "witness" }>): AgentConfig {
  return parseAgentConfig({
    nodeId: "b1",
    reservedIp: "192.0.2.10",
    dropletId: 7,
    members: members.map((m) => ({ id: m.id, address: "192.0.2.1", port: 9000, role: m.role ?? "lb", ...(m.role === "witness" ? {} : { color: "blue" }) })),
    peerAuth: { publicKeys: publicKeysFor(members.map((m) => m.id)) },
  });
}

const statusOf = (cfg: AgentConfig, id: string): NodeStatus => {
  const lb = cfg.members.find((m) => m.id === id)!.role === "lb";
  return {
    role: lb ? "lb" : "witness",
    color: lb ? "blue" : null,
    healthy: true,
    maintenance: false,
    eligible: lb,
    membershipVersion: cfg.membershipVersion,
    memberIds: cfg.members.map((m) => m.id),
    jointOldIds: [],
    colorInForce: "blue",
    requestedColor: "blue",
  };
};

/** A controller on a manual clock, with recorded sends and fatal calls. */
async function harness(cfg: AgentConfig, over: Partial<ControllerDeps> = {}) {
  let nowMs = 0;
  const sent: Array<{ to: string; message: PeerMessage }> = [];
  const fatal: Array<{ message: string; fields: Record<string, unknown> }> = [];
  let deliver: (from: string, msg: PeerMessage) => void = () => {};
  let healthChange: (healthy: boolean, detail: string) => void = () => {};
  const transport: TransportLike = { send: (to, message) => sent.push({ to, message }), updateMembers: () => {}, close: () => {} };
  const deps: ControllerDeps = {
    log: silentLogger,
    metrics: createMetrics(),
    now: () => nowMs,
    startTransport: (_c, onMessage) => {
      deliver = onMessage;
      return Promise.resolve(transport);
    },
    startHealth: (_c, onChange) => {
      healthChange = onChange;
      return { stop: () => {} };
    },
    metadata: { reservedIpv4: () => Promise.resolve({ active: false, ipAddress: null }) },
    api: {
      getReservedIp: () => Promise.resolve({ dropletId: null, locked: false }),
      assign: () => new Promise(() => {}),
    },
    dropletId: 7,
    fatal: (message, fields) => fatal.push({ message, fields }),
    ...over,
  };
  const c = new Controller(cfg, deps);
  controllers.push(c);
  await c.start();
  return {
    c,
    sent,
    fatal,
    deliver: (from: string, msg: PeerMessage) => deliver(from, msg),
    healthy: () => healthChange(true, "test"),
    /** Set the clock only (the next event is the first step to see the new time). */
    clock: (ms: number) => (nowMs = ms),
    at: (ms: number) => {
      nowMs = ms;
      c.feed({ type: "tick", now: ms });
    },
  };
}

describe("controller fail-stop", () => {
  it("an exception in the core (a prevote-request without status) ends the process and stops the IP keeper", async () => {
    const cfg = config([{ id: "b1" }, { id: "w", role: "witness" }]);
    const h = await harness(cfg);
    h.healthy();
    // Play the witness: grant b1's prevote and vote, and acknowledge its heartbeats until `answerUntil`.
    let answerUntil = Infinity;
    let answered = 0;
    const pump = (now: number) => {
      for (; answered < h.sent.length; answered++) {
        const { to, message: m } = h.sent[answered];
        if (to !== "w" || now > answerUntil) continue;
        const status = statusOf(cfg, "w");
        if (m.kind === "prevote-request") h.deliver("w", { kind: "prevote-response", from: "w", nextTerm: m.nextTerm, granted: true, status });
        if (m.kind === "vote-request") h.deliver("w", { kind: "vote-response", from: "w", term: m.term, echoSentAt: m.sentAt, granted: true, status });
        if (m.kind === "heartbeat") h.deliver("w", { kind: "heartbeat-ack", from: "w", term: m.term, seq: m.seq, echoSentAt: m.sentAt, status });
      }
    };
    let t = 0;
    for (; t < 3_000 && h.c.snapshot().role !== "leader"; t += 10) {
      h.at(t);
      pump(t);
    }
    expect(h.c.snapshot().role).toBe("leader");
    expect(h.c.status().ipKeeper?.asserting).toBe(true);
    // The witness goes quiet; well after the lease ran out, the malformed message arrives.
    answerUntil = t;
    const malformed = { kind: "prevote-request", from: "w", nextTerm: 99 } as unknown as PeerMessage;
    const late = t + 5_000;
    // No tick in between: this message's step is the one that finds the lease over and steps down
    // (timers run first), then throws on the missing status, as in the issue.
    h.clock(late);
    h.deliver("w", malformed);
    // The core stepped down in this step; the keeper must not go on asserting (today's bug).
    expect(h.c.status().ipKeeper?.asserting).toBe(false);
    expect(h.fatal).toHaveLength(1);
    expect(h.fatal[0].message).toMatch(/^fipd stops: .*eligible/);
    expect(h.fatal[0].fields).toMatchObject({ event: "message" });
    // Nothing continues: later events change nothing and send nothing.
    const after = h.sent.length;
    h.at(late + 1_000);
    h.deliver("w", { kind: "heartbeat", from: "w", term: 100, seq: 1, sentAt: 0, status: statusOf(cfg, "w"), leader: null });
    expect(h.sent.length).toBe(after);
    expect(h.fatal).toHaveLength(1);
  });

  it("an unwritable state file ends the process before the vote leaves", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-controller-"));
    dirs.push(dir);
    const cfg = config([{ id: "b1" }, { id: "b2" }, { id: "w", role: "witness" }]);
    const durable = fileDurableStore(join(dir, "not-a-dir", "state.json"), () => {});
    const h = await harness(cfg, { durable });
    expect(h.fatal).toEqual([]); // the boot counter was written at start
    // Then the state file's directory becomes a regular file: mkdir and open fail (ENOTDIR / EEXIST).
    rmSync(join(dir, "not-a-dir"), { recursive: true });
    writeFileSync(join(dir, "not-a-dir"), "");
    h.at(2_000); // past the boot quiet period; b1 is not healthy, so it never stands itself
    const before = h.sent.length;
    h.deliver("b2", { kind: "vote-request", from: "b2", term: 5, sentAt: 1, transfer: false, status: statusOf(cfg, "b2") });
    expect(h.sent.slice(before).filter((s) => s.message.kind === "vote-response")).toEqual([]);
    expect(h.fatal).toHaveLength(1);
    expect(h.fatal[0].message).toMatch(/^fipd stops: cannot write the election state .*not-a-dir\/state\.json/);
    expect(h.sent.length).toBe(before);
    // And it stays stopped: the same request again sends no vote either.
    h.deliver("b2", { kind: "vote-request", from: "b2", term: 5, sentAt: 2, transfer: false, status: statusOf(cfg, "b2") });
    expect(h.sent.length).toBe(before);
  });

  it("a boot counter that cannot be written ends the start: no transport, no datagram, nothing afterwards", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-controller-"));
    dirs.push(dir);
    writeFileSync(join(dir, "not-a-dir"), "");
    const cfg = config([{ id: "b1" }, { id: "b2" }, { id: "w", role: "witness" }]);
    // The state file's directory is a regular file: the boot counter's write fails (ENOTDIR / EEXIST).
    const durable = fileDurableStore(join(dir, "not-a-dir", "state.json"), () => {});
    const sent: Array<{ to: string; message: PeerMessage }> = [];
    const boots: number[] = [];
    const h = await harness(cfg, {
      durable,
      startTransport: (_c, _onMessage, boot) => {
        boots.push(boot);
        return Promise.resolve({ send: (to, message) => sent.push({ to, message }), updateMembers: () => {}, close: () => {} });
      },
    });
    expect(h.fatal).toHaveLength(1);
    expect(h.fatal[0].message).toMatch(/^fipd stops: cannot write the boot counter to the election state .*not-a-dir\/state\.json/);
    expect(h.fatal[0].fields).toMatchObject({ event: "start" });
    expect(boots).toEqual([]); // the transport never started, so no datagram could leave
    h.at(2_000);
    h.at(10_000);
    expect(sent).toEqual([]);
    expect(h.fatal).toHaveLength(1);
  });

  it("the transport gets the boot counter the start wrote, one more on every start", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-controller-"));
    dirs.push(dir);
    const file = join(dir, "state.json");
    const cfg = config([{ id: "b1" }, { id: "b2" }, { id: "w", role: "witness" }]);
    const boots: number[] = [];
    for (let i = 0; i < 2; i++) {
      const h = await harness(cfg, {
        durable: fileDurableStore(file, () => {}, { nowMs: () => Date.parse("2026-12-03T08:00:00Z") }),
        startTransport: (_c, _onMessage, boot) => {
          // On disk before the transport exists.
          expect((JSON.parse(readFileSync(file, "utf8")) as { boot: number }).boot).toBe(boot);
          boots.push(boot);
          return Promise.resolve({ send: () => {}, updateMembers: () => {}, close: () => {} });
        },
      });
      expect(h.fatal).toEqual([]);
      await h.c.close();
    }
    expect(boots[1]).toBe(boots[0] + 1);
  });
});

describe("controller: echoes of send times never sent", () => {
  it("a witness acknowledging with a send time from the future is counted and logged once per 10 s; the lease runs out, no fail-stop", async () => {
    const cfg = config([{ id: "b1" }, { id: "w", role: "witness" }]);
    const warnings: Array<{ msg: string; fields?: Record<string, unknown> }> = [];
    const log = { ...silentLogger, warn: (msg: string, fields?: Record<string, unknown>) => warnings.push({ msg, fields }) };
    const metrics = createMetrics();
    const h = await harness(cfg, { log, metrics });
    h.healthy();
    // Play the witness honestly until b1 leads.
    let answered = 0;
    const pump = () => {
      for (; answered < h.sent.length; answered++) {
        const { to, message: m } = h.sent[answered];
        if (to !== "w") continue;
        const status = statusOf(cfg, "w");
        if (m.kind === "prevote-request") h.deliver("w", { kind: "prevote-response", from: "w", nextTerm: m.nextTerm, granted: true, status });
        if (m.kind === "vote-request") h.deliver("w", { kind: "vote-response", from: "w", term: m.term, echoSentAt: m.sentAt, granted: true, status });
      }
    };
    let t = 0;
    for (; t < 3_000 && h.c.snapshot().role !== "leader"; t += 10) {
      h.at(t);
      pump();
    }
    expect(h.c.snapshot().role).toBe("leader");
    const term = h.c.snapshot().term;
    // From now on the witness echoes a time 10 s ahead of b1's clock, every heartbeat interval.
    const ack = (now: number): PeerMessage => ({ kind: "heartbeat-ack", from: "w", term, seq: 1, echoSentAt: now + 10_000, status: statusOf(cfg, "w") });
    // Only a leader counts acknowledgements: it gets them until its lease, from the vote, runs out.
    let delivered = 0;
    for (const end = t + 1_000; t < end; t += 50) {
      h.at(t);
      if (h.c.snapshot().role !== "leader") break;
      h.deliver("w", ack(t));
      delivered++;
    }
    // The lease ran out about 293 ms after the vote requests: counted every time, logged once.
    expect(delivered).toBeGreaterThanOrEqual(5);
    expect(delivered).toBeLessThanOrEqual(7);
    const dropped = await metrics.peerDropped.get();
    expect(dropped.values.find((x) => x.labels.reason === "echo-future")?.value).toBe(delivered);
    expect(warnings.filter((x) => x.msg.startsWith("ignored a peer message"))).toEqual([
      {
        msg: "ignored a peer message that echoes a send time this node never sent",
        fields: { from: "w", kind: "heartbeat-ack", reason: expect.stringMatching(/^echoes send time \d+ ms, later than now \(\d+ ms\)$/) },
      },
    ]);
    expect(h.c.snapshot().role).toBe("follower");
    expect(h.c.status().ipKeeper?.asserting).toBe(false);
    expect(h.fatal).toEqual([]);
  });
});
