/**
 * A bounded HTTP GET over node:http, for what fipd polls all the time on the droplet itself: HAProxy's
 * health endpoint (every 100 ms) and the metadata service. Global fetch would load undici (about
 * 12 MB more resident memory per agent) and keep allocating per request; these endpoints are plain
 * HTTP on a local or link-local address, so a fresh connection per request is cheap and never stale.
 * The DigitalOcean API (HTTPS, rare writes) still uses fetch.
 */
import { request } from "node:http";

export interface GetResult {
  status: number;
  body: string;
}

/** An error with a short reason: "no answer within N ms", or the socket error code (ECONNREFUSED). */
export class HttpGetError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

const MAX_BODY = 64 * 1024;

export function httpGet(url: string, timeoutMs: number): Promise<GetResult> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err: HttpGetError | null, r?: GetResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        req.destroy();
        reject(err);
      } else resolve(r!);
    };
    const req = request(url, { method: "GET", agent: false, headers: { connection: "close" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        if (body.length < MAX_BODY) body += chunk;
      });
      res.on("end", () => finish(null, { status: res.statusCode ?? 0, body: body.slice(0, MAX_BODY) }));
      res.on("error", (e: NodeJS.ErrnoException) => finish(new HttpGetError(e.code ?? e.message)));
    });
    // One deadline for the whole exchange (connect, headers and body), like AbortSignal.timeout.
    const timer = setTimeout(() => finish(new HttpGetError(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on("error", (e: NodeJS.ErrnoException) => finish(new HttpGetError(e.code ?? e.message)));
    req.end();
  });
}
