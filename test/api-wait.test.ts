/** The API retry policy and the request budget: pure, so every rule is checked exactly. */
import { describe, expect, it } from "vitest";
import { BURST, REQUESTS_PER_MINUTE, TokenBucket } from "../agent/api-budget.js";
import { apiWaitMs, type WaitInput } from "../agent/api-wait.js";

const NOW = Date.UTC(2026, 11, 3, 7, 0, 0);
const wait = (i: Partial<WaitInput>) => apiWaitMs({ status: 429, attempt: 1, nowMs: NOW, unserved: false, random: 0, ...i });

describe("apiWaitMs", () => {
  it("backs off 1/2/4/8 s, capped at 8 s, with up to 25 % jitter", () => {
    expect([1, 2, 3, 4, 5, 9].map((attempt) => wait({ status: 500, attempt }))).toEqual([1000, 2000, 4000, 8000, 8000, 8000]);
    expect(wait({ status: 503, attempt: 1, random: 0.999 })).toBe(1250);
    expect(wait({ status: 0, attempt: 3, random: 0.5 })).toBe(4500);
  });

  it("never waits less than 1 s, whatever Retry-After or ratelimit-reset say", () => {
    for (const retryAfter of ["0", "-5", "-0.5", "garbage", "", "1e400", "NaN", "0.001", "Thu, 01 Jan 1970 00:00:00 GMT"]) {
      expect(wait({ headers: { retryAfter } }), `Retry-After: ${retryAfter}`).toBeGreaterThanOrEqual(1000);
    }
    // A reset already past (the droplet's clock ahead of DigitalOcean's).
    expect(wait({ headers: { ratelimitReset: String(NOW / 1000 - 30) } })).toBe(1000);
    expect(wait({ headers: { ratelimitReset: "soon" } })).toBe(1000);
    expect(wait({ status: 0, attempt: 0 })).toBe(1000);
    expect(wait({ status: 0, attempt: Number.NaN, random: Number.NaN })).toBeGreaterThanOrEqual(1000);
  });

  it("honours Retry-After (seconds or an HTTP date), and a 429 without it waits for ratelimit-reset", () => {
    expect(wait({ headers: { retryAfter: "7" } })).toBe(7000);
    expect(wait({ headers: { retryAfter: new Date(NOW + 20_000).toUTCString() } })).toBe(20_000);
    expect(wait({ headers: { ratelimitReset: String(NOW / 1000 + 42) } })).toBe(42_000);
    // Retry-After wins over the reset; the backoff wins when it is longer.
    expect(wait({ headers: { retryAfter: "3", ratelimitReset: String(NOW / 1000 + 42) } })).toBe(3000);
    expect(wait({ attempt: 4, headers: { retryAfter: "3" } })).toBe(8000);
    // Hints only count for 429/503: a 500 with a reset header backs off normally.
    expect(wait({ status: 500, headers: { ratelimitReset: String(NOW / 1000 + 42) } })).toBe(1000);
  });

  it("waits at most 10 s while the IP is unserved, and at most 60 s otherwise", () => {
    const far = { ratelimitReset: String(NOW / 1000 + 60) };
    expect(wait({ headers: far, unserved: true, random: 0.999 })).toBe(10_000);
    expect(wait({ headers: { retryAfter: "3600" }, unserved: true })).toBe(10_000);
    expect(wait({ status: 500, attempt: 30, unserved: true, random: 0.999 })).toBeLessThanOrEqual(10_000);
    expect(wait({ headers: far })).toBe(60_000);
    expect(wait({ headers: { retryAfter: "3600" } })).toBe(60_000);
  });
});

describe("TokenBucket", () => {
  it("lets a burst through, then one request per 60/perMinute seconds", () => {
    let now = 0;
    const b = new TokenBucket({ perMinute: REQUESTS_PER_MINUTE, burst: BURST, now: () => now });
    const waits = Array.from({ length: BURST }, () => b.reserve());
    expect(waits).toEqual(Array(BURST).fill(0));
    // Past the burst each caller is booked behind the previous one: 2 s, 4 s, 6 s at 30/min.
    expect([b.reserve(), b.reserve(), b.reserve()]).toEqual([2000, 4000, 6000]);
    now = 6000; // the three booked tokens are now paid for
    expect(b.reserve()).toBe(2000);
    now = 10 * 60_000; // a long idle refills to the burst, not beyond
    expect(Math.round(b.available())).toBe(BURST);
  });

  it("bounds any pattern of requests: at most burst + perMinute × minutes", () => {
    let now = 0;
    const b = new TokenBucket({ perMinute: 30, burst: 10, now: () => now });
    let sent = 0;
    // A caller that sends whenever the bucket lets it, polling every 10 ms for 3 minutes.
    let nextAt = 0;
    for (now = 0; now <= 180_000; now += 10) {
      if (now < nextAt) continue;
      const w = b.reserve();
      if (w === 0) sent++;
      else nextAt = now + w;
      if (w > 0) sent++; // the booked request goes after its wait
    }
    expect(sent).toBeLessThanOrEqual(10 + 30 * 3 + 1);
    expect(sent).toBeGreaterThanOrEqual(30 * 3);
  });

  it("refuses a bucket that would never refill", () => {
    expect(() => new TokenBucket({ perMinute: 0, burst: 10, now: () => 0 })).toThrow(/perMinute must be > 0/);
  });
});
