/**
 * The DigitalOcean reserved-IP client: read, and assign-and-wait, within the API's manners.
 *
 * - One assign in flight at a time; a second caller gets the first one's promise.
 * - Every request goes through `call`, the one place that talks to the API: it takes a token from
 *   the process's request budget (api-budget.ts) first, so no path can outrun it.
 * - 422 ("pending event", the IP `locked`): re-read the IP (done if it is already ours), then retry.
 *   429, 5xx, timeouts, network errors: retry after the wait api-wait.ts gives (at least 1 s,
 *   `retry-after` or `ratelimit-reset` honoured, at most 10 s while the IP is unserved).
 *   401/403/404: fail at once, they will not heal by retrying.
 * - Answers are bounded (1 MiB, counted while streaming; the whole body within the request
 *   deadline, a stalled body is a network error) and their shapes validated: a 200 that is not what
 *   the API documents is a precise error, not a TypeError.
 * - The action is followed with a schedule that starts fast and backs off; a 404 on the action just
 *   after the POST means "not queryable yet": read the IP instead.
 * - Everything runs under one deadline and the caller's AbortSignal (leadership lost ⇒ stop at once).
 * - The token comes from `getToken()` on every request (rotation by reload) and is never in an error.
 */
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import * as v from "valibot";
import { TokenBucket } from "./api-budget.js";
import { apiWaitMs } from "./api-wait.js";
import { HttpGetError, httpRequest, type HttpResult } from "./http-get.js";
import { check, formatIssues, printable } from "./schema.js";

/** One request budget per process, whatever number of clients is made (api-budget.ts). */
const processBudget = new TokenBucket();

/** The largest API answer read; the reserved-IP answers are about 2 KiB. */
export const MAX_API_BODY_BYTES = 1024 * 1024;

export class DoApiError extends Error {
  constructor(
    readonly status: number,
    readonly id: string,
    message: string,
    readonly route: string,
    /** `retry-after` and `ratelimit-reset` of the answer, for the wait policy. */
    readonly headers: { retryAfter: string | null; ratelimitReset: string | null } = { retryAfter: null, ratelimitReset: null },
  ) {
    super(`${route}: ${status ? `HTTP ${status} ${id}: ` : ""}${message}`);
  }
  get retryable(): boolean {
    return this.status === 0 || this.status === 422 || this.status === 429 || this.status >= 500;
  }
}

export interface RequestInfo {
  method: string;
  route: string;
  status: number;
  ms: number;
}

export interface ReservedIpClient {
  getReservedIp(ip: string, signal?: AbortSignal): Promise<{ dropletId: number | null; locked: boolean }>;
  assign(ip: string, dropletId: number, opts: AssignOptions): Promise<{ alreadyAssigned: boolean; actionId: number | null; requests: number }>;
}

export interface AssignOptions {
  deadlineMs: number;
  signal?: AbortSignal;
  /** The IP is not served (metadata says it is not here): no retry wait longer than 10 s. */
  unserved?: boolean;
}

// The shapes fipd reads (the rest of each answer is ignored).
const dropletIdSchema = v.pipe(v.number(), v.integer(), v.minValue(1));
const reservedIpAnswer = v.object({
  reserved_ip: v.object({ droplet: v.nullish(v.object({ id: dropletIdSchema })), locked: v.boolean() }),
});
const actionAnswer = v.object({
  action: v.object({ id: dropletIdSchema, status: v.picklist(["in-progress", "completed", "errored"]) }),
});
const errorAnswer = v.object({ id: v.optional(v.string()), message: v.optional(v.string()) });

const defaultSleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error("aborted"));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason ?? new Error("aborted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** Action polls after the POST: fast first (a fast action costs little wait), then every 2 s. */
const POLL_SCHEDULE_MS = [250, 500, 1000, 1500, 2000];

export function createReservedIpClient(o: {
  baseUrl: string;
  getToken: () => string;
  requestTimeoutMs: number;
  onRequest?: (i: RequestInfo) => void;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
  /** Default: the process's one budget, shared by every client in the process. Tests give their own. */
  budget?: TokenBucket;
  /** Wall clock (epoch ms), for `ratelimit-reset` and HTTP dates. */
  wallNow?: () => number;
  maxBodyBytes?: number;
}): ReservedIpClient {
  const base = o.baseUrl.replace(/\/+$/, "");
  const budget = o.budget ?? processBudget;
  const wallNow = o.wallNow ?? Date.now;
  // Keep-alive: a failover makes several requests within seconds; one TLS handshake serves them.
  // Idle sockets close after 4 s, before any server's idle timeout can race a reuse.
  const agent = base.startsWith("https:")
    ? new HttpsAgent({ keepAlive: true, maxSockets: 2, timeout: 4_000 })
    : new HttpAgent({ keepAlive: true, maxSockets: 2, timeout: 4_000 });
  const sleep = o.sleep ?? defaultSleep;
  const random = o.random ?? Math.random;
  let inFlight: Promise<{ alreadyAssigned: boolean; actionId: number | null; requests: number }> | null = null;

  async function call<S extends v.GenericSchema>(
    method: string,
    path: string,
    route: string,
    body: unknown,
    schema: S,
    signal?: AbortSignal,
  ): Promise<v.InferOutput<S>> {
    const what = `${method} ${route}`;
    // The budget first: a request that has to wait for a token waits here, abortably.
    const budgetWaitMs = budget.reserve();
    if (budgetWaitMs > 0) await sleep(budgetWaitMs, signal);
    const started = performance.now();
    let res: HttpResult;
    try {
      res = await httpRequest(base + path, {
        method,
        headers: { authorization: `Bearer ${o.getToken()}`, "content-type": "application/json", accept: "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        timeoutMs: o.requestTimeoutMs,
        maxBytes: o.maxBodyBytes ?? MAX_API_BODY_BYTES,
        signal,
        agent,
      });
    } catch (e) {
      o.onRequest?.({ method, route, status: 0, ms: performance.now() - started });
      if (signal?.aborted) throw signal.reason ?? e;
      // Only the short reason (a code, "no answer within N ms"): never a header or the token.
      throw new DoApiError(0, "network", e instanceof HttpGetError ? e.reason : printable((e as Error).message), what);
    }
    o.onRequest?.({ method, route, status: res.status, ms: performance.now() - started });
    let json: unknown = undefined;
    try {
      json = res.body ? JSON.parse(res.body) : undefined;
    } catch {
      /* not JSON: undefined */
    }
    if (res.status < 200 || res.status > 299) {
      const err = v.safeParse(errorAnswer, json);
      const id = err.success && err.output.id ? printable(err.output.id, 60) : "error";
      const message = err.success && err.output.message ? err.output.message : res.body || "no body";
      throw new DoApiError(res.status, id, printable(message, 200), what, {
        retryAfter: res.header("retry-after"),
        ratelimitReset: res.header("ratelimit-reset"),
      });
    }
    if (json === undefined)
      throw new DoApiError(res.status, "bad_answer", `expected a JSON body, got ${res.body ? "text that is not JSON" : "an empty body"}`, what);
    const r = check(schema, json);
    if (!r.ok) throw new DoApiError(res.status, "bad_answer", `unexpected answer: ${formatIssues(r.issues).slice(0, 3).join("; ")}`, what);
    return r.value;
  }

  async function getReservedIp(ip: string, signal?: AbortSignal) {
    const json = await call("GET", `/v2/reserved_ips/${ip}`, "/v2/reserved_ips/{ip}", undefined, reservedIpAnswer, signal);
    return { dropletId: json.reserved_ip.droplet?.id ?? null, locked: json.reserved_ip.locked };
  }

  async function assignOnce(ip: string, dropletId: number, opts: AssignOptions) {
    const deadline = performance.now() + opts.deadlineMs;
    const signal = opts.signal;
    let requests = 0;
    let attempt = 0;
    const remaining = () => deadline - performance.now();
    const backoff = async (err: DoApiError) => {
      attempt++;
      const wait = apiWaitMs({ status: err.status, headers: err.headers, attempt, nowMs: wallNow(), unserved: opts.unserved ?? false, random: random() });
      if (wait >= remaining()) throw new Error(`assign did not complete within ${opts.deadlineMs} ms (last error: ${err.message})`);
      await sleep(wait, signal);
    };
    const mine = async (): Promise<boolean> => {
      requests++;
      const cur = await getReservedIp(ip, signal);
      return cur.dropletId === dropletId && !cur.locked;
    };

    for (;;) {
      if (remaining() <= 0) throw new Error(`assign did not complete within ${opts.deadlineMs} ms`);
      let actionId: number;
      try {
        requests++;
        const json = await call(
          "POST",
          `/v2/reserved_ips/${ip}/actions`,
          "/v2/reserved_ips/{ip}/actions",
          { type: "assign", droplet_id: dropletId },
          actionAnswer,
          signal,
        );
        actionId = json.action.id;
      } catch (e) {
        if (!(e instanceof DoApiError)) throw e;
        if (!e.retryable) throw e;
        if (e.status === 422) {
          // Busy: maybe it is ours already (another assign of ours won), else wait it out.
          try {
            if (await mine()) return { alreadyAssigned: true, actionId: null, requests };
          } catch (e2) {
            if (e2 instanceof DoApiError && !e2.retryable) throw e2;
          }
        }
        await backoff(e);
        continue;
      }
      // Follow the action.
      for (let i = 0; ; i++) {
        await sleep(Math.min(POLL_SCHEDULE_MS[Math.min(i, POLL_SCHEDULE_MS.length - 1)], Math.max(0, remaining())), signal);
        if (remaining() <= 0) throw new Error(`assign did not complete within ${opts.deadlineMs} ms (action ${actionId} still in progress)`);
        try {
          requests++;
          const json = await call("GET", `/v2/reserved_ips/${ip}/actions/${actionId}`, "/v2/reserved_ips/{ip}/actions/{id}", undefined, actionAnswer, signal);
          if (json.action.status === "completed") break;
          if (json.action.status === "errored") throw new DoApiError(500, "action_errored", `action ${actionId} errored`, "assign");
        } catch (e) {
          if (!(e instanceof DoApiError)) throw e;
          if (e.status === 404) {
            // Not queryable yet (or never, for some IPs): the IP itself tells us.
            if (await mine()) return { alreadyAssigned: false, actionId, requests };
            continue;
          }
          if (e.id === "action_errored") break; // re-POST below after the confirm says no
          if (!e.retryable) throw e;
          await backoff(e);
        }
      }
      // Confirm through the API (the keeper also confirms through metadata).
      try {
        if (await mine()) return { alreadyAssigned: false, actionId, requests };
      } catch (e) {
        if (e instanceof DoApiError && !e.retryable) throw e;
        return { alreadyAssigned: false, actionId, requests }; // the action completed; a failed read does not undo it
      }
      await backoff(new DoApiError(0, "not_assigned", "the action finished but the IP is not on this droplet", "assign"));
    }
  }

  return {
    getReservedIp,
    assign(ip, dropletId, opts) {
      if (inFlight) return inFlight;
      inFlight = assignOnce(ip, dropletId, opts).finally(() => {
        inFlight = null;
      });
      return inFlight;
    },
  };
}
