/**
 * ACME challenge tokens between peers (issue 15): the `acme-token` side message, its bounds, its
 * way through the real transport to the store (never to the election core), and what an older
 * build does with it (drops it as `unknown-kind`, harmlessly).
 */
import { afterEach, describe, expect, it } from "vitest";
import { ACME_TOKEN_MAX_TTL_MS, broadcastToken, receiveToken } from "../../agent/acme/tokens.js";
import { AcmeStore } from "../../agent/acme/store.js";
import type { PeerMessage } from "../../agent/election/types.js";
import { silentLogger } from "../../agent/log.js";
import { createMetrics } from "../../agent/metrics.js";
import { MAX_ACME_TOKEN_CHARS, parsePeerMessage, parseSideMessage, type SideMessage } from "../../agent/messages.js";
import { createPeerTransport, type PeerTransport } from "../../agent/transport.js";
import { parsePrivateKey } from "../../agent/identity.js";
import { newIdentity } from "../../testbed/identity.js";

const TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const THUMB = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";
const good = { kind: "acme-token", token: TOKEN, keyAuthorization: `${TOKEN}.${THUMB}`, expiresAtMs: 1_900_000_000_000 };
/** Each transport's own identity (agent/identity.ts), and its public key as peers list it. */
const identity = () => {
  const t = newIdentity();
  return { own: parsePrivateKey(t.privateKeyPem, "test"), publicKey: t.publicKey };
};
const open: PeerTransport[] = [];
afterEach(async () => {
  for (const t of open.splice(0)) await t.close();
});
const settle = () => new Promise((r) => setTimeout(r, 100));
const store = (nowMs: () => number) => new AcmeStore({ stateDir: "/nonexistent", publicKeyFor: () => undefined, domainsFor: () => undefined, nowMs });

describe("the acme-token side message", () => {
  it("accepts a well-formed token, with the sender from the authenticated header", () => {
    expect(parseSideMessage({ ...good, from: "mallory" }, "lb-1")).toEqual({ ok: true, message: { ...good, from: "lb-1" } });
  });

  it("refuses tokens over the bound or outside base64url, a key authorization for another token or too long, a missing expiry", () => {
    const refused = (body: Record<string, unknown>) => {
      const r = parseSideMessage(body, "lb-1");
      expect(r && !r.ok, JSON.stringify(r)).toBe(true);
      return r && !r.ok ? r.problems.join("; ") : "";
    };
    const long = "a".repeat(MAX_ACME_TOKEN_CHARS + 1);
    expect(refused({ ...good, token: long, keyAuthorization: `${long}.${THUMB}` })).toContain(`16 to ${MAX_ACME_TOKEN_CHARS} base64url characters`);
    expect(refused({ ...good, token: "abc/def+ghijklmnop" })).toContain("token: must be an ACME token");
    expect(refused({ ...good, keyAuthorization: `${"b".repeat(43)}.${THUMB}` })).toContain("must start with the token and a dot");
    expect(refused({ ...good, keyAuthorization: `${TOKEN}.${THUMB}x` })).toContain("keyAuthorization: must be an ACME key authorization");
    const { expiresAtMs: _, ...noExpiry } = good;
    expect(refused(noExpiry)).toContain("expiresAtMs");
    // The longest allowed token fits one datagram with room to spare.
    const max = "a".repeat(MAX_ACME_TOKEN_CHARS);
    expect(parseSideMessage({ ...good, token: max, keyAuthorization: `${max}.${THUMB}` }, "lb-1")?.ok).toBe(true);
  });

  it("is not an election message: an older build's parse drops it as unknown-kind", () => {
    expect(parsePeerMessage(good, "lb-1")).toMatchObject({ ok: false, reason: "unknown-kind", kind: '"acme-token"' });
    expect(parseSideMessage({ kind: "heartbeat" }, "lb-1")).toBeNull();
  });
});

