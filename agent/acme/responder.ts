/**
 * The HTTP-01 responder: answers `GET /.well-known/acme-challenge/<token>` with the token's key
 * authorization from the store. It lives in fipd (not in a companion process) because fipd already
 * holds the tokens, which reach it from the ACME child on the leader and from the leader's peer
 * messages on the others, so a validation request that lands on any LB after a failover still finds
 * its answer.
 *
 * It listens on 127.0.0.1 only: HAProxy's http frontends route the challenge path to it (backend
 * be_acme). Still, what it serves comes from the internet through HAProxy, so every request is
 * bounded: GET or HEAD only, a short path, small headers, a header and request timeout, a cap on
 * connections. It never echoes input and answers a token it does not know with 404.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { ACME_CHALLENGE_PREFIX, LOOPBACK_IPV4 } from "../ports.js";
import { ACME_TOKEN } from "./store.js";

/** The prefix, a 256-character token, and room for a query HAProxy passed along. */
export const MAX_PATH_CHARS = ACME_CHALLENGE_PREFIX.length + 256 + 64;
/** Enough for the headers HAProxy and a CA's validator send. */
export const MAX_HEADER_BYTES = 8 * 1024;
export const HEADERS_TIMEOUT_MS = 5_000;
export const REQUEST_TIMEOUT_MS = 10_000;
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
export const MAX_CONNECTIONS = 256;

export interface TokenSource {
  keyAuthorization(token: string): string | undefined;
}

export interface AcmeResponder {
  port: number;
  close(): Promise<void>;
}

function answer(res: ServerResponse, status: number, body: string, head: boolean, extra: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", "content-length": Buffer.byteLength(body), ...extra });
  res.end(head ? undefined : body);
}

export function handleChallenge(store: TokenSource, req: IncomingMessage, res: ServerResponse, onServed?: (token: string) => void): void {
  const head = req.method === "HEAD";
  if (req.method !== "GET" && !head) return answer(res, 405, "method not allowed: GET only\n", false, { allow: "GET, HEAD" });
  const url = req.url ?? "";
  if (url.length > MAX_PATH_CHARS) return answer(res, 414, "path too long\n", head);
  const path = url.split("?")[0];
  if (!path.startsWith(ACME_CHALLENGE_PREFIX)) return answer(res, 404, "not found\n", head);
  const token = path.slice(ACME_CHALLENGE_PREFIX.length);
  const ka = ACME_TOKEN.test(token) ? store.keyAuthorization(token) : undefined;
  if (ka === undefined) return answer(res, 404, "no such challenge token\n", head);
  onServed?.(token);
  answer(res, 200, ka, head);
}

/** Starts the responder on 127.0.0.1:`port` (0: any free port, for tests). */
export async function startAcmeResponder(o: {
  port: number;
  store: TokenSource;
  address?: string;
  onServed?: (token: string) => void;
}): Promise<AcmeResponder> {
  const server = createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: HEADERS_TIMEOUT_MS,
      // Node checks the two timeouts only this often (default 30 s).
      connectionsCheckingInterval: 1_000,
      requestTimeout: REQUEST_TIMEOUT_MS,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    },
    (req, res) => {
      handleChallenge(o.store, req, res, o.onServed);
      // A body is never wanted: drop it rather than buffer it.
      req.resume();
    },
  );
  server.maxConnections = MAX_CONNECTIONS;
  server.maxRequestsPerSocket = 100;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.address ?? LOOPBACK_IPV4, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr ? addr.port : o.port,
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
