/**
 * The DigitalOcean reserved-IP client: read, and assign-and-wait, within the API's manners.
 *
 * - One assign in flight at a time; a second caller gets the first one's promise.
 * - 422 ("pending event", the IP `locked`): re-read the IP (done if it is already ours), then retry
 *   with backoff. 429: wait `retry-after` (or until `ratelimit-reset`). 5xx, timeouts, network errors:
 *   jittered exponential backoff. 401/403/404: fail at once, they will not heal by retrying.
 * - The action is followed with a schedule that starts fast and backs off; a 404 on the action just
 *   after the POST means "not queryable yet": read the IP instead.
 * - Everything runs under one deadline and the caller's AbortSignal (leadership lost ⇒ stop at once).
 * - The token comes from `getToken()` on every request (rotation by reload) and is never in an error.
 */
export class DoApiError extends Error {
  constructor(
    readonly status: number,
    readonly id: string,
    message: string,
    readonly route: string,
    readonly retryAfterMs: number | null = null,
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
  assign(
    ip: string,
    dropletId: number,
    opts: { deadlineMs: number; signal?: AbortSignal },
  ): Promise<{ alreadyAssigned: boolean; actionId: number | null; requests: number }>;
}

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
}): ReservedIpClient {
  const base = o.baseUrl.replace(/\/+$/, "");
  const sleep = o.sleep ?? defaultSleep;
  const random = o.random ?? Math.random;
  let inFlight: Promise<{ alreadyAssigned: boolean; actionId: number | null; requests: number }> | null = null;

  async function call<T>(method: string, path: string, route: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; json: T }> {
    const started = performance.now();
    const signals = [AbortSignal.timeout(o.requestTimeoutMs), ...(signal ? [signal] : [])];
    let res: Response;
    try {
      res = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${o.getToken()}`, "content-type": "application/json", accept: "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.any(signals),
      });
    } catch (e) {
      o.onRequest?.({ method, route, status: 0, ms: performance.now() - started });
      if (signal?.aborted) throw signal.reason ?? e;
      const err = e as Error & { cause?: { code?: string } };
      throw new DoApiError(
        0,
        "network",
        err.name === "TimeoutError" ? `no answer within ${o.requestTimeoutMs} ms` : (err.cause?.code ?? err.message),
        `${method} ${route}`,
      );
    }
    const text = await res.text();
    o.onRequest?.({ method, route, status: res.status, ms: performance.now() - started });
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON: keep null */
    }
    if (!res.ok) {
      const err = (json ?? {}) as { id?: string; message?: string };
      let retryAfterMs: number | null = null;
      const ra = res.headers.get("retry-after");
      const reset = res.headers.get("ratelimit-reset");
      if (ra && Number.isFinite(Number(ra))) retryAfterMs = Number(ra) * 1000;
      else if (reset && Number.isFinite(Number(reset))) retryAfterMs = Math.max(0, Number(reset) * 1000 - Date.now());
      throw new DoApiError(res.status, err.id ?? "error", err.message ?? (text.slice(0, 200) || res.statusText), `${method} ${route}`, retryAfterMs);
    }
    return { status: res.status, json: json as T };
  }

  async function getReservedIp(ip: string, signal?: AbortSignal) {
    const { json } = await call<{ reserved_ip: { droplet: { id: number } | null; locked: boolean } }>(
      "GET",
      `/v2/reserved_ips/${ip}`,
      "/v2/reserved_ips/{ip}",
      undefined,
      signal,
    );
    return { dropletId: json.reserved_ip.droplet?.id ?? null, locked: json.reserved_ip.locked };
  }

  async function assignOnce(ip: string, dropletId: number, opts: { deadlineMs: number; signal?: AbortSignal }) {
    const deadline = performance.now() + opts.deadlineMs;
    const signal = opts.signal;
    let requests = 0;
    let attempt = 0;
    const remaining = () => deadline - performance.now();
    const backoff = async (err: DoApiError) => {
      attempt++;
      const expo = Math.min(8_000, 250 * 2 ** Math.min(attempt, 6));
      const wait = err.status === 429 && err.retryAfterMs !== null ? err.retryAfterMs : expo / 2 + random() * (expo / 2);
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
        const { json } = await call<{ action: { id: number } }>(
          "POST",
          `/v2/reserved_ips/${ip}/actions`,
          "/v2/reserved_ips/{ip}/actions",
          { type: "assign", droplet_id: dropletId },
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
          const { json } = await call<{ action: { status: string } }>(
            "GET",
            `/v2/reserved_ips/${ip}/actions/${actionId}`,
            "/v2/reserved_ips/{ip}/actions/{id}",
            undefined,
            signal,
          );
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
