/**
 * Authenticated peer messages over UDP: one datagram per message.
 *
 *   version(1) keyIdLen(1) keyId  bootId(8) counter(8)  senderLen(1) sender  receiverLen(1) receiver
 *   body (JSON)  Ed25519 signature(64) over everything before it
 *
 * - Each member signs with its own identity (agent/identity.ts); a receiver verifies against the
 *   public key its config lists for the claimed sender (the key id says which of the sender's keys,
 *   current or previous). A datagram that claims member X but names another member's key is dropped
 *   as `wrong-signer`; one that names X's key but does not verify under it, as `bad-signature`. So
 *   a stolen witness key cannot speak for an LB.
 * - No shared HMAC key any more, not even as a cheap pre-filter: a key every member holds is exactly
 *   what let one member speak for all, and a second key system would need its own roll. The CPU a
 *   forged datagram costs is bounded instead: the cheap checks (version, receiver, known sender, a key
 *   of that sender, not a replay) come before the one verify, the firewalls admit only members'
 *   addresses to the peer port, and a verify costs tens of µs (README "Peer identities").
 * - Authentication is by key and sender id, not by source address (NAT, the witness's public IP).
 * - One-pass key roll: during a roll every member has a current and a previous identity, and every
 *   config lists both public keys. Every body names the sender's current key id (field "$k").
 *   Packets are signed with our current identity, except to a peer that still announces its previous
 *   one: that peer has not got the new config, so it knows only our previous public key and gets
 *   packets it can check. A roll never splits the cluster, whatever order the droplets get the new
 *   config in, and needs one `pulumi up`. Once every member has been seen signing with its current
 *   identity, the previous ones are retired (agent/key-retirement.ts): their packets are dropped
 *   (reason `retired-key`), so a roll revokes a leaked key.
 * - Replay protection without synchronized clocks: per sender, the highest (bootId, counter) seen and
 *   a 64-packet sliding window (as IPsec and WireGuard do). A new boot id from a sender starts a new
 *   window, and a lower one is refused, so an earlier incarnation's packets are refused; the election's
 *   terms make any that slip through harmless. The boot id is the sender's boot counter, kept in its
 *   durable state (agent/durable-state.ts) and written before the transport starts: it goes up on
 *   every start whatever the wall clock does. A boot id from the wall clock would go down after a
 *   clock step back, and the peers would refuse the restarted node for good. The window is checked
 *   before the verify and updated only after it: a forged datagram never moves it.
 * - Bad packets are dropped and counted, never thrown. An authenticated body must match its kind's
 *   schema (agent/messages.ts): unknown kinds and malformed fields are dropped and counted too
 *   (reasons `unknown-kind`, `schema`), extra fields from a newer build are ignored.
 */
import { createSocket, type Socket } from "node:dgram";
import type { PeerMessage } from "./election/types.js";
import { parsePeerMessage, parseSideMessage, type SideMessage } from "./messages.js";
import type { Logger } from "./log.js";
import type { FipdMetrics } from "./metrics.js";
import { KeyRetirement, type PeerKeys, type Retirement, type PeerKeyStatus } from "./key-retirement.js";
import { SIGNATURE_BYTES, parsePublicKey, signDatagram, verifyDatagram, type OwnIdentity, type PublicIdentity } from "./identity.js";
import { MAX_BOOT } from "./durable-state.js";

export type { PeerKeys, PeerKeyStatus } from "./key-retirement.js";

/** 2: Ed25519 signatures per member (1 was the shared HMAC key). */
const VERSION = 2;
/**
 * The shared-key builds' wire version. Its header has the same layout up to the receiver (then an
 * HMAC tag we cannot check: no shared key any more), so a member still on such a build can be
 * named, unauthenticated, while a rolling upgrade crosses the wire change. Such datagrams are
 * dropped (reason `older-wire`); the name feeds only `fipd status` (olderWire), which lets the
 * deploy's health wait tell "its peers are not upgraded yet" from "its peers are gone"
 * (status-format.ts isClusterHealthy). Nothing in the election trusts it.
 */
const OLDER_WIRE_VERSION = 1;
/** How long a member counts as heard on the older wire after its last such datagram (heartbeats come every 50 ms by default). */
export const OLDER_WIRE_SEEN_MS = 3_000;
/** At most one warning per peer and kind of send failure in this long. */
const SEND_WARN_INTERVAL_MS = 10_000;
const TAG = SIGNATURE_BYTES;
const WINDOW = 64n;

/** A peer as the config lists it: the public keys in OpenSSH form, already validated by the config schema. */
export interface PeerAddress {
  id: string;
  address: string;
  port: number;
  /** The member's identity (its config's publicKey). */
  publicKey: string;
  /** During a key roll: its previous identity. */
  previousPublicKey?: string;
}

