/**
 * Issued ACME chains between LBs (issue 15), so that every LB serves the certificate the leader
 * obtained, at once after a failover, and a node that was down catches up when it returns.
 *
 * Why TCP, and why this shape: a chain (a few KiB, up to MAX_CHAIN_BYTES) does not fit one datagram
 * of the peer transport. So a small exchange over TCP on the peer port number, bound to the peer
 * listen address (the cloud firewall opens that port between LBs only: components/firewalls.ts).
 * One connection carries one request and one response, each a single length-prefixed frame, signed
 * with the sender's Ed25519 identity (ExchangeAuth, the transport's scheme). Two requests:
 *   - `advert`: the sender's chains as (name, sha256, notAfterMs); the answer is the receiver's list.
 *     Each side then fetches what the other holds newer. Sent at boot, periodically, and whenever our
 *     store takes a new chain, to every LB peer: a node back from a restart adverts its (older) list
 *     and learns the newer ones in the answer.
 *   - `get`: one chain by name; the answer is its PEM (or null).
 * Chains are public, and the store accepts one only if its leaf carries our own key for that name
 * (so a forged chain is refused whoever sends it); the signature keeps strangers from feeding us
 * work or reading what we hold. A response names the request's random nonce, so an old response
 * cannot be replayed as a new one; a replayed request costs one bounded answer.
 *
 * Bounded: frame sizes (MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES), one deadline per connection
 * (timeoutMs, connect included), at most MAX_INBOUND connections served at once, one exchange at a
 * time per peer (a request for a peer that is busy runs once more when it is done, not once per
 * request), at most MAX_ADVERTISED chains in a list, a refused chain not fetched again.
 */
import { randomBytes } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";
import * as v from "valibot";
import type { Logger } from "../log.js";
import { check, formatIssues, integer, matching, nodeId } from "../schema.js";
import { signDatagram, verifyDatagram, type OwnIdentity, type PublicIdentity } from "../identity.js";
import type { PeerKeys } from "../key-retirement.js";
import { CERTIFICATE_NAME, MAX_CHAIN_BYTES, type AcmeStore } from "./store.js";

/** Most chains one list carries (one per ACME certificate name; a stack has a handful). */
export const MAX_ADVERTISED = 64;
export const MAX_REQUEST_BYTES = 16 * 1024;
/** A chain, JSON-escaped, plus the envelope. */
export const MAX_RESPONSE_BYTES = 2 * MAX_CHAIN_BYTES + 16 * 1024;
/** Inbound connections served at once; more are closed at accept. */
export const MAX_INBOUND = 8;
export const EXCHANGE_DEFAULTS = { timeoutMs: 5_000, advertIntervalMs: 60_000 } as const;

/**
 * How a frame is signed and checked: the transport's peer authentication, per member. Each node signs
 * with its own Ed25519 identity (agent/identity.ts); a frame verifies only under a key listed for the
 * member it claims to come from, so one member's key cannot speak for another.
 */
export interface ExchangeAuth {
  /** Signs `data` from us to peer `to`: the key id and the signature. */
  sign(to: string, data: Buffer): { keyId: string; sig: Buffer };
  /** Whether `sig` over `data` is `from`'s, with the key `keyId`. */
  verify(from: string, keyId: string, data: Buffer, sig: Buffer): boolean;
}

/** Domain separation: an exchange signature is never valid as a datagram's, nor the reverse. */
const CONTEXT = Buffer.from("ha-lb acme-exchange v2\0");

/**
 * `own`: this node's identities (the current signs; read at each frame, so a reload's keys apply).
 * `peerKeys(id)`: the public identities accepted for member `id` (current, and previous during a key
 * roll), or none for a stranger.
 */
