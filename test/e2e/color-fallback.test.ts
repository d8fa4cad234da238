/**
 * The color fallback (README "Blue-green", issue 17) end to end in network namespaces
 * (testbed/netbed/bed.ts): two blue and two green droplets with real HAProxy, a witness, real fipd
 * processes, the DigitalOcean emulator, the router's 1:1 NAT of the Reserved IP and a client that
 * opens a new connection every 50 ms through it.
 *
 * After a switch to green, every green droplet dies (kill -9 of its agent and of its HAProxy).
 * With `failover.colorFallback` on (the default), blue serves within the bound, says so in
 * `fipd status` and in the gauge, and hands the IP back to a green droplet that comes back without a
 * failed request. With it off, no blue node leads while green is dark, and green leads again once back.
 *
 * Needs root, ip, nft and haproxy (as test/e2e/netns.test.ts). The tests share one bed and each puts
 * the cluster back as it found it (blue in force, the default failover settings).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PEER_GAUGE_WINDOW_MS } from "../../agent/controller.js";
import { colorFallbackAfterMs } from "../../agent/election/rank.js";
import { METRICS_PORT } from "../../agent/ports.js";
import { NetBed, RESERVED_IP, downtime, shAsync, type ProbeClient, type ProbeResult } from "../../testbed/netbed/bed.js";
import { DEFAULT_TIMING } from "../../testbed/sim/scenario.js";

const BLUES = ["lb-blue-1", "lb-blue-2"];
const GREENS = ["lb-green-1", "lb-green-2"];
const LBS = [...BLUES, ...GREENS];
const colorOf = (id: string | null | undefined) => (id ?? "").replace(/^lb-(blue|green)-\d+$/, "$1");

/** The emulator's assign action takes this long, as DigitalOcean's do (a few hundred ms). */
const ACTION_DELAY_MS = 100;
const CLIENT_INTERVAL_MS = 50;
/**
 * What real processes lose to scheduling on this host (two cores shared with other test runs): the
 * agents' timers, the keeper's API round trip, the router's `nft` update and the client's process.
 */
const HOST_SCHEDULING_MS = 300;
const { leaseMs, maxClockDrift, electionTimeoutMs, candidateBackoffMs, heartbeatIntervalMs } = DEFAULT_TIMING;
/**
 * From the death of the last green droplet to the client's first answer from blue: the fallback
 * bound on the blue nodes' clocks, then a failover (an election, one retry included, as the
 * simulator's scenario allows), the emulator's action, the client's next connection and the host.
 */
const FALLBACK_SERVED_WITHIN_MS =
  (colorFallbackAfterMs(leaseMs) * (1 + maxClockDrift)) / (1 - maxClockDrift) +
  electionTimeoutMs +
  2 * candidateBackoffMs +
  ACTION_DELAY_MS +
  CLIENT_INTERVAL_MS +
  HOST_SCHEDULING_MS;
/** No blue answer before this: the fallback waits for the bound after the last green heartbeat (sent at most one interval before the kill). */
const FALLBACK_NOT_BEFORE_MS = (colorFallbackAfterMs(leaseMs) * (1 - maxClockDrift)) / (1 + maxClockDrift) - heartbeatIntervalMs;

let bed: NetBed;

beforeAll(async () => {
  bed = await NetBed.start({ lbs: ["blue", "blue", "green", "green"], witness: true, actionDelayMs: ACTION_DELAY_MS });
  for (const id of LBS) await bed.installHaproxy(id);
  for (const id of bed.nodes.keys()) await bed.startAgent(id);
  await bed.waitForStableLeader();
}, 120_000);

afterAll(async () => {
  await bed?.close();
}, 60_000);

/** Push the bed's current plan (color, failover settings) to every agent as the stack does: a reload. */
async function applyAll(): Promise<void> {
  for (const id of bed.nodes.keys()) await bed.applyConfig(id);
}

/** A leader of `color` holding the IP, seen through the Reserved IP. */
function colorLeads(color: "blue" | "green", timeoutMs = 30_000): Promise<string> {
  return bed.waitFor(
    `a ${color} leader holding the IP, seen through the Reserved IP`,
    async () => {
      const l = await bed.leader();
      if (!l || colorOf(l) !== color || bed.holder() !== l) return null;
      return (await bed.curl(RESERVED_IP)) === l ? l : null;
    },
    timeoutMs,
  );
}

/** Back to: every HAProxy and agent running with the default failover settings, blue in force and leading. */
async function restore(): Promise<string> {
  for (const id of LBS) if (!bed.haproxyPid(id)) await bed.installHaproxy(id);
  if (bed.activeColor !== "blue" || bed.opts.failover !== undefined) {
    bed.activeColor = "blue";
    bed.opts.failover = undefined;
    await applyAll();
  }
  for (const id of bed.nodes.keys()) if (!bed.node(id).agent) await bed.startAgent(id);
  return colorLeads("blue");
}

/** The switch to green by config reload (netns.test.ts checks it costs no request). */
async function switchToGreen(): Promise<string> {
  bed.activeColor = "green";
  await applyAll();
  return colorLeads("green");
}

/** Every green droplet dies at once: kill -9 of its agent and of its HAProxy. Returns when it happened (performance.now()). */
async function killGreens(): Promise<number> {
  const t0 = performance.now();
  await Promise.all(GREENS.flatMap((id) => [bed.stopAgent(id, "SIGKILL"), bed.stopHaproxy(id)]));
  return t0;
}

