import { afterEach, describe, expect, it } from "vitest";
import { TokenBucket } from "../agent/api-budget.js";
import { createReservedIpClient, DoApiError } from "../agent/do-client.js";
import { startEmulator, type Emulator } from "../testbed/emulator/index.js";

const TOKEN = "dop_v1_" + "ab".repeat(32);
let emu: Emulator | null = null;
afterEach(async () => {
  await emu?.close();
  emu = null;
});

async function setup(actionDelayMs = 0) {
  emu = await startEmulator({ tokens: [TOKEN], actionDelayMs });
  emu.addReservedIp({ ip: "198.51.100.100", region: "nyc3" });
  const d = emu.addDroplet({ name: "lb1", region: "nyc3", publicIpv4: "203.0.113.11", privateIpv4: "192.0.2.11", anchorIpv4: "198.51.100.11" });
  const client = createReservedIpClient({ budget: new TokenBucket(), baseUrl: emu.apiUrl, getToken: () => TOKEN, requestTimeoutMs: 2000, random: () => 0.5 });
  return { emu, client, dropletId: d.id };
}

describe("reserved IP client", () => {
  it("assigns with one POST, follows the action and confirms: a clean failover costs few requests", async () => {
    const { emu, client, dropletId } = await setup(600);
    const r = await client.assign("198.51.100.100", dropletId, { deadlineMs: 10_000 });
    expect(r.alreadyAssigned).toBe(false);
    expect(emu.reservedIpHolder("198.51.100.100")).toBe(dropletId);
    const log = emu.requestLog();
    expect(log.filter((x) => x.method === "POST")).toHaveLength(1);
    expect(log.length).toBeLessThanOrEqual(6);
  });

  it("retries 422 pending event and 5xx, and honours 429 retry-after", async () => {
    const { emu, client, dropletId } = await setup();
    emu.faults.set({ status: 422, count: 1, match: "POST" });
    emu.faults.set({ status: 503, count: 1, match: "POST" });
    emu.faults.set({ status: 429, count: 1, match: "POST", retryAfterS: 1 });
    const t0 = Date.now();
    await client.assign("198.51.100.100", dropletId, { deadlineMs: 20_000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(emu.reservedIpHolder("198.51.100.100")).toBe(dropletId);
    expect(emu.requestLog().filter((x) => x.method === "POST").length).toBe(4);
  });

  it("fails fast on a bad token, without the token in the error", async () => {
    const { emu, dropletId } = await setup();
    const client = createReservedIpClient({ budget: new TokenBucket(), baseUrl: emu.apiUrl, getToken: () => "dop_v1_wrong", requestTimeoutMs: 2000 });
    const err = await client.assign("198.51.100.100", dropletId, { deadlineMs: 10_000 }).catch((e) => e);
    expect(err).toBeInstanceOf(DoApiError);
    expect(err.status).toBe(401);
    expect(String(err.message)).not.toContain("dop_v1_wrong");
    expect(emu.requestLog()).toHaveLength(1);
  });

  it("stops at once when leadership is lost (abort), and respects the deadline", async () => {
    const { client, dropletId, emu } = await setup(5_000);
    const ac = new AbortController();
    const p = client.assign("198.51.100.100", dropletId, { deadlineMs: 60_000, signal: ac.signal });
    setTimeout(() => ac.abort(new Error("lost lease")), 300);
    await expect(p).rejects.toThrow(/lost lease/);
    emu.faults.set({ status: 500, count: 100 });
    await expect(
      createReservedIpClient({ budget: new TokenBucket(), baseUrl: emu.apiUrl, getToken: () => TOKEN, requestTimeoutMs: 500 }).assign(
        "198.51.100.100",
        dropletId,
        { deadlineMs: 1_500 },
      ),
    ).rejects.toThrow(/did not complete within 1500 ms/);
  });
});

describe("reserved IP client under a rate-limit storm", () => {
  it("waits at least 1 s after a 429 with Retry-After: 0 and a past ratelimit-reset: a handful of requests in 8 s, not thousands", async () => {
    const { emu, client, dropletId } = await setup();
    const past = String(Math.floor(Date.now() / 1000) - 30);
    emu.faults.set({ status: 429, forMs: 60_000, retryAfterS: 0, headers: { "ratelimit-reset": past } });
    const err = await client.assign("198.51.100.100", dropletId, { deadlineMs: 8_000 }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/did not complete within 8000 ms/);
    const log = emu.requestLog();
    // Waits of 1, 2, 4 (+ jitter) s: 4 requests before the 8 s deadline (4,403 before the fix).
    expect(log.length).toBeGreaterThanOrEqual(3);
    expect(log.length).toBeLessThanOrEqual(5);
    for (let i = 1; i < log.length; i++) expect(log[i].at - log[i - 1].at).toBeGreaterThanOrEqual(990);
  });

  it("a 429 without Retry-After and no past reset: same floor", async () => {
    const { emu, client, dropletId } = await setup();
    emu.faults.set({ status: 429, forMs: 60_000, headers: { "ratelimit-reset": String(Math.floor(Date.now() / 1000) - 5) } });
    await client.assign("198.51.100.100", dropletId, { deadlineMs: 4_000 }).catch(() => undefined);
    expect(emu.requestLog().length).toBeLessThanOrEqual(3);
  });

  it("while the IP is unserved, 10 s of 429s with a reset 60 s ahead: assigned again within about 12 s", async () => {
    const { emu, client, dropletId } = await setup(100);
    emu.faults.set({
      status: 429,
      forMs: 10_000,
      match: "POST /v2/reserved_ips/*/actions",
      headers: { "ratelimit-reset": String(Math.floor(Date.now() / 1000) + 60) },
    });
    const t0 = Date.now();
    await client.assign("198.51.100.100", dropletId, { deadlineMs: 60_000, unserved: true });
    const ms = Date.now() - t0;
    expect(emu.reservedIpHolder("198.51.100.100")).toBe(dropletId);
    expect(ms).toBeGreaterThanOrEqual(10_000);
    expect(ms).toBeLessThanOrEqual(12_500);
    expect(emu.requestLog().filter((r) => r.status === 429).length).toBeLessThanOrEqual(2);
  });

  it("every request takes a token from the one budget: 40 concurrent reads send the burst, then one per 2 s", async () => {
    const { emu: api, client } = await setup();
    const stop = new AbortController();
    const reads = Array.from({ length: 40 }, () => client.getReservedIp("198.51.100.100", stop.signal).catch(() => undefined));
    await new Promise((r) => setTimeout(r, 2_500));
    // Burst 10, then 30 a minute: by 2.5 s at most 10 + 1.
    expect(api.requestLog().length).toBeLessThanOrEqual(11);
    expect(api.requestLog().length).toBeGreaterThanOrEqual(10);
    stop.abort(new Error("test over")); // the queued reads end now
    await Promise.all(reads);
    expect(api.requestLog().length).toBeLessThanOrEqual(11);
  });

  it("clients made without a budget share the process's one budget", async () => {
    const { emu: api } = await setup();
    const stop = new AbortController();
    const a = createReservedIpClient({ baseUrl: api.apiUrl, getToken: () => TOKEN, requestTimeoutMs: 2000 });
    const b = createReservedIpClient({ baseUrl: api.apiUrl, getToken: () => TOKEN, requestTimeoutMs: 2000 });
    const reads = Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).getReservedIp("198.51.100.100", stop.signal).catch(() => undefined));
    await new Promise((r) => setTimeout(r, 1_500));
    expect(api.requestLog().length).toBeLessThanOrEqual(10);
    stop.abort(new Error("test over"));
    await Promise.all(reads);
  });
});