export function identityExchangeAuth(own: () => PeerKeys<OwnIdentity>, peerKeys: (id: string) => readonly PublicIdentity[]): ExchangeAuth {
  return {
    sign: (_to, data) => {
      const k = own().current;
      return { keyId: k.id, sig: signDatagram(k, Buffer.concat([CONTEXT, data])) };
    },
    verify(from, keyId, data, sig) {
      const k = peerKeys(from).find((x) => x.id === keyId);
      return k !== undefined && verifyDatagram(k, Buffer.concat([CONTEXT, data]), sig);
    },
  };
}

const sha256Hex = matching(/^[0-9a-f]{64}$/, "a SHA-256 in 64 hex digits");
const certName = matching(CERTIFICATE_NAME, "a certificate name (1-100 characters of A-Z, a-z, 0-9, '.', '_', '-')");
const nonce = matching(/^[0-9a-f]{32}$/, "a nonce of 32 hex digits");
const ChainList = v.pipe(
  v.array(v.object({ name: certName, sha256: sha256Hex, notAfterMs: integer(0, Number.MAX_SAFE_INTEGER, "a time in ms since the epoch") })),
  v.maxLength(MAX_ADVERTISED, `must list at most ${MAX_ADVERTISED} chains`),
);
const head = { v: v.literal(1), from: nodeId, to: nodeId, nonce };
const Request = v.variant("op", [
  v.object({ ...head, dir: v.literal("req"), op: v.literal("advert"), chains: ChainList }),
  v.object({ ...head, dir: v.literal("req"), op: v.literal("get"), name: certName }),
]);
const Response = v.variant("op", [
  v.object({ ...head, dir: v.literal("res"), op: v.literal("advert"), chains: ChainList }),
  v.object({
    ...head,
    dir: v.literal("res"),
    op: v.literal("get"),
    pem: v.nullable(v.pipe(v.string(), v.maxLength(MAX_CHAIN_BYTES, `must be a PEM of at most ${MAX_CHAIN_BYTES} characters`))),
  }),
]);
type Req = v.InferOutput<typeof Request>;
type Res = v.InferOutput<typeof Response>;
type Advertised = v.InferOutput<typeof ChainList>[number];
const Envelope = v.object({ k: v.pipe(v.string(), v.maxLength(255)), s: v.pipe(v.string(), v.maxLength(1024)), m: v.string() });

/** A frame: a 4-byte length, then the envelope `{ k: key id, s: signature (base64), m: the signed JSON text }`. */
function frame(auth: ExchangeAuth, to: string, body: Req | Res): Buffer {
  const m = JSON.stringify(body);
  const { keyId, sig } = auth.sign(to, Buffer.from(m, "utf8"));
  const payload = Buffer.from(JSON.stringify({ k: keyId, s: sig.toString("base64"), m }), "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(payload.length);
  return Buffer.concat([len, payload]);
}

/** Checks a frame's payload: envelope, then the signature by the claimed sender, then the schema. Throws with what is wrong. */
function unframe<S extends typeof Request | typeof Response>(auth: ExchangeAuth, payload: Buffer, schema: S): v.InferOutput<S> {
  let env: unknown;
  try {
    env = JSON.parse(payload.toString("utf8"));
  } catch {
    throw new Error("the frame is not JSON");
  }
  const e = check(Envelope, env);
  if (!e.ok) throw new Error(`the frame is not an exchange envelope: ${formatIssues(e.issues).slice(0, 2).join("; ")}`);
  let body: unknown;
  try {
    body = JSON.parse(e.value.m);
  } catch {
    throw new Error("the signed message is not JSON");
  }
  const from = typeof body === "object" && body !== null ? (body as { from?: unknown }).from : undefined;
  if (typeof from !== "string") throw new Error("the signed message names no sender");
  if (!auth.verify(from, e.value.k, Buffer.from(e.value.m, "utf8"), Buffer.from(e.value.s, "base64")))
    throw new Error(`bad signature for sender ${JSON.stringify(from.slice(0, 64))} (key ${JSON.stringify(e.value.k.slice(0, 16))})`);
  const r = check(schema, body);
  if (!r.ok) throw new Error(`the message does not match its schema: ${formatIssues(r.issues).slice(0, 3).join("; ")}`);
  return r.value as v.InferOutput<S>;
}

/** Reads one frame of at most `max` bytes from the socket, then resolves; rejects on a larger one, an early end or an error. */
function readFrame(sock: Socket, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: Error | null, out?: Buffer) => {
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("error", onError);
      sock.off("close", onEnd);
      if (err) reject(err);
      else resolve(out!);
    };
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len > max) return done(new Error(`a frame of ${len} bytes, more than the ${max} allowed`));
        if (buf.length >= 4 + len) return done(null, buf.subarray(4, 4 + len));
      }
      if (buf.length > max + 4) done(new Error(`more than the ${max} bytes allowed`));
    };
    const onEnd = () => done(new Error("the connection ended before a whole frame"));
    const onError = (e: Error) => done(e);
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.on("close", onEnd);
    sock.on("error", onError);
  });
}