async function startedClient(): Promise<ProbeClient> {
  const client = bed.startClient(CLIENT_INTERVAL_MS, 1_000);
  await bed.waitFor("the client's first answers", () => client.results.filter((r) => r.ok).length >= 5, 10_000);
  return client;
}

const assigns = () => bed.emulator.requestLog().filter((r) => r.method === "POST").length;
const okFrom = (rs: readonly ProbeResult[], color: string) => rs.filter((r) => r.ok && colorOf(r.servedBy) === color);

const agentLog = (id: string) => readFileSync(join(bed.node(id).dir, "fipd.log"), "utf8");

/** The node's metrics page, scraped where the stack allows it: on the droplet's loopback. */
async function metrics(id: string): Promise<string> {
  const r = await shAsync("ip", ["netns", "exec", bed.node(id).ns, "curl", "-sS", "--max-time", "2", `http://127.0.0.1:${METRICS_PORT}/metrics`]);
  return r.code === 0 ? r.out : "";
}

describe("color fallback in network namespaces", () => {
  it("every green droplet dies after a switch to green: blue serves within the bound, status and gauge say so, and a returning green gets the IP back without a failed request", async () => {
    await restore();
    await switchToGreen();
    const client = await startedClient();
    expect(okFrom(client.results, "green").length).toBeGreaterThan(0);

    const t0 = await killGreens();
    await bed.waitFor("an answer from blue through the Reserved IP", () => okFrom(client.results, "blue").length > 0, 10_000, 10);
    const tookMs = performance.now() - t0;
    expect(tookMs).toBeGreaterThanOrEqual(FALLBACK_NOT_BEFORE_MS);
    expect(tookMs).toBeLessThanOrEqual(FALLBACK_SERVED_WITHIN_MS);
    const fallbackLeader = await colorLeads("blue", 5_000);
    const dark = await client.stop();
    expect(downtime(dark, CLIENT_INTERVAL_MS).failed).toBeGreaterThan(0); // the droplets died with the IP on them

    const blueFollower = BLUES.find((id) => id !== fallbackLeader)!;
    for (const id of BLUES) {
      const st = await bed.fipd(id, ["status"]);
      expect(st.code).toBe(0);
      expect(st.out).toMatch(
        /^FALLBACK: serving from blue instead of green for \d+ s: no green node was eligible for 900 ms; now: no healthy green node can take over/m,
      );
    }
    const gauge = 'fipd_color_fallback{color="blue",requested="green"} 1';
    await bed.waitFor(
      "the fallback gauge on both blue nodes",
      async () => (await Promise.all(BLUES.map(metrics))).every((m) => m.split("\n").includes(gauge)),
      PEER_GAUGE_WINDOW_MS + 2_000,
      200,
    );

    // One green droplet comes back: the fallback leader hands the IP to it, no request fails.
    const assignsBefore = assigns();
    const logBefore = agentLog(fallbackLeader).length;
    const back = await startedClient();
    await bed.installHaproxy("lb-green-1");
    await bed.startAgent("lb-green-1");
    await colorLeads("green", 15_000);
    await new Promise((r) => setTimeout(r, 1_000));
    const rs = await back.stop();
    expect(downtime(rs, CLIENT_INTERVAL_MS)).toMatchObject({ failed: 0 });
    expect(okFrom(rs, "blue").length).toBeGreaterThan(0);
    expect(colorOf(rs[rs.length - 1].servedBy)).toBe("green");
    expect(assigns() - assignsBefore).toBe(1);
    expect(agentLog(fallbackLeader).slice(logBefore)).toContain(`"reason":"handing over: switching to green (to ${bed.node("lb-green-1").nodeId})"`);
    const st = (await bed.status(blueFollower))!;
    expect(st).toMatchObject({ colorInForce: "green", requestedColor: "green", colorFallback: null });
    expect((await bed.fipd(blueFollower, ["status"])).out).not.toMatch(/FALLBACK/);

    await restore();
  }, 60_000);

  it("with failover.colorFallback false: no blue node leads while green is dark, and green leads again once back", async () => {
    await restore();
    bed.opts.failover = { colorFallback: false };
    await applyAll();
    const greenLeader = await switchToGreen();
    const assignsBefore = assigns();

    await killGreens();
    // Longer than the bound by a whole bound: a fallback would have come by then.
    const until = Date.now() + 2 * FALLBACK_SERVED_WITHIN_MS;
    let polls = 0;
    while (Date.now() < until) {
      const views = await Promise.all(BLUES.map((id) => bed.status(id)));
      for (const v of views) {
        expect(v).not.toBeNull();
        expect(v!.role).not.toBe("leader");
        expect(v!.colorFallback).toBeNull();
      }
      polls++;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(polls).toBeGreaterThan(10);
    expect(assigns()).toBe(assignsBefore);
    expect(bed.holder()).toBe(greenLeader);
    expect(await bed.curl(RESERVED_IP)).toBeNull();
    expect(await bed.leader()).toBeNull();
    expect(await bed.status("lb-blue-1")).toMatchObject({ colorInForce: "green", requestedColor: "green", colorFallback: null });

    await bed.installHaproxy("lb-green-2");
    await bed.startAgent("lb-green-2");
    expect(await colorLeads("green", 15_000)).toBe("lb-green-2");

    await restore();
  }, 60_000);
});
