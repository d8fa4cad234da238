/**
 * The process's one budget of DigitalOcean API requests: a token bucket that every request passes
 * through (the request function in do-client.ts takes a token before it sends; there is no other
 * way to the API). The API token is shared by the whole account at 250 requests a minute, so each
 * agent keeps well under it: 30 a minute sustained, bursts of 10 (a failover costs about 5). The
 * cluster-wide bound is 30 × the number of LBs a minute (the witness never calls the API).
 *
 * `reserve()` takes a token now or books the next one: it returns how long the caller must wait
 * before sending. Concurrent callers queue behind each other in order. Pure (the clock is given).
 */
export const REQUESTS_PER_MINUTE = 30;
export const BURST = 10;

export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly perMs: number;

  constructor(
    private readonly o: { perMinute: number; burst: number; now: () => number } = {
      perMinute: REQUESTS_PER_MINUTE,
      burst: BURST,
      now: () => performance.now(),
    },
  ) {
    if (!(o.perMinute > 0) || !(o.burst >= 1)) throw new Error(`token bucket: perMinute must be > 0 and burst ≥ 1, got ${o.perMinute} and ${o.burst}`);
    this.perMs = o.perMinute / 60_000;
    this.tokens = o.burst;
    this.last = o.now();
  }

  /** Ms to wait before the request may go (0: at once). The token is taken either way. */
  reserve(): number {
    const now = this.o.now();
    this.tokens = Math.min(this.o.burst, this.tokens + Math.max(0, now - this.last) * this.perMs);
    this.last = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil(-this.tokens / this.perMs);
  }

  /** Tokens left now (negative: requests are queued). */
  available(): number {
    const now = this.o.now();
    return Math.min(this.o.burst, this.tokens + Math.max(0, now - this.last) * this.perMs);
  }
}