export interface ExchangePeer {
  id: string;
  address: string;
  port: number;
}

export interface ChainExchangeOptions {
  selfId: string;
  listenAddress: string;
  /** The peer port number (TCP here). 0: any (tests). */
  listenPort: number;
  /** The LB peers to exchange with (not the witness: it serves no HTTPS). Read at each round. */
  peers: () => readonly ExchangePeer[];
  store: Pick<AcmeStore, "chains" | "chain" | "offer" | "onChange">;
  auth: ExchangeAuth;
  log: Logger;
  timeoutMs?: number;
  advertIntervalMs?: number;
  /** A failed durable write in the store (fail-stop: the process ends). */
  fatal: (message: string, fields: Record<string, unknown>) => void;
}

export interface ChainExchange {
  port: number;
  /** Adverts to every peer now (boot, a new chain, a test). */
  advertAll(): void;
  /** Resolves when no exchange is running or queued (tests). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export async function startChainExchange(o: ChainExchangeOptions): Promise<ChainExchange> {
  const timeoutMs = o.timeoutMs ?? EXCHANGE_DEFAULTS.timeoutMs;
  const log = o.log;
  const mine = (): Advertised[] =>
    o.store
      .chains()
      .slice(0, MAX_ADVERTISED)
      .map((c) => ({ name: c.name, sha256: c.sha256, notAfterMs: c.notAfterMs }));
  const newer = (c: Advertised) => {
    const have = o.store.chain(c.name);
    return !have || (have.sha256 !== c.sha256 && c.notAfterMs > have.notAfterMs);
  };
  /** Per name, the sha256 of a chain the store refused: not fetched again (bounded by MAX_ADVERTISED names). */
  const refused = new Map<string, string>();
  let closed = false;

