import { createHmac, randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { fileDurableStore } from "../agent/durable-state.js";
import type { PeerMessage } from "../agent/election/types.js";
import { parsePrivateKey, type OwnIdentity } from "../agent/identity.js";
import { createLogger, silentLogger } from "../agent/log.js";
import { createMetrics } from "../agent/metrics.js";
import {
  OLDER_WIRE_SEEN_MS,
  acceptCounter,
  bootIdOf,
  createPeerTransport,
  decodeOlderWireHeader,
  decodePacket,
  encodePacket,
  type PeerTransport,
} from "../agent/transport.js";
import { newIdentity } from "../testbed/identity.js";

/** A fresh member identity (Ed25519), as the agent loads it from its key file. */
const key = (): OwnIdentity => parsePrivateKey(newIdentity().privateKeyPem, "in a test");
type Keys = { current: OwnIdentity; previous: OwnIdentity | null };
/** A member entry as a peer's config lists it: its public keys. */
const peer = (id: string, port: number, k: Keys, address = "127.0.0.1") => ({
  id,
  address,
  port,
  publicKey: k.current.text,
  ...(k.previous ? { previousPublicKey: k.previous.text } : {}),
});
const msg = (from: string): PeerMessage => ({ kind: "release", from, term: 1, successor: null, colorInForce: "blue", reason: "test" });
const open: PeerTransport[] = [];
const dirs: string[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const t of open.splice(0)) await t.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/**
 * Two nodes a and b. `keysA`/`keysB`: each node's own identities; `aSeesB`/`bSeesA`: the keys its
 * config lists for the other (by default the other's own, i.e. both on the same config).
 */
async function pair(keysA: Keys = { current: key(), previous: null }, keysB: Keys = { current: key(), previous: null }, aSeesB = keysB, bSeesA = keysA) {
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
    members: [peer("b", b.port, aSeesB)],
    keys: keysA,
    boot: 1,
    onMessage: () => undefined,
    log: silentLogger,
  });
  b.updateMembers([peer("a", a.port, bSeesA)]);
  open.push(a, b);
  return { a, b, got, metrics };
}
const settle = () => new Promise((r) => setTimeout(r, 100));
const dropped = async (m: ReturnType<typeof createMetrics>, reason: string) =>
  (await m.peerDropped.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
const sendRaw = async (port: number, ...pkts: Buffer[]) => {
  const raw = createSocket("udp4");
  for (const p of pkts) await new Promise<void>((r) => raw.send(p, port, "127.0.0.1", () => r()));
  raw.close();
};

describe("peer transport", () => {
  it("delivers authenticated messages with the sender from the header", async () => {
    const { a, got } = await pair();
    a.send("b", { ...msg("mallory") });
    await settle();
    expect(got).toHaveLength(1);
    expect(got[0].from).toBe("a");
    expect(got[0].msg.from).toBe("a");
  });

  it("drops unknown keys and garbage, and counts them", async () => {
    const { b, got, metrics } = await pair();
    await sendRaw(b.port, Buffer.from("garbage"), encodePacket(key(), 1n, 1n, "a", "b", Buffer.from("{}")));
    await settle();
    expect(got).toHaveLength(0);
    expect(await dropped(metrics, "malformed")).toBe(1);
    expect(await dropped(metrics, "unknown-key")).toBe(1);
  });

  it("the witness's key cannot speak for an LB: a datagram claiming the LB's id is dropped and counted, whichever key id it names", async () => {
    const lb = key();
    const witness = key();
    const self = key();
    const got: string[] = [];
    const metrics = createMetrics();
    const t = await createPeerTransport({
      selfId: "lb-blue-2",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: [peer("lb-blue-1", 9, { current: lb, previous: null }), peer("witness", 9, { current: witness, previous: null })],
      keys: { current: self, previous: null },
      boot: 1,
      onMessage: (from) => got.push(from),
      log: silentLogger,
      metrics,
    });
    open.push(t);
    const body = (from: string) => Buffer.from(JSON.stringify(msg(from)));
    // Signed with the witness key, naming it: the key is the witness's, not lb-blue-1's.
    const asWitnessKey = encodePacket(witness, 3n, 1n, "lb-blue-1", "lb-blue-2", body("lb-blue-1"));
    // Signed with the witness key but naming lb-blue-1's key id: the signature does not verify under lb-blue-1's key.
    const forgedId = encodePacket({ ...witness, id: lb.id }, 3n, 2n, "lb-blue-1", "lb-blue-2", body("lb-blue-1"));
    // The witness speaking as itself, and lb-blue-1 as itself: accepted.
    const honest = [
      encodePacket(witness, 3n, 1n, "witness", "lb-blue-2", body("witness")),
      encodePacket(lb, 3n, 3n, "lb-blue-1", "lb-blue-2", body("lb-blue-1")),
    ];
    await sendRaw(t.port, asWitnessKey, forgedId, ...honest);
    await settle();
    expect(got).toEqual(["witness", "lb-blue-1"]);
    expect(await dropped(metrics, "wrong-signer")).toBe(1);
    expect(await dropped(metrics, "bad-signature")).toBe(1);
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

  it("accepts a member's previous identity during a key roll, and rejects replays and tampering", async () => {
    const oldA = key();
    const newA = key();
    // b has rolled (it lists a's new and previous keys); a has not: it signs with its old identity.
    const { b, got, metrics } = await pair({ current: oldA, previous: null }, { current: key(), previous: key() }, undefined, {
      current: newA,
      previous: oldA,
    });
    const pkt = encodePacket(oldA, 5n, 1n, "a", "b", Buffer.from(JSON.stringify(msg("a"))));
    // A fresh counter, so the replay window lets it through to the signature check.
    const tampered = encodePacket(oldA, 5n, 2n, "a", "b", Buffer.from(JSON.stringify(msg("a"))));
    tampered[tampered.length - 70] ^= 1;
    await sendRaw(b.port, pkt, pkt, tampered);
    await settle();
    expect(got).toHaveLength(1);
    expect(await dropped(metrics, "replay")).toBe(1);
    expect(await dropped(metrics, "bad-signature")).toBe(1);
  });

  it("during a key roll, answers a peer that still has only the old config with its old identity, and switches when it moves", async () => {
    const [oldA, newA, oldB, newB] = [key(), key(), key(), key()];
    // a: rolled (new identities, previous ones accepted); b: not yet (old config: it knows only oldA). b speaks first.
    const rolledA = { current: newA, previous: oldA };
    const {
      a,
      b,
      got: gotAtB,
      metrics: metricsB,
    } = await pair(rolledA, { current: oldB, previous: null }, { current: newB, previous: oldB }, { current: oldA, previous: null });
    const gotAtA: string[] = [];
    const a2 = await createPeerTransport({
      selfId: "a",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: [peer("b", b.port, { current: newB, previous: oldB })],
      keys: rolledA,
      boot: 2,
      onMessage: (from) => gotAtA.push(from),
      log: silentLogger,
    });
    open.push(a2);
    await a.close();
    open.splice(open.indexOf(a), 1);
    b.updateMembers([peer("a", a2.port, { current: oldA, previous: null })]);
    a2.send("b", msg("a")); // new identity: b cannot check it yet
    await settle();
    expect(gotAtB).toHaveLength(0);
    b.send("a", msg("b")); // old identity: a accepts it and learns b is behind
    await settle();
    expect(gotAtA).toEqual(["b"]);
    a2.send("b", msg("a"));
    await settle();
    expect(gotAtB).toHaveLength(1);
    // b rolls too: its packets now carry its new identity, and a goes back to its new one for b.
    b.updateKeys({ current: newB, previous: oldB });
    b.updateMembers([peer("a", a2.port, rolledA)]);
    b.send("a", msg("b"));
    await settle();
    expect(gotAtA).toEqual(["b", "b"]);
    // The roll is over (the next deploy): previous identities are no longer listed.
    b.updateKeys({ current: newB, previous: null });
    b.updateMembers([peer("a", a2.port, { current: newA, previous: null })]);
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
    const keysB = { current: key(), previous: null };
    const got: string[] = [];
    const metrics = createMetrics();
    const b = await createPeerTransport({
      selfId: "b",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: [],
      keys: keysB,
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
        members: [peer("b", b.port, keysB)],
        keys,
        boot,
        onMessage: () => undefined,
        log: silentLogger,
      });
      b.updateMembers([peer("a", t.port, keys)]);
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
      members: [peer("lb-2", 7946, { current: key(), previous: null }, "lb-2.fipd-peer.invalid")],
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
      /** One packet from `from` to b, signed with `k`, whose body announces `announced` as the sender's current identity. */
      send: (from: string, k: OwnIdentity, announced = k) => {
        const c = (counters.get(from) ?? 0n) + 1n;
        counters.set(from, c);
        const pkt = encodePacket(k, 7n, c, from, "b", Buffer.from(JSON.stringify({ ...msg(from), $k: announced.id })));
        return (to: number) => new Promise<void>((r) => sock.send(pkt, to, "127.0.0.1", () => r()));
      },
      close: () => sock.close(),
    };
  }

  async function node(keys: Keys, members: Array<{ id: string; port: number; keys: Keys }>) {
    const got: string[] = [];
    const lines: Array<Record<string, unknown>> = [];
    const metrics = createMetrics();
    const t = await createPeerTransport({
      selfId: "b",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: members.map((m) => peer(m.id, m.port, m.keys)),
      keys,
      boot: 1,
      onMessage: (from) => got.push(from),
      log: createLogger({ level: "info", nodeId: "b", write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
      metrics,
    });
    open.push(t);
    return { t, got, lines, metrics };
  }

  /** Every member's old and new identity: a roll gives each a new one. */
  const roll = () => ({ a: { previous: key(), current: key() }, b: { previous: key(), current: key() }, c: { previous: key(), current: key() } });
  const RETIRED_LINE = "previous peer key retired: every member signs with its current identity";

  it("accepts old identities until every member signs with its new one, then drops and counts them (retired-key), and answers only with the new one", async () => {
    const k = roll();
    const p = await peers();
    const {
      t: b,
      got,
      lines,
      metrics,
    } = await node(k.b, [
      { id: "a", port: p.port, keys: k.a },
      { id: "c", port: p.port, keys: k.c },
    ]);
    // During the roll: a and c have not got the new config yet.
    await p.send("a", k.a.previous)(b.port);
    await p.send("c", k.c.previous)(b.port);
    await settle();
    expect(got).toEqual(["a", "c"]);
    expect(b.keyStatus()).toEqual({ current: k.b.current.id, previous: k.b.previous.id, waitingFor: ["a", "c"], retired: null });
    b.send("c", msg("b")); // c announced its old identity: it gets b's old one
    // a rolls; c is still behind, so the old identities stay accepted.
    await p.send("a", k.a.current)(b.port);
    await p.send("c", k.c.previous)(b.port);
    await settle();
    expect(got).toEqual(["a", "c", "a", "c"]);
    expect(b.keyStatus()).toEqual({ current: k.b.current.id, previous: k.b.previous.id, waitingFor: ["c"], retired: null });
    expect((await metrics.previousPeerKeyAccepted.get()).values[0].value).toBe(1);
    expect(lines.filter((l) => l.msg === RETIRED_LINE)).toHaveLength(0);
    // c signs with its new identity (still announcing the old one): every member has the new config.
    const before = Date.now();
    await p.send("c", k.c.current, k.c.previous)(b.port);
    await settle();
    expect(got).toHaveLength(5);
    const st = b.keyStatus();
    expect(st).toMatchObject({ current: k.b.current.id, previous: null, waitingFor: [], retired: { keyId: k.b.previous.id } });
    expect(Date.parse(st.retired!.at)).toBeGreaterThanOrEqual(before - 1000);
    expect((await metrics.previousPeerKeyAccepted.get()).values[0].value).toBe(0);
    b.send("c", msg("b")); // no longer answered with the old identity, whatever c announced
    // A datagram signed with an old identity is now dropped and counted; so after a reload with the same keys.
    await p.send("a", k.a.previous)(b.port);
    b.updateKeys(k.b);
    await p.send("c", k.c.previous)(b.port);
    await p.send("a", k.a.current)(b.port);
    await settle();
    expect(got).toEqual(["a", "c", "a", "c", "c", "a"]);
    expect(await dropped(metrics, "retired-key")).toBe(2);
    expect(await dropped(metrics, "unknown-key")).toBe(0);
    expect((await metrics.previousPeerKeyAccepted.get()).values[0].value).toBe(0);
    expect(p.received.filter((r) => r.receiver === "c").map((r) => r.keyId)).toEqual([k.b.previous.id, k.b.current.id]);
    expect(lines.filter((l) => l.msg === RETIRED_LINE)).toEqual([expect.objectContaining({ level: "info", keyId: k.b.previous.id, current: k.b.current.id })]);
    p.close();
  });

  it("keeps old identities while a member has not confirmed, names it, and retires them when that member leaves the list", async () => {
    const k = roll();
    const p = await peers();
    const {
      t: b,
      got,
      metrics,
    } = await node(k.b, [
      { id: "a", port: p.port, keys: k.a },
      { id: "c", port: p.port, keys: k.c },
    ]);
    await p.send("a", k.a.previous)(b.port);
    await p.send("a", k.a.current)(b.port);
    await settle();
    // c, never confirming, keeps the old identities accepted (it may be down, or behind on its config).
    for (let i = 0; i < 3; i++) await p.send("c", k.c.previous)(b.port);
    await settle();
    expect(got).toEqual(["a", "a", "c", "c", "c"]);
    expect(b.keyStatus()).toMatchObject({ previous: k.b.previous.id, waitingFor: ["c"], retired: null });
    b.updateMembers([peer("a", p.port, k.a)]);
    expect(b.keyStatus()).toMatchObject({ previous: null, waitingFor: [], retired: { keyId: k.b.previous.id } });
    await p.send("c", k.c.previous)(b.port); // c is no member any more
    await p.send("a", k.a.previous)(b.port);
    await settle();
    expect(got).toHaveLength(5);
    expect(await dropped(metrics, "retired-key")).toBe(1);
    expect(await dropped(metrics, "unknown-sender")).toBe(1);
    p.close();
  });

  it("a node that was down during the roll comes back with the new identities only and works with nodes that retired the old ones", async () => {
    const k = roll();
    const { a, b, got: gotAtB, metrics: metricsB } = await pair(k.a, k.b);
    a.send("b", msg("a"));
    await settle();
    expect(b.keyStatus()).toMatchObject({ previous: null, retired: { keyId: k.b.previous.id } });
    await a.close();
    open.splice(open.indexOf(a), 1);
    // A restart is a later boot: the boot counter (durable state) orders incarnations.
    const gotAtA: string[] = [];
    const back = await createPeerTransport({
      selfId: "a",
      listenAddress: "127.0.0.1",
      listenPort: 0,
      members: [peer("b", b.port, { current: k.b.current, previous: null })],
      keys: { current: k.a.current, previous: null },
      boot: 2,
      onMessage: (from) => gotAtA.push(from),
      log: silentLogger,
    });
    open.push(back);
    b.updateMembers([peer("a", back.port, k.a)]);
    back.send("b", msg("a"));
    b.send("a", msg("b"));
    await settle();
    expect(gotAtB.map((g) => g.from)).toEqual(["a", "a"]);
    expect(gotAtA).toEqual(["b"]);
    expect(back.keyStatus()).toEqual({ current: k.a.current.id, previous: null, waitingFor: [], retired: null });
    expect(await dropped(metricsB, "retired-key")).toBe(0);
    expect(await dropped(metricsB, "unknown-key")).toBe(0);
  });
});

describe("peer transport: members on the shared-key build's wire (version 1) during the upgrade", () => {
  /** A datagram as the shared-key build (bd53a1e) sends it: the same header, version 1, an HMAC-SHA256 tag. */
  const v1Packet = (sender: string, receiver: string) => {
    const kid = Buffer.from("k1", "ascii");
    const s = Buffer.from(sender, "utf8");
    const r = Buffer.from(receiver, "utf8");
    const head = Buffer.alloc(2 + kid.length + 16 + 1 + s.length + 1 + r.length);
    let o = head.writeUInt8(1, 0);
    o = head.writeUInt8(kid.length, o);
    o += kid.copy(head, o);
    o = head.writeBigUInt64BE(1n << 32n, o);
    o = head.writeBigUInt64BE(7n, o);
    o = head.writeUInt8(s.length, o);
    o += s.copy(head, o);
    o = head.writeUInt8(r.length, o);
    r.copy(head, o);
    const unsigned = Buffer.concat([head, Buffer.from(JSON.stringify(msg(sender)))]);
    return Buffer.concat([unsigned, createHmac("sha256", randomBytes(32)).update(unsigned).digest()]);
  };

  it("names a member that speaks the older wire (dropped as older-wire, never delivered), forgets it after OLDER_WIRE_SEEN_MS or when it leaves the list; strangers are not named", async () => {
    const { b, got, metrics } = await pair();
    expect(b.olderWire()).toEqual([]);
    await sendRaw(b.port, v1Packet("a", "b"), v1Packet("mallory", "b"), v1Packet("a", "c"));
    await settle();
    expect(got).toHaveLength(0);
    expect(b.olderWire()).toEqual(["a"]);
    expect(await dropped(metrics, "older-wire")).toBe(1);
    expect(await dropped(metrics, "malformed")).toBe(2);
    expect(decodeOlderWireHeader(v1Packet("a", "b"))).toEqual({ sender: "a", receiver: "b" });
    expect(decodeOlderWireHeader(v1Packet("a", "b").subarray(0, 22))).toBeNull();
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.now() + OLDER_WIRE_SEEN_MS + 1);
    expect(b.olderWire()).toEqual([]);
    vi.useRealTimers();
    await sendRaw(b.port, v1Packet("a", "b"));
    await settle();
    expect(b.olderWire()).toEqual(["a"]);
    b.updateMembers([]);
    expect(b.olderWire()).toEqual([]);
  });
});