interface Peer {
  id: string;
  address: string;
  port: number;
  publicKey: PublicIdentity;
  previousPublicKey: PublicIdentity | null;
}

/** The peers with their keys parsed (a key the schema let through that does not parse is a broken invariant: it throws). */
function peersOf(list: readonly PeerAddress[]): Map<string, Peer> {
  return new Map(
    list.map((m) => [
      m.id,
      {
        id: m.id,
        address: m.address,
        port: m.port,
        publicKey: parsePublicKey(m.publicKey),
        previousPublicKey: m.previousPublicKey ? parsePublicKey(m.previousPublicKey) : null,
      },
    ]),
  );
}

export interface PeerTransport {
  send(to: string, msg: PeerMessage | SideMessage): void;
  updateMembers(members: PeerAddress[]): void;
  updateKeys(keys: PeerKeys<OwnIdentity>): void;
  /** The identities accepted now, and whether and when the previous ones were retired (`fipd status`). */
  keyStatus(): PeerKeyStatus;
  /** Members heard in the last OLDER_WIRE_SEEN_MS on the older wire only (not yet upgraded), sorted; unauthenticated. */
  olderWire(): string[];
  close(): Promise<void>;
  port: number;
}

interface ReplayState {
  boot: bigint;
  top: bigint;
  bitmap: bigint;
}

export type DropReason =
  | "malformed"
  | "older-wire"
  | "unknown-key"
  | "retired-key"
  | "wrong-signer"
  | "bad-signature"
  | "unknown-sender"
  | "wrong-receiver"
  | "replay"
  | "unknown-kind"
  | "schema";

export function encodePacket(key: OwnIdentity, bootId: bigint, counter: bigint, sender: string, receiver: string, body: Buffer): Buffer {
  const kid = Buffer.from(key.id, "ascii");
  const s = Buffer.from(sender, "utf8");
  const r = Buffer.from(receiver, "utf8");
  const head = Buffer.alloc(2 + kid.length + 16 + 1 + s.length + 1 + r.length);
  let o = 0;
  head.writeUInt8(VERSION, o++);
  head.writeUInt8(kid.length, o++);
  kid.copy(head, o);
  o += kid.length;
  head.writeBigUInt64BE(bootId, o);
  o += 8;
  head.writeBigUInt64BE(counter, o);
  o += 8;
  head.writeUInt8(s.length, o++);
  s.copy(head, o);
  o += s.length;
  head.writeUInt8(r.length, o++);
  r.copy(head, o);
  const unsigned = Buffer.concat([head, body]);
  return Buffer.concat([unsigned, signDatagram(key, unsigned)]);
}

export function decodePacket(
  buf: Buffer,
): { keyId: string; bootId: bigint; counter: bigint; sender: string; receiver: string; body: Buffer; unsigned: Buffer; tag: Buffer } | null {
  try {
    if (buf.length < 2 + 16 + 2 + TAG || buf.readUInt8(0) !== VERSION) return null;
    let o = 1;
    const kl = buf.readUInt8(o++);
    const keyId = buf.subarray(o, o + kl).toString("ascii");
    o += kl;
    const bootId = buf.readBigUInt64BE(o);
    o += 8;
    const counter = buf.readBigUInt64BE(o);
    o += 8;
    const sl = buf.readUInt8(o++);
    const sender = buf.subarray(o, o + sl).toString("utf8");
    o += sl;
    const rl = buf.readUInt8(o++);
    const receiver = buf.subarray(o, o + rl).toString("utf8");
    o += rl;
    if (o > buf.length - TAG) return null;
    return {
      keyId,
      bootId,
      counter,
      sender,
      receiver,
      body: buf.subarray(o, buf.length - TAG),
      unsigned: buf.subarray(0, buf.length - TAG),
      tag: buf.subarray(buf.length - TAG),
    };
  } catch {
    return null;
  }
}

/**
 * Sender and receiver of a datagram of the shared-key builds (wire version 1: the same header up to
 * the receiver), or null. Not authenticated: only ever a hint for `fipd status`.
 */
export function decodeOlderWireHeader(buf: Buffer): { sender: string; receiver: string } | null {
  try {
    if (buf.length < 2 || buf.readUInt8(0) !== OLDER_WIRE_VERSION) return null;
    let o = 1;
    o += 1 + buf.readUInt8(o) + 16;
    const sl = buf.readUInt8(o++);
    if (o + sl + 1 > buf.length) return null;
    const sender = buf.subarray(o, o + sl).toString("utf8");
    o += sl;
    const rl = buf.readUInt8(o++);
    if (o + rl > buf.length) return null;
    return { sender, receiver: buf.subarray(o, o + rl).toString("utf8") };
  } catch {
    return null;
  }
}

