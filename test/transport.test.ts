import { createSocket } from "node:dgram";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { fileDurableStore } from "../agent/durable-state.js";
import type { PeerMessage } from "../agent/election/types.js";
import { createLogger, silentLogger } from "../agent/log.js";
import { createMetrics } from "../agent/metrics.js";
import { acceptCounter, bootIdOf, createPeerTransport, decodePacket, encodePacket, type PeerTransport } from "../agent/transport.js";

const key = (b = randomBytes(32)) => ({ id: b.subarray(0, 4).toString("hex"), key: b });
const msg = (from: string): PeerMessage => ({ kind: "release", from, term: 1, successor: null, colorInForce: "blue", reason: "test" });
const open: PeerTransport[] = [];
const dirs: string[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const t of open.splice(0)) await t.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function pair(keysA = { current: key(), previous: null as ReturnType<typeof key> | null }, keysB = keysA) {
  const got: Array<{ from: string; msg: PeerMessage }> = [];
  const metrics = createMetrics();
  const b = await createPeerTransport({
    selfId: "b",
    listenAddress: "127.0.0.1",
    listenPort: 0,
    members: [],
    keys: keysB,
    boot: 1,
    onMessage: (from, m) => got.push({ from, msg: m }),
    log: silentLogger,
    metrics,
  });
  const a = await createPeerTransport({
    selfId: "a",
    listenAddress: "127.0.0.1",
    listenPort: 0,
    members: [{ id: "b", address: "127.0.0.1", port: b.port }],
    keys: keysA,
    boot: 1,
    onMessage: () => undefined,
    log: silentLogger,
  });
  b.updateMembers([{ id: "a", address: "127.0.0.1", port: a.port }]);
  open.push(a, b);
  return { a, b, got, metrics };
}
const settle = () => new Promise((r) => setTimeout(r, 100));
const dropped = async (m: ReturnType<typeof createMetrics>, reason: string) =>
  (await m.peerDropped.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

describe("peer transport", () => {
  it("delivers authenticated messages with the sender from the header", async () => {
    const { a, got } = await pair();
    a.send("b", { ...msg("mallory") });
    await settle();
    expect(got).toHaveLength(1);
    expect(got[0].from).toBe("a");
    expect(got[0].msg.from).toBe("a");
  });

  it("drops wrong keys, tampering, replays and garbage, and counts them", async () => {
    const { b, got, metrics } = await pair({ current: key(), previous: null }, { current: key(), previous: null });
    const raw = createSocket("udp4");
    const k = key();
    const send = (buf: Buffer) => new Promise<void>((r) => raw.send(buf, b.port, "127.0.0.1", () => r()));
    await send(Buffer.from("garbage"));
    await send(encodePacket(k, 1n, 1n, "a", "b", Buffer.from("{}")));
    await settle();
    raw.close();
    expect(got).toHaveLength(0);
    expect(await dropped(metrics, "malformed")).toBe(1);
    expect(await dropped(metrics, "unknown-key")).toBe(1);
  });

  it("drops authenticated messages that fail their kind's schema, counted by reason; extra fields are removed, not fatal", async () => {
    const k = key();
    const { b, got, metrics } = await pair({ current: k, previous: null });
    const raw = createSocket("udp4");
    let counter = 0n;
    const send = (body: object) =>
      new Promise<void>((r) => raw.send(encodePacket(k, 9n, ++counter, "a", "b", Buffer.from(JSON.stringify(body))), b.port, "127.0.0.1", () => r()));
    await send({ kind: "prevote-request", from: "a", nextTerm: 5 }); // issue 12: no status
    await send({ kind: "prevote-request", from: "a", nextTerm: "5", status: {} });
    await send({ kind: "gossip", from: "a" });
    await send({ ...msg("a"), epoch: 3, $k: k.id }); // a newer build's extra field
    await settle();
    raw.close();
    expect(await dropped(metrics, "schema")).toBe(2);
    expect(await dropped(metrics, "unknown-kind")).toBe(1);
    expect(got).toEqual([{ from: "a", msg: msg("a") }]);
  });

  it("accepts the previous key during a key roll, and rejects replays", async () => {
    const oldKey = key();
    const newKey = key();
    const { b, got, metrics } = await pair({ current: oldKey, previous: null }, { current: newKey, previous: oldKey });
    const raw = createSocket("udp4");
    const pkt = encodePacket(oldKey, 5n, 1n, "a", "b", Buffer.from(JSON.stringify(msg("a"))));
    const tampered = Buffer.from(pkt);
    tampered[tampered.length - 40] ^= 1;
    for (const p of [pkt, pkt, tampered]) await new Promise<void>((r) => raw.send(p, b.port, "127.0.0.1", () => r()));
    await settle();
    raw.close();
    expect(got).toHaveLength(1);
    expect(await dropped(metrics, "replay")).toBe(1);
    expect(await dropped(metrics, "bad-mac")).toBe(1);
  });

  it("during a key roll, answers a peer that still has only the old key with the old key, and switches when it moves", async () => {
    const oldKey = key();
    const newKey = key();
    // a: rolled (new, accepts old); b: not yet (old only). b speaks first.
    const { a, b, got: gotAtB, metrics: metricsB } = await pair({ current: newKey, previous: oldKey }, { current: oldKey, previous: null });
    const gotAtA: string[] = [];
    const a2 = await createPeerTransport({
      selfId: "a",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: [{ id: "b", address: "127.0.0.1", port: b.port }],
      keys: { current: newKey, previous: oldKey },
      boot: 2,
      onMessage: (from) => gotAtA.push(from),
      log: silentLogger,
    });
    open.push(a2);
    await a.close();
    open.splice(open.indexOf(a), 1);
    b.updateMembers([{ id: "a", address: "127.0.0.1", port: a2.port }]);
    a2.send("b", msg("a")); // new key: b cannot check it yet
    await settle();
    expect(gotAtB).toHaveLength(0);
    b.send("a", msg("b")); // old key: a accepts it and learns b is behind
    await settle();
    expect(gotAtA).toEqual(["b"]);
    a2.send("b", msg("a"));
    await settle();
    expect(gotAtB).toHaveLength(1);
    // b rolls too: its packets now carry the new key, and a goes back to the new key for b.
    b.updateKeys({ current: newKey, previous: oldKey });
    b.send("a", msg("b"));
    await settle();
    expect(gotAtA).toEqual(["b", "b"]);
    b.updateKeys({ current: newKey, previous: null }); // the roll is over: old key no longer accepted
    a2.send("b", msg("a"));
    await settle();
    expect(await dropped(metricsB, "unknown-key")).toBe(1); // only a2's very first packet
    expect(gotAtB).toHaveLength(2);
  });

  it("a peer restarted with its clock stepped back is accepted: the boot id is the durable boot counter, not the wall clock", async () => {
    // Only Date is faked (the sockets' timers run for real): the store's floor and anything else that
    // would read the wall clock see it step back an hour between the two starts, as after an NTP step.
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date("2026-12-03T08:00:00Z"));
    const dir = mkdtempSync(join(tmpdir(), "halb-transport-"));
    dirs.push(dir);
    const file = join(dir, "state.json");
    const k = key();
    const keys = { current: k, previous: null };
    const got: string[] = [];
    const metrics = createMetrics();
    const b = await createPeerTransport({
      selfId: "b",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: [],
      keys,
      boot: 1,
      onMessage: (from) => got.push(from),
      log: silentLogger,
      metrics,
    });
    open.push(b);
    /** One start of peer a, as the controller does it: the boot counter reaches the disk first. */
    const startA = async () => {
      const errors: string[] = [];
      const store = fileDurableStore(file, (m) => errors.push(m));
      store.load();
      const boot = store.beginBoot();
      expect(errors).toEqual([]);
      const t = await createPeerTransport({
        selfId: "a",
        listenAddress: "127.0.0.1",
        listenPort: 0,
        members: [{ id: "b", address: "127.0.0.1", port: b.port }],
        keys,
        boot,
        onMessage: () => undefined,
        log: silentLogger,
      });
      b.updateMembers([{ id: "a", address: "127.0.0.1", port: t.port }]);
      return { t, boot };
    };
    const first = await startA();
    for (let i = 0; i < 3; i++) first.t.send("b", msg("a"));
    await settle();
    expect(got).toEqual(["a", "a", "a"]);
    await first.t.close();

    vi.setSystemTime(new Date("2026-12-03T07:00:00Z")); // the clock steps back an hour; a restarts
    const second = await startA();
    open.push(second.t);
    expect(second.boot).toBe(first.boot + 1);
    for (let i = 0; i < 3; i++) second.t.send("b", msg("a"));
    await settle();
    expect(got).toHaveLength(6);
    expect(await dropped(metrics, "replay")).toBe(0);

    // The replay protection still holds: a packet of the earlier start is refused.
    const raw = createSocket("udp4");
    const stale = encodePacket(k, bootIdOf(first.boot), 100n, "a", "b", Buffer.from(JSON.stringify(msg("a"))));
    await new Promise<void>((r) => raw.send(stale, b.port, "127.0.0.1", () => r()));
    await settle();
    raw.close();
    expect(got).toHaveLength(6);
    expect(await dropped(metrics, "replay")).toBe(1);
  });

  it("replay window: new counters pass, repeats and too-old ones fail, a newer boot resets", () => {
    let st = acceptCounter(undefined, 10n, 100n).state;
    expect(acceptCounter(st, 10n, 100n).ok).toBe(false);
    expect(acceptCounter(st, 10n, 99n).ok).toBe(true);
    st = acceptCounter(st, 10n, 200n).state;
    expect(acceptCounter(st, 10n, 100n).ok).toBe(false);
    expect(acceptCounter(st, 9n, 500n).ok).toBe(false);
    expect(acceptCounter(st, 11n, 1n).ok).toBe(true);
    expect(decodePacket(Buffer.alloc(10))).toBeNull();
  });

  it("names a peer whose address does not resolve in a warning, once per 10 s however many sends fail", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const metrics = createMetrics();
    const t = await createPeerTransport({
      selfId: "a",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      // RFC 6761: .invalid never resolves.
      members: [{ id: "lb-2", address: "lb-2.fipd-peer.invalid", port: 7946 }],
      keys: { current: key(), previous: null },
      boot: 1,
      onMessage: () => undefined,
      log: createLogger({ level: "info", nodeId: "a", write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
      metrics,
    });
    open.push(t);
    for (let i = 0; i < 30; i++) t.send("lb-2", msg("a"));
    const deadline = Date.now() + 10_000;
    while ((await dropped(metrics, "send-error")) < 30 && Date.now() < deadline) await settle();
    expect(await dropped(metrics, "send-error")).toBe(30);
    expect(lines).toEqual([
      expect.objectContaining({
        level: "warn",
        msg: "cannot resolve a peer's address; its heartbeats are not sent",
        peer: "lb-2",
        address: "lb-2.fipd-peer.invalid",
        port: 7946,
        error: expect.stringMatching(/^(ENOTFOUND|EAI_AGAIN)$/),
      }),
    ]);
  }, 20_000);
});

describe("key retirement after a roll (issue 17.2)", () => {
  /** A stand-in for the other members: one UDP socket that signs as any of them and records what it receives. */
  async function peers() {
    const sock = createSocket("udp4");
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
    const received: Array<{ keyId: string; receiver: string }> = [];
    sock.on("message", (buf) => {
      const p = decodePacket(buf);
      if (p) received.push({ keyId: p.keyId, receiver: p.receiver });
    });
    const counters = new Map<string, bigint>();
    const port = sock.address().port;
    return {
      port,
      received,
      /** One packet from `from` to b, signed with `k`, whose body announces `announced` as the sender's current key. */
      send: (from: string, k: ReturnType<typeof key>, announced = k) => {
        const c = (counters.get(from) ?? 0n) + 1n;
        counters.set(from, c);
        const pkt = encodePacket(k, 7n, c, from, "b", Buffer.from(JSON.stringify({ ...msg(from), $k: announced.id })));
        return (to: number) => new Promise<void>((r) => sock.send(pkt, to, "127.0.0.1", () => r()));
      },
      close: () => sock.close(),
    };
  }

  async function node(keys: { current: ReturnType<typeof key>; previous: ReturnType<typeof key> | null }, members: Array<{ id: string; port: number }>) {
    const got: string[] = [];
    const lines: Array<Record<string, unknown>> = [];
    const metrics = createMetrics();
    const t = await createPeerTransport({
      selfId: "b",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: members.map((m) => ({ ...m, address: "127.0.0.1" })),
      keys,
      boot: 1,
      onMessage: (from) => got.push(from),
      log: createLogger({ level: "info", nodeId: "b", write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
      metrics,
    });
    open.push(t);
    return { t, got, lines, metrics };
  }

  it("accepts the old key until every member signs with the new one, then drops and counts it (retired-key), and answers only with the new key", async () => {
    const oldKey = key();
    const newKey = key();
    const p = await peers();
    const {
      t: b,
      got,
      lines,
      metrics,
    } = await node({ current: newKey, previous: oldKey }, [
      { id: "a", port: p.port },
      { id: "c", port: p.port },
    ]);
    // During the roll: a and c have not got the new key yet.
    await p.send("a", oldKey)(b.port);
    await p.send("c", oldKey)(b.port);
    await settle();
    expect(got).toEqual(["a", "c"]);
    expect(b.keyStatus()).toEqual({ current: newKey.id, previous: oldKey.id, waitingFor: ["a", "c"], retired: null });
    b.send("c", msg("b")); // c announced the old key: it gets the old key
    // a rolls; c is still behind, so the old key stays accepted.
    await p.send("a", newKey)(b.port);
    await p.send("c", oldKey)(b.port);
    await settle();
    expect(got).toEqual(["a", "c", "a", "c"]);
    expect(b.keyStatus()).toEqual({ current: newKey.id, previous: oldKey.id, waitingFor: ["c"], retired: null });
    expect((await metrics.previousPeerKeyAccepted.get()).values[0].value).toBe(1);
    expect(lines.filter((l) => l.msg === "previous peer key retired: every member signs with the current key")).toHaveLength(0);
    // c signs with the new key (still announcing the old one as its own): every member has it.
    const before = Date.now();
    await p.send("c", newKey, oldKey)(b.port);
    await settle();
    expect(got).toHaveLength(5);
    const st = b.keyStatus();
    expect(st).toMatchObject({ current: newKey.id, previous: null, waitingFor: [], retired: { keyId: oldKey.id } });
    expect(Date.parse(st.retired!.at)).toBeGreaterThanOrEqual(before - 1000);
    expect((await metrics.previousPeerKeyAccepted.get()).values[0].value).toBe(0);
    b.send("c", msg("b")); // no longer answered with the old key, whatever c announced
    // A datagram signed with the old key is now dropped and counted; so after a reload with the same keys.
    await p.send("a", oldKey)(b.port);
    b.updateKeys({ current: newKey, previous: oldKey });
    await p.send("c", oldKey)(b.port);
    await p.send("a", newKey)(b.port);
    await settle();
    expect(got).toEqual(["a", "c", "a", "c", "c", "a"]);
    expect(await dropped(metrics, "retired-key")).toBe(2);
    expect(await dropped(metrics, "unknown-key")).toBe(0);
    expect((await metrics.previousPeerKeyAccepted.get()).values[0].value).toBe(0);
    expect(p.received.filter((r) => r.receiver === "c").map((r) => r.keyId)).toEqual([oldKey.id, newKey.id]);
    expect(lines.filter((l) => l.msg === "previous peer key retired: every member signs with the current key")).toEqual([
      expect.objectContaining({ level: "info", keyId: oldKey.id, current: newKey.id }),
    ]);
    p.close();
  });

  it("keeps the old key while a member has not confirmed, names it, and retires it when that member leaves the list", async () => {
    const oldKey = key();
    const newKey = key();
    const p = await peers();
    const {
      t: b,
      got,
      metrics,
    } = await node({ current: newKey, previous: oldKey }, [
      { id: "a", port: p.port },
      { id: "c", port: p.port },
    ]);
    await p.send("a", oldKey)(b.port);
    await p.send("a", newKey)(b.port);
    await settle();
    // c, never confirming, keeps the old key accepted (it may be down, or behind on its config).
    for (let i = 0; i < 3; i++) await p.send("c", oldKey)(b.port);
    await settle();
    expect(got).toEqual(["a", "a", "c", "c", "c"]);
    expect(b.keyStatus()).toMatchObject({ previous: oldKey.id, waitingFor: ["c"], retired: null });
    b.updateMembers([{ id: "a", address: "127.0.0.1", port: p.port }]);
    expect(b.keyStatus()).toMatchObject({ previous: null, waitingFor: [], retired: { keyId: oldKey.id } });
    await p.send("c", oldKey)(b.port);
    await p.send("a", oldKey)(b.port);
    await settle();
    expect(got).toHaveLength(5);
    expect(await dropped(metrics, "retired-key")).toBe(2);
    p.close();
  });

  it("a node that was down during the roll comes back with the new key only and works with nodes that retired the old one", async () => {
    const oldKey = key();
    const newKey = key();
    const { a, b, got: gotAtB, metrics: metricsB } = await pair({ current: newKey, previous: oldKey });
    a.send("b", msg("a"));
    await settle();
    expect(b.keyStatus()).toMatchObject({ previous: null, retired: { keyId: oldKey.id } });
    await a.close();
    open.splice(open.indexOf(a), 1);
    // A restart is a later boot: the boot counter (durable state) orders incarnations.
    const gotAtA: string[] = [];
    const back = await createPeerTransport({
      selfId: "a",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: [{ id: "b", address: "127.0.0.1", port: b.port }],
      keys: { current: newKey, previous: null },
      boot: 2,
      onMessage: (from) => gotAtA.push(from),
      log: silentLogger,
    });
    open.push(back);
    b.updateMembers([{ id: "a", address: "127.0.0.1", port: back.port }]);
    back.send("b", msg("a"));
    b.send("a", msg("b"));
    await settle();
    expect(gotAtB.map((g) => g.from)).toEqual(["a", "a"]);
    expect(gotAtA).toEqual(["b"]);
    expect(back.keyStatus()).toEqual({ current: newKey.id, previous: null, waitingFor: [], retired: null });
    expect(await dropped(metricsB, "retired-key")).toBe(0);
    expect(await dropped(metricsB, "unknown-key")).toBe(0);
  });
});
