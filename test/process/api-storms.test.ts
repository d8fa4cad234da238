/**
 * The API misbehaves while the cluster fails over: 422 "pending event", 429 with rate-limit
 * headers, 5xx. The cluster must still converge, with a bounded number of requests.
 */
import { afterEach, describe, expect, it } from "vitest";
import { LocalCluster } from "../../testbed/harness/local-cluster.js";

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

async function failoverUnder(fault: Parameters<LocalCluster["emulator"]["faults"]["set"]>[0]) {
  cluster = await LocalCluster.start({ lbs: ["blue", "blue", "blue"], witness: true, actionDelayMs: 100 });
  const c = cluster;
  c.startAll();
  const first = await c.waitFor("a leader holding the IP", async () => {
    const l = await c.leader();
    return l && c.holder() === l ? l : null;
  });
  const before = c.emulator.requestLog().length;
  c.emulator.faults.set(fault);
  await c.stopNode(first, "SIGKILL");
  const next = await c.waitFor(
    "a new leader holding the IP",
    async () => {
      const l = await c.leader();
      return l && l !== first && c.holder() === l ? l : null;
    },
    45_000,
  );
  return { c, next, requests: c.emulator.requestLog().slice(before) };
}

describe("fipd under API error storms", () => {
  it("recovers from a burst of 5xx on assign", async () => {
    const { requests } = await failoverUnder({ status: 500, count: 3, match: "POST /v2/reserved_ips/*/actions" });
    expect(requests.filter((r) => r.status >= 500).length).toBe(3);
    expect(requests.length).toBeLessThanOrEqual(20);
  });

  it("recovers from 429 rate limiting, honouring retry-after", async () => {
    const { requests } = await failoverUnder({ status: 429, count: 2, match: "POST /v2/reserved_ips/*/actions", retryAfterS: 1 });
    const limited = requests.filter((r) => r.status === 429);
    expect(limited.length).toBe(2);
    // The retry after a 429 waited for retry-after (1 s), not a tight loop.
    const firstLimited = limited[0];
    const nextPost = requests.find((r) => r.method === "POST" && r.at > firstLimited.at);
    expect(nextPost!.at - firstLimited.at).toBeGreaterThanOrEqual(900);
    expect(requests.length).toBeLessThanOrEqual(20);
  });

  it("recovers from 422 pending event", async () => {
    const { requests } = await failoverUnder({ status: 422, count: 3, match: "POST /v2/reserved_ips/*/actions" });
    expect(requests.filter((r) => r.status === 422).length).toBe(3);
    expect(requests.length).toBeLessThanOrEqual(25);
  });
});
