/**
 * Bounded HTTP requests over node:http and node:https, for everything fipd asks over HTTP: HAProxy's
 * health endpoint (every 100 ms), the metadata service and the DigitalOcean API. Global fetch would
 * load undici (about 12 MB more resident memory per agent) and buffer whatever a server sends.
 *
 * Every exchange is bounded:
 *  - in time: one deadline covers connect, headers and the whole body, so a body that stalls after
 *    the headers fails like any timeout ("no answer within N ms");
 *  - in size: the body is counted while it streams; past `maxBytes` the connection is destroyed at
 *    once (nothing more is read or kept) and the request fails ("body larger than N bytes"), or, with
 *    `overflow: "truncate"` (the health probe only looks at the status), ends with what it has.
 */
import { request as httpRequestFn, type Agent as HttpAgent } from "node:http";
import { request as httpsRequestFn, type Agent as HttpsAgent } from "node:https";

export interface GetResult {
  status: number;
  body: string;
}

export interface HttpResult extends GetResult {
  /** Response headers by lower-case name (first value of a repeated header). */
  header(name: string): string | null;
}

/** An error with a short reason: "no answer within N ms", "body larger than N bytes", or the socket error code (ECONNREFUSED). */
export class HttpGetError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

export const MAX_GET_BODY_BYTES = 64 * 1024;

export interface HttpRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  maxBytes: number;
  overflow?: "error" | "truncate";
  signal?: AbortSignal;
  /** A keep-alive agent (the API); default: a fresh connection closed after the answer. */
  agent?: HttpAgent | HttpsAgent;
}

export function httpRequest(url: string, o: HttpRequestOptions): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) return reject(o.signal.reason ?? new Error("aborted"));
    let done = false;
    const finish = (err: unknown, r?: HttpResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", onAbort);
      if (err) {
        req.destroy();
        reject(err);
      } else resolve(r!);
    };
    const onAbort = () => finish(o.signal!.reason ?? new Error("aborted"));
    const https = url.startsWith("https:");
    const headers: Record<string, string> = { ...o.headers };
    if (!o.agent) headers.connection = "close";
    if (o.body !== undefined) headers["content-length"] = String(Buffer.byteLength(o.body));
    const options = { method: o.method ?? "GET", agent: o.agent ?? false, headers };
    const onResponse = (res: import("node:http").IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const result = (): HttpResult => ({
        status: res.statusCode ?? 0,
        body: Buffer.concat(chunks).toString("utf8"),
        header: (name) => {
          const h = res.headers[name.toLowerCase()];
          return h === undefined ? null : Array.isArray(h) ? (h[0] ?? null) : h;
        },
      });
      res.on("data", (chunk: Buffer) => {
        if (done) return;
        if (size + chunk.length > o.maxBytes) {
          if (o.overflow === "truncate") {
            chunks.push(chunk.subarray(0, o.maxBytes - size));
            size = o.maxBytes;
            finish(null, result());
            return res.destroy(); // nothing more is read
          }
          return finish(new HttpGetError(`body larger than ${o.maxBytes} bytes`)); // destroys the request and its socket
        }
        size += chunk.length;
        chunks.push(chunk);
      });
      res.on("end", () => finish(null, result()));
      res.on("error", (e: NodeJS.ErrnoException) => finish(new HttpGetError(e.code ?? e.message)));
      // A connection closed before the body ended ("aborted") is a network error, not a short body.
      res.on("aborted", () => finish(new HttpGetError("connection closed before the body ended")));
    };
    const req = https ? httpsRequestFn(url, options as never, onResponse) : httpRequestFn(url, options as never, onResponse);
    // One deadline for the whole exchange (connect, headers and body).
    const timer = setTimeout(() => finish(new HttpGetError(`no answer within ${o.timeoutMs} ms`)), o.timeoutMs);
    o.signal?.addEventListener("abort", onAbort, { once: true });
    req.on("error", (e: NodeJS.ErrnoException) => finish(new HttpGetError(e.code ?? e.message)));
    req.end(o.body);
  });
}

/**
 * A GET with a 64 KiB cap. `overflow: "truncate"` for the health probe (only its status counts);
 * the metadata client keeps the default and fails on a larger answer.
 */
export async function httpGet(url: string, timeoutMs: number, overflow: "error" | "truncate" = "truncate"): Promise<GetResult> {
  const r = await httpRequest(url, { timeoutMs, maxBytes: MAX_GET_BODY_BYTES, overflow });
  return { status: r.status, body: r.body };
}
