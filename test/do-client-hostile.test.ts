/**
 * The API client against a hostile or broken server on 127.0.0.1: a 200 MB body, a body that stalls
 * after the headers, answers of the wrong shape. Bounded memory, retried like network errors, and
 * precise errors instead of TypeErrors.
 */
import type { ServerResponse } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { TokenBucket } from "../agent/api-budget.js";
import { createReservedIpClient, DoApiError, MAX_API_BODY_BYTES } from "../agent/do-client.js";
import { localHttpServer } from "./fixtures/http-server.js";

const IP = "198.51.100.100";
const DROPLET = 500000001;
const http = localHttpServer();
afterEach(() => http.close());
const serve = http.serve;
const client = (baseUrl: string, requestTimeoutMs = 1_000) =>
  createReservedIpClient({ budget: new TokenBucket(), baseUrl, getToken: () => "dop_v1_test", requestTimeoutMs, random: () => 0 });
const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));

describe("API answers from a hostile server", () => {
  it("stops reading a 200 MB body at 1 MiB: a precise error, the connection dropped, memory bounded", async () => {
    let sent = 0;
    let closed = false;
    const base = await serve((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      const chunk = Buffer.alloc(64 * 1024, "x");
      const pump = () => {
        while (sent < 200 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        res.end();
      };
      res.on("close", () => (closed = true));
      res.write('{"reserved_ip":"');
      pump();
    });
    const rss0 = process.memoryUsage().rss;
    const err = await client(base, 10_000)
      .getReservedIp(IP)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DoApiError);
    expect((err as DoApiError).message).toBe(`GET /v2/reserved_ips/{ip}: body larger than ${MAX_API_BODY_BYTES} bytes`);
    await new Promise((r) => setTimeout(r, 200));
    expect(closed).toBe(true);
    // The server stopped soon after the cap (socket buffers hold a few MB), far from 200 MB.
    expect(sent).toBeLessThan(40 * 1024 * 1024);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(60 * 1024 * 1024);
  });

  it("treats a body that stalls after the headers as a network error, and the assign retries it", async () => {
    let posts = 0;
    const base = await serve((req, res) => {
      if (req.method === "POST" && ++posts === 1) {
        res.writeHead(201, { "content-type": "application/json" });
        res.write('{"action": {"id": 7, '); // ... and nothing more
        return;
      }
      if (req.method === "POST" || req.url?.endsWith("/actions/7"))
        return json(res, req.method === "POST" ? 201 : 200, { action: { id: 7, status: "completed" } });
      json(res, 200, { reserved_ip: { droplet: { id: DROPLET }, locked: false } });
    });
    const stalled = await client(base, 300)
      .getReservedIp(IP)
      .then(
        () => null,
        () => null,
      );
    expect(stalled).toBeNull();
    const t0 = performance.now();
    const r = await client(base, 300).assign(IP, DROPLET, { deadlineMs: 10_000 });
    expect(r.alreadyAssigned).toBe(false);
    expect(posts).toBe(2);
    // 300 ms for the stalled body, then the 1 s floor, then the clean exchange.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1_250);
  });

  it("a stalled body fails with the deadline's message and is retryable", async () => {
    const base = await serve((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"reserved_ip": ');
    });
    const err = (await client(base, 300)
      .getReservedIp(IP)
      .catch((e: unknown) => e)) as DoApiError;
    expect(err).toBeInstanceOf(DoApiError);
    expect(err.message).toBe("GET /v2/reserved_ips/{ip}: no answer within 300 ms");
    expect(err.retryable).toBe(true);
  });

  it("names what is wrong in a 200 of the wrong shape, instead of a TypeError", async () => {
    const answers: unknown[] = [{}, { reserved_ip: { droplet: "lb1", locked: false } }, { reserved_ip: { droplet: null, locked: "no" } }];
    let n = 0;
    const base = await serve((req, res) => {
      if (n < answers.length) return json(res, 200, answers[n++]);
      res.writeHead(200, { "content-type": "text/html" }).end("<html>maintenance</html>");
    });
    const c = client(base);
    const messages: string[] = [];
    for (let i = 0; i < 4; i++) {
      const e = await c.getReservedIp(IP).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(DoApiError);
      expect((e as DoApiError).retryable).toBe(false);
      messages.push((e as DoApiError).message);
    }
    expect(messages[0]).toMatch(/^GET \/v2\/reserved_ips\/\{ip\}: HTTP 200 bad_answer: unexpected answer: reserved_ip: must be .*got nothing/);
    expect(messages[1]).toMatch(/reserved_ip\.droplet: must be .*got "lb1"/);
    expect(messages[2]).toMatch(/reserved_ip\.locked: must be .*got "no"/);
    expect(messages[3]).toMatch(/HTTP 200 bad_answer: expected a JSON body, got text that is not JSON/);
  });

  it("refuses an action with an unknown status by name", async () => {
    const base = await serve((req, res) => json(res, 201, { action: { id: 9, status: "exploded" } }));
    const e = (await client(base)
      .assign(IP, DROPLET, { deadlineMs: 5_000 })
      .catch((x: unknown) => x)) as DoApiError;
    expect(e).toBeInstanceOf(DoApiError);
    expect(e.message).toMatch(/POST \/v2\/reserved_ips\/\{ip\}\/actions: HTTP 201 bad_answer: unexpected answer: action\.status: must be .*got "exploded"/);
  });
});
