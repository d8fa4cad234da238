/**
 * How long to wait before the next DigitalOcean API request after a failed one. Pure: the caller
 * gives the answer (status and headers), the attempt number, the clock and whether the reserved IP
 * is unserved; the one rule for every retry of the API lives here.
 *
 * - Every wait is at least 1 s: `Retry-After: 0`, a negative or garbage value, or a `ratelimit-reset`
 *   already past (a droplet clock ahead of DigitalOcean's) once gave 0 ms and a 4,403-request storm.
 * - Exponential backoff 1/2/4/8 s, plus up to 25 % jitter, so nodes and retries do not line up.
 * - A 429 waits at least `Retry-After` (whole seconds or an HTTP date), or else until
 *   `ratelimit-reset` (epoch seconds): the token is shared by the whole account.
 * - But while the IP is unserved (this node leads and metadata says the IP is not here), no wait is
 *   longer than 10 s: a minute of outage costs more than six requests a minute. Otherwise at most 60 s
 *   (a hint from a hostile or broken server must not park the keeper).
 */
export const MIN_WAIT_MS = 1_000;
export const MAX_BACKOFF_MS = 8_000;
export const UNSERVED_MAX_WAIT_MS = 10_000;
export const MAX_WAIT_MS = 60_000;
export const JITTER = 0.25;

export interface WaitInput {
  /** HTTP status of the failed answer; 0 for a network error or timeout. */
  status: number;
  /** Response headers, by lower-case name (absent ones null or undefined). */
  headers?: { retryAfter?: string | null; ratelimitReset?: string | null };
  /** 1 for the first retry, 2 for the second, ... */
  attempt: number;
  /** Wall clock, epoch ms (ratelimit-reset and HTTP dates are wall-clock). */
  nowMs: number;
  unserved: boolean;
  /** A number in [0, 1) (Math.random in production). */
  random: number;
}

/** `Retry-After` in ms: delta seconds or an HTTP date; null if absent or not a valid value. */
export function retryAfterMs(value: string | null | undefined, nowMs: number): number | null {
  if (value === null || value === undefined) return null;
  const t = value.trim();
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t) * 1000;
  if (t.length > 64 || !/[a-z]/i.test(t)) return null;
  const at = Date.parse(t);
  return Number.isFinite(at) ? at - nowMs : null;
}

/** Ms until `ratelimit-reset` (epoch seconds); null if absent or garbage. */
export function resetInMs(value: string | null | undefined, nowMs: number): number | null {
  if (value === null || value === undefined || !/^\d{1,12}$/.test(value.trim())) return null;
  return Number(value.trim()) * 1000 - nowMs;
}

export function apiWaitMs(i: WaitInput): number {
  const attempt = Math.max(1, Math.min(Math.floor(i.attempt) || 1, 30));
  const backoff = Math.min(MAX_BACKOFF_MS, MIN_WAIT_MS * 2 ** (attempt - 1));
  let hint = 0;
  if (i.status === 429 || i.status === 503) {
    const ra = retryAfterMs(i.headers?.retryAfter, i.nowMs);
    // A 429 without Retry-After waits for the window to reset.
    const reset = ra === null && i.status === 429 ? resetInMs(i.headers?.ratelimitReset, i.nowMs) : null;
    hint = ra ?? reset ?? 0;
  }
  const random = Number.isFinite(i.random) ? Math.min(Math.max(i.random, 0), 1) : 0;
  const raw = Math.max(backoff, Number.isFinite(hint) ? hint : 0) * (1 + JITTER * random);
  return Math.round(Math.max(MIN_WAIT_MS, Math.min(raw, i.unserved ? UNSERVED_MAX_WAIT_MS : MAX_WAIT_MS)));
}
