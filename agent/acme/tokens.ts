/**
 * ACME challenge tokens between peers (issue 15). The leader places the order, so the CA's
 * validation requests arrive at the leader (it holds the Reserved IP); but a failover in the middle
 * of a validation moves the IP, and the CA's next request meets another LB. So the leader sends each
 * challenge it gets to every peer as an `acme-token` side message (agent/messages.ts: one datagram,
 * authenticated by the transport), and every LB's responder answers it. Let's Encrypt allows 5 failed
 * validations per hostname per hour: one lost to a failover matters.
 *
 * Datagrams may be lost: the leader sends each token ACME_TOKEN_SENDS times, spaced by the caller's
 * repeat (the message is idempotent: putToken replaces the same token).
 */
import type { AcmeTokenMessage, SideMessage } from "../messages.js";
import type { AcmeStore } from "./store.js";

/** How far ahead of our own clock a received token may expire: a validation takes minutes, not hours. */
export const ACME_TOKEN_MAX_TTL_MS = 60 * 60 * 1000;
/** How many times the leader sends one token (UDP may drop one). */
export const ACME_TOKEN_SENDS = 3;

export interface ChallengeToken {
  token: string;
  keyAuthorization: string;
  /** Wall clock, ms since the epoch. */
  expiresAtMs: number;
}

/**
 * Sends one token to every peer (the AcmeManager's onToken hook calls this on the leader). `send` is
 * the transport's; the transport stamps `from` from its own id, so the body's is a placeholder.
 */
export function broadcastToken(send: (to: string, msg: SideMessage) => void, peerIds: readonly string[], t: ChallengeToken, selfId: string): void {
  const msg: AcmeTokenMessage = { kind: "acme-token", from: selfId, token: t.token, keyAuthorization: t.keyAuthorization, expiresAtMs: t.expiresAtMs };
  for (const id of peerIds) if (id !== selfId) send(id, msg);
}

/**
 * A token a peer sent (already authenticated and parsed): into the store, with its expiry capped at
 * ACME_TOKEN_MAX_TTL_MS from our clock. One already expired here is refused (clocks differ; a token
 * that old is of no use).
 */
export function receiveToken(
  store: Pick<AcmeStore, "putToken">,
  msg: AcmeTokenMessage,
  nowMs: number,
): { accepted: true } | { accepted: false; reason: string } {
  if (msg.expiresAtMs <= nowMs) return { accepted: false, reason: `acme-token from ${msg.from}: expired ${nowMs - msg.expiresAtMs} ms ago by our clock` };
  store.putToken(msg.token, msg.keyAuthorization, Math.min(msg.expiresAtMs, nowMs + ACME_TOKEN_MAX_TTL_MS));
  return { accepted: true };
}