async function pair(withHandler: boolean) {
  const [ia, ib] = [identity(), identity()];
  const core: PeerMessage[] = [];
  const side: Array<{ from: string; msg: SideMessage }> = [];
  const metrics = createMetrics();
  const b = await createPeerTransport({
    selfId: "b",
    listenAddress: "127.0.0.1",
    listenPort: 0,
    members: [],
    keys: { current: ib.own, previous: null },
    boot: 1,
    onMessage: (_f, m) => core.push(m),
    ...(withHandler ? { onSideMessage: (from: string, msg: SideMessage) => side.push({ from, msg }) } : {}),
    log: silentLogger,
    metrics,
  });
  const a = await createPeerTransport({
    selfId: "a",
    listenAddress: "127.0.0.1",
    listenPort: 0,
    members: [{ id: "b", address: "127.0.0.1", port: b.port, publicKey: ib.publicKey }],
    keys: { current: ia.own, previous: null },
    boot: 1,
    onMessage: () => undefined,
    log: silentLogger,
  });
  b.updateMembers([{ id: "a", address: "127.0.0.1", port: a.port, publicKey: ia.publicKey }]);
  open.push(a, b);
  const dropped = async (reason: string) => (await metrics.peerDropped.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
  return { a, b, core, side, dropped };
}

describe("tokens over the real transport", () => {
  it("the leader's broadcast reaches every peer's store, not the election core; the responder then answers it", async () => {
    const { a, core, side } = await pair(true);
    const now = Date.now();
    broadcastToken((to, m) => a.send(to, m), ["a", "b"], { token: TOKEN, keyAuthorization: `${TOKEN}.${THUMB}`, expiresAtMs: now + 60_000 }, "a");
    await settle();
    expect(core).toEqual([]);
    expect(side).toEqual([
      { from: "a", msg: { kind: "acme-token", from: "a", token: TOKEN, keyAuthorization: `${TOKEN}.${THUMB}`, expiresAtMs: now + 60_000 } },
    ]);
    const s = store(() => now);
    expect(receiveToken(s, side[0].msg as Parameters<typeof receiveToken>[1], now)).toEqual({ accepted: true });
    expect(s.keyAuthorization(TOKEN)).toBe(`${TOKEN}.${THUMB}`);
  });

  it("a build without a handler drops it as unknown-kind and counts it; a malformed one is dropped as schema; the core sees neither", async () => {
    const plain = await pair(false);
    plain.a.send("b", { ...good, from: "a" } as SideMessage);
    await settle();
    expect(await plain.dropped("unknown-kind")).toBe(1);
    expect(plain.core).toEqual([]);
    const handled = await pair(true);
    handled.a.send("b", { ...good, from: "a", token: "short" } as SideMessage);
    await settle();
    expect(await handled.dropped("schema")).toBe(1);
    expect(handled.side).toEqual([]);
    expect(handled.core).toEqual([]);
  });
});

describe("receiveToken", () => {
  it("caps the expiry at an hour from our clock and refuses a token already expired here", () => {
    let now = 1_800_000_000_000;
    const s = store(() => now);
    const msg = {
      kind: "acme-token" as const,
      from: "lb-1",
      token: TOKEN,
      keyAuthorization: `${TOKEN}.${THUMB}`,
      expiresAtMs: now + 10 * ACME_TOKEN_MAX_TTL_MS,
    };
    expect(receiveToken(s, msg, now)).toEqual({ accepted: true });
    expect(s.tokens()).toEqual([{ token: TOKEN, keyAuthorization: `${TOKEN}.${THUMB}`, expiresAtMs: now + ACME_TOKEN_MAX_TTL_MS }]);
    now += ACME_TOKEN_MAX_TTL_MS;
    expect(s.keyAuthorization(TOKEN)).toBeUndefined();
    const stale = receiveToken(s, { ...msg, expiresAtMs: now - 5 }, now);
    expect(stale).toEqual({ accepted: false, reason: "acme-token from lb-1: expired 5 ms ago by our clock" });
    expect(s.tokens()).toEqual([]);
  });
});
