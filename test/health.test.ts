/**
 * The local HAProxy health checker (agent/health.ts) against a real HTTP server: rise and fall in a
 * row, what counts as a pass, what it reports, timeouts, one probe at a time, and stop.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { createHealthChecker, type HealthChecker } from "../agent/health.js";
import { freePort } from "../testbed/harness/ports.js";
import { localHttpServer } from "./fixtures/http-server.js";

const http = localHttpServer();
let checker: HealthChecker | null = null;
afterEach(async () => {
  checker?.stop();
  checker = null;
  await http.close();
});

/** The health URL of a server that answers with `handler`. */
const serve = async (handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> => `${await http.serve(handler)}/healthz`;

/** Polls `cond` every 5 ms for at most `ms`. */
async function until(cond: () => boolean, ms = 3_000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

function start(url: string, o: Partial<{ rise: number; fall: number; timeoutMs: number; intervalMs: number }> = {}) {
  const changes: Array<[boolean, string]> = [];
  checker = createHealthChecker({
    url,
    intervalMs: o.intervalMs ?? 5,
    timeoutMs: o.timeoutMs ?? 500,
    rise: o.rise ?? 2,
    fall: o.fall ?? 2,
    onChange: (h, d) => changes.push([h, d]),
  });
  checker.start();
  return { checker, changes };
}

describe("health checker", () => {
  it("starts unhealthy and turns healthy only after `rise` passes in a row", async () => {
    let answered = 0;
    const url = await serve((_req, res) => {
      answered++;
      res.writeHead(200).end("ok\n");
    });
    const { checker: c, changes } = start(url, { rise: 3 });
    expect(c.healthy()).toBe(false);
    await until(() => answered >= 2);
    expect(c.healthy()).toBe(false);
    await until(() => changes.length === 1);
    expect(answered).toBeGreaterThanOrEqual(3);
    expect(changes).toEqual([[true, "HTTP 200"]]);
    expect(c.healthy()).toBe(true);
  });

  it("turns unhealthy after `fall` failures in a row, not after failures with a pass between; a non-2xx status is a failure and says which", async () => {
    // Healthy after two passes; 503 and 302 each followed by a pass change nothing; two 302s in a row
    // make it unhealthy; 200 then 503 is not two passes; two 200s make it healthy again.
    const script = [200, 200, 503, 200, 302, 200, 200, 302, 302, 200, 503, 200, 200];
    let i = 0;
    const url = await serve((_req, res) => {
      res.writeHead(script[i++] ?? 200).end();
    });
    const { changes } = start(url, { rise: 2, fall: 2 });
    await until(() => i >= script.length + 3);
    expect(changes).toEqual([
      [true, "HTTP 200"],
      [false, `HTTP 302 from ${url}`],
      [true, "HTTP 200"],
    ]);
  });

  it("passes and failures that alternate never add up to `rise` or `fall`", async () => {
    let i = 0;
    const url = await serve((_req, res) => {
      res.writeHead(i++ % 2 === 0 ? 200 : 503).end();
    });
    const { checker: c, changes } = start(url, { rise: 2, fall: 3 });
    await until(() => i >= 12);
    expect(changes).toEqual([]);
    expect(c.healthy()).toBe(false);
  });

  it("a large body still passes on its status (the probe reads at most 64 KiB)", async () => {
    const big = await serve((_req, res) => res.writeHead(200).end("x".repeat(300_000)));
    const { changes } = start(big, { rise: 1 });
    await until(() => changes.length === 1);
    expect(changes[0]).toEqual([true, "HTTP 200"]);
  });

  it("a server that never answers fails at the timeout, and it says so", async () => {
    const url = await serve(() => undefined);
    const { checker: c, changes } = start(url, { fall: 1, timeoutMs: 50 });
    await until(() => changes.length === 1);
    expect(changes).toEqual([[false, `no answer within 50 ms (${url})`]]);
    expect(c.healthy()).toBe(false);
  });

  it("nothing listening: unhealthy with the socket's error", async () => {
    const url = `http://127.0.0.1:${await freePort()}/healthz`;
    const { changes } = start(url, { fall: 2 });
    await until(() => changes.length === 1);
    expect(changes).toEqual([[false, `ECONNREFUSED (${url})`]]);
  });

  it("probes one at a time (the next starts after the last answer), and not at all after stop", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let requests = 0;
    const url = await serve((_req, res) => {
      requests++;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      setTimeout(() => {
        inFlight--;
        res.writeHead(200).end();
      }, 30);
    });
    const { checker: c } = start(url, { intervalMs: 1, timeoutMs: 1_000 });
    await until(() => requests >= 4);
    expect(maxInFlight).toBe(1);
    c.stop();
    await until(() => inFlight === 0);
    const after = requests;
    await new Promise((r) => setTimeout(r, 100));
    expect(requests).toBe(after);
  });

  it("a probe in flight when stopped reports nothing and schedules nothing", async () => {
    let requests = 0;
    const url = await serve((_req, res) => {
      requests++;
      setTimeout(() => res.writeHead(200).end(), 40);
    });
    const { checker: c, changes } = start(url, { rise: 1 });
    await until(() => requests === 1);
    c.stop();
    await new Promise((r) => setTimeout(r, 150));
    expect(changes).toEqual([]);
    expect(requests).toBe(1);
    expect(c.healthy()).toBe(false);
  });
});