/**
 * The boot id a start sends: its boot counter in the high 32 bits, where older builds put their boot
 * time in unix seconds, so the two compare in one order across a rolling upgrade (see `nextBoot`).
 */
export function bootIdOf(boot: number): bigint {
  if (!Number.isSafeInteger(boot) || boot < 1 || boot > MAX_BOOT) throw new RangeError(`boot counter must be an integer from 1 to ${MAX_BOOT}, got ${boot}`);
  return BigInt(boot) << 32n;
}

/** Sliding-window replay check; updates the state when the packet is new. */
export function acceptCounter(st: ReplayState | undefined, boot: bigint, counter: bigint): { ok: boolean; state: ReplayState } {
  if (!st || boot > st.boot) return { ok: true, state: { boot, top: counter, bitmap: 1n } };
  if (boot < st.boot) return { ok: false, state: st };
  if (counter > st.top) {
    const shift = counter - st.top;
    const bitmap = shift >= WINDOW ? 1n : ((st.bitmap << shift) | 1n) & ((1n << WINDOW) - 1n);
    return { ok: true, state: { boot, top: counter, bitmap } };
  }
  const back = st.top - counter;
  if (back >= WINDOW) return { ok: false, state: st };
  const bit = 1n << back;
  if (st.bitmap & bit) return { ok: false, state: st };
  return { ok: true, state: { ...st, bitmap: st.bitmap | bit } };
}