  // ---- server
  let inbound = 0;
  const server: Server = createServer((sock) => {
    if (inbound >= MAX_INBOUND || closed) return sock.destroy();
    inbound++;
    sock.setNoDelay(true);
    const timer = setTimeout(() => sock.destroy(), timeoutMs);
    sock.on("error", () => undefined);
    sock.on("close", () => (clearTimeout(timer), inbound--));
    readFrame(sock, MAX_REQUEST_BYTES)
      .then((payload) => {
        const req = unframe(o.auth, payload, Request);
        if (req.to !== o.selfId) throw new Error(`addressed to ${req.to}, not this node`);
        const peer = o.peers().find((p) => p.id === req.from);
        if (!peer) throw new Error(`${req.from} is not an LB peer of this node`);
        const base = { v: 1 as const, dir: "res" as const, from: o.selfId, to: req.from, nonce: req.nonce };
        if (req.op === "advert") {
          sock.end(frame(o.auth, req.from, { ...base, op: "advert", chains: mine() }));
          // The sender holds something newer: fetch it (after this answer, in that peer's queue).
          if (req.chains.some((c) => newer(c) && refused.get(c.name) !== c.sha256)) schedule(peer);
        } else {
          sock.end(frame(o.auth, req.from, { ...base, op: "get", pem: o.store.chain(req.name)?.pem ?? null }));
        }
      })
      .catch((e: Error) => {
        log.warn("refused an ACME chain exchange request", { from: sock.remoteAddress, error: e.message });
        sock.destroy();
      });
  });
  server.maxConnections = MAX_INBOUND * 2;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.listenPort, o.listenAddress, () => (server.off("error", reject), resolve()));
  });
  server.on("error", (e) => log.warn("ACME chain exchange socket error", { error: e.message }));

  // ---- client
  async function request(peer: ExchangePeer, body: { op: "advert"; chains: Advertised[] } | { op: "get"; name: string }): Promise<Res> {
    const n = randomBytes(16).toString("hex");
    const req = { v: 1 as const, dir: "req" as const, from: o.selfId, to: peer.id, nonce: n, ...body } as Req;
    const sock = connect({ host: peer.address, port: peer.port });
    sock.setNoDelay(true);
    const timer = setTimeout(() => sock.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    try {
      sock.write(frame(o.auth, peer.id, req));
      const res = unframe(o.auth, await readFrame(sock, MAX_RESPONSE_BYTES), Response);
      if (res.from !== peer.id || res.to !== o.selfId || res.nonce !== n || res.op !== req.op)
        throw new Error("the answer is not for this request (sender, receiver, nonce or operation differ)");
      return res;
    } finally {
      clearTimeout(timer);
      sock.destroy();
    }
  }

  async function sync(peer: ExchangePeer): Promise<void> {
    const res = await request(peer, { op: "advert", chains: mine() });
    if (res.op !== "advert") return;
    for (const c of res.chains) {
      if (closed || !newer(c) || refused.get(c.name) === c.sha256) continue;
      const got = await request(peer, { op: "get", name: c.name });
      if (got.op !== "get" || got.pem === null) continue;
      let r: ReturnType<AcmeStore["offer"]>;
      try {
        r = o.store.offer(c.name, got.pem, peer.id);
      } catch (e) {
        o.fatal("cannot write an ACME chain to the state dir", { name: c.name, error: (e as Error).message });
        return;
      }
      if (r.accepted) {
        refused.delete(c.name);
        log.info("took a newer ACME certificate chain from a peer", { name: c.name, peer: peer.id, notAfter: new Date(c.notAfterMs).toISOString() });
      } else if (!r.reason.endsWith("already held")) {
        if (refused.size >= MAX_ADVERTISED) refused.clear();
        refused.set(c.name, c.sha256);
        log.warn("refused an ACME certificate chain from a peer", { name: c.name, peer: peer.id, reason: r.reason });
      }
    }
  }

  /** One exchange at a time per peer; a request while one runs makes exactly one more run after it. */
  const queue = new Map<string, { running: Promise<void>; again: boolean }>();
  function schedule(peer: ExchangePeer): void {
    if (closed) return;
    const q = queue.get(peer.id);
    if (q) {
      q.again = true;
      return;
    }
    const entry = { running: Promise.resolve(), again: false };
    queue.set(peer.id, entry);
    entry.running = (async () => {
      for (let round = 0; round < 2 && !closed; round++) {
        entry.again = false;
        try {
          await sync(peer);
        } catch (e) {
          log.debug("ACME chain exchange with a peer failed; the next advert retries", { peer: peer.id, error: (e as Error).message });
        }
        if (!entry.again) break;
      }
      queue.delete(peer.id);
    })();
  }
  const advertAll = () => {
    for (const p of o.peers()) if (p.id !== o.selfId) schedule(p);
  };

  o.store.onChange(() => advertAll());
  const interval = setInterval(advertAll, o.advertIntervalMs ?? EXCHANGE_DEFAULTS.advertIntervalMs);
  interval.unref();
  advertAll();

  return {
    port: (server.address() as { port: number }).port,
    advertAll,
    async idle() {
      for (let i = 0; i < 100 && queue.size > 0; i++) await Promise.all([...queue.values()].map((q) => q.running));
    },
    async close() {
      closed = true;
      clearInterval(interval);
      await Promise.all([...queue.values()].map((q) => q.running));
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