export async function createPeerTransport(o: {
  selfId: string;
  listenAddress: string;
  listenPort: number;
  members: PeerAddress[];
  /** This node's own identities: current, and previous during a roll. */
  keys: PeerKeys<OwnIdentity>;
  /** This start's boot counter (DurableStore.beginBoot), already on disk. */
  boot: number;
  onMessage: (from: string, msg: PeerMessage) => void;
  /** Side messages (agent/messages.ts: not the election's); without a handler they are dropped as `unknown-kind`. */
  onSideMessage?: (from: string, msg: SideMessage) => void;
  log: Logger;
  metrics?: FipdMetrics;
}): Promise<PeerTransport> {
  let members = peersOf(o.members);
  const roll = new KeyRetirement<OwnIdentity>(
    o.keys,
    o.members.map((m) => m.id),
    () => Date.now(),
  );
  const bootId = bootIdOf(o.boot);
  let counter = 0n;
  const replay = new Map<string, ReplayState>();
  /** Per peer, the id of its current identity as it announced it in its latest authenticated packet. */
  const peerCurrentKey = new Map<string, string>();
  const lastWarn = new Map<string, number>();
  /** When each peer's send warning was last logged, by peer and kind (a few entries per member). */
  const lastSendWarn = new Map<string, number>();
  const sock: Socket = createSocket({ type: o.listenAddress.includes(":") ? "udp6" : "udp4" });

  const drop = (reason: DropReason, detail: Record<string, unknown>) => {
    o.metrics?.peerDropped.inc({ reason });
    const now = Date.now();
    // At most one warning per reason every 10 s: a flood must not flood the journal too.
    if ((lastWarn.get(reason) ?? 0) + 10_000 < now) {
      lastWarn.set(reason, now);
      o.log.warn("dropped a peer packet", { reason, ...detail });
    }
  };

  const keyGauge = () => o.metrics?.previousPeerKeyAccepted.set(roll.accepted().previous ? 1 : 0);
  keyGauge();
  const noteRetirement = (r: Retirement | null) => {
    if (!r) return;
    // Once per roll: the retirement happens once, and a reload with the same keys keeps it.
    o.log.info("previous peer key retired: every member signs with its current identity", { keyId: r.keyId, current: r.current });
    keyGauge();
  };

  /** Per member, when it last sent us an older-wire datagram (bounded by the member list). */
  const olderWireSeen = new Map<string, number>();

  sock.on("message", (buf, rinfo) => {
    const p = decodePacket(buf);
    if (!p) {
      const old = decodeOlderWireHeader(buf);
      if (old && old.receiver === o.selfId && members.has(old.sender)) {
        olderWireSeen.set(old.sender, Date.now());
        return drop("older-wire", { from: rinfo.address, sender: old.sender });
      }
      return drop("malformed", { from: rinfo.address });
    }
    if (p.receiver !== o.selfId) return drop("wrong-receiver", { from: rinfo.address, receiver: p.receiver });
    const m = members.get(p.sender);
    if (!m) return drop("unknown-sender", { from: rinfo.address, sender: p.sender });
    // Only the claimed sender's own keys: another member's key never speaks for it.
    const rolling = roll.rolling();
    const isCurrent = p.keyId === m.publicKey.id;
    const key = isCurrent ? m.publicKey : rolling && m.previousPublicKey && p.keyId === m.previousPublicKey.id ? m.previousPublicKey : null;
    if (!key) {
      if (m.previousPublicKey && p.keyId === m.previousPublicKey.id) return drop("retired-key", { from: rinfo.address, sender: p.sender, keyId: p.keyId });
      const owner = [...members.values()].find((x) => x.publicKey.id === p.keyId || x.previousPublicKey?.id === p.keyId);
      if (owner) return drop("wrong-signer", { from: rinfo.address, sender: p.sender, keyOf: owner.id });
      return drop("unknown-key", { from: rinfo.address, sender: p.sender, keyId: p.keyId });
    }
    // The window first (cheap), but updated only once the signature holds.
    const r = acceptCounter(replay.get(p.sender), p.bootId, p.counter);
    if (!r.ok) return drop("replay", { sender: p.sender });
    if (!verifyDatagram(key, p.unsigned, p.tag)) return drop("bad-signature", { from: rinfo.address, sender: p.sender });
    replay.set(p.sender, r.state);
    noteRetirement(roll.signed(p.sender, isCurrent));
    let body: unknown;
    try {
      body = JSON.parse(p.body.toString("utf8"));
    } catch {
      return drop("malformed", { sender: p.sender });
    }
    const announced = typeof body === "object" && body !== null ? (body as { $k?: unknown }).$k : undefined;
    if (typeof announced === "string" && announced.length <= 255) peerCurrentKey.set(p.sender, announced);
    // Only a message that matches its kind's schema reaches the core (agent/messages.ts); the
    // authenticated header names the sender, so the body cannot claim to be someone else.
    const side = parseSideMessage(body, p.sender);
    if (side) {
      if (!side.ok) return drop("schema", { sender: p.sender, kind: side.kind, problems: side.problems.slice(0, 3) });
      if (!o.onSideMessage) return drop("unknown-kind", { sender: p.sender, kind: side.message.kind });
      try {
        o.onSideMessage(p.sender, side.message);
      } catch (e) {
        o.log.error("peer side message handler failed", { kind: side.message.kind, error: (e as Error).message });
      }
      return;
    }
    const parsed = parsePeerMessage(body, p.sender);
    if (!parsed.ok) return drop(parsed.reason, { sender: p.sender, kind: parsed.kind, problems: parsed.problems.slice(0, 3) });
    try {
      o.onMessage(p.sender, parsed.message);
    } catch (e) {
      o.log.error("peer message handler failed", { error: (e as Error).message });
    }
  });
  sock.on("error", (e) => o.log.warn("peer socket error", { error: e.message }));

  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(o.listenPort, o.listenAddress, () => {
      sock.off("error", reject);
      resolve();
    });
  });

  return {
    port: sock.address().port,
    send(to, msg) {
      const m = members.get(to);
      if (!m) return;
      counter++;
      const keys = roll.accepted();
      // A peer still announcing its previous identity has the previous config: it knows only our previous public key.
      const useOld = keys.previous !== null && m.previousPublicKey !== null && peerCurrentKey.get(to) === m.previousPublicKey.id;
      const body = Buffer.from(JSON.stringify({ ...msg, $k: keys.current.id }), "utf8");
      const pkt = encodePacket(useOld ? keys.previous! : keys.current, bootId, counter, o.selfId, to, body);
      sock.send(pkt, m.port, m.address, (err) => {
        if (!err) return;
        o.metrics?.peerDropped.inc({ reason: "send-error" });
        // Named, and at most once per peer and kind every 10 s: a peer whose host name does not
        // resolve fails every heartbeat, and would otherwise show only as a counter.
        const code = (err as NodeJS.ErrnoException).code ?? "";
        const unresolved = code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EAI_NONAME" || code === "EAI_FAIL";
        const what = unresolved ? "cannot resolve a peer's address; its heartbeats are not sent" : "cannot send to a peer";
        const now = Date.now();
        if ((lastSendWarn.get(`${to} ${what}`) ?? -Infinity) + SEND_WARN_INTERVAL_MS <= now) {
          lastSendWarn.set(`${to} ${what}`, now);
          o.log.warn(what, { peer: to, address: m.address, port: m.port, error: code || err.message });
        }
      });
    },
    updateMembers(next) {
      members = peersOf(next);
      for (const id of olderWireSeen.keys()) if (!members.has(id)) olderWireSeen.delete(id);
      noteRetirement(roll.setMembers(members.keys()));
    },
    updateKeys(next) {
      roll.setKeys(next);
      keyGauge();
    },
    keyStatus: () => roll.status(),
    olderWire: () => {
      const since = Date.now() - OLDER_WIRE_SEEN_MS;
      return [...olderWireSeen]
        .filter(([, at]) => at >= since)
        .map(([id]) => id)
        .sort();
    },
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}
