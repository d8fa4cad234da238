/** The GET behind the health probe and the metadata client: bounded in time and size, short errors. */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent as HttpsAgent, createServer as createHttpsServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { HttpGetError, httpGet, httpRequest } from "../agent/http-get.js";
import { createMetadataClient } from "../agent/metadata.js";
import { freePort } from "../testbed/harness/ports.js";
import { localHttpServer } from "./fixtures/http-server.js";

const http = localHttpServer();
afterEach(() => http.close());
const serve = http.serve;

describe("httpGet", () => {
  it("returns status and body, and caps the body at 64 KiB", async () => {
    const base = await serve((req, res) => {
      if (req.url === "/big") res.end("x".repeat(200_000));
      else res.writeHead(503).end("down\n");
    });
    expect(await httpGet(`${base}/healthz`, 1_000)).toEqual({ status: 503, body: "down\n" });
    expect((await httpGet(`${base}/big`, 1_000)).body).toHaveLength(64 * 1024);
  });

  it("fails with the socket's error code when nothing listens", async () => {
    const port = await freePort();
    const err = await httpGet(`http://127.0.0.1:${port}/`, 1_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpGetError);
    expect((err as HttpGetError).reason).toBe("ECONNREFUSED");
  });

  it("gives up at the deadline when the server accepts but never answers", async () => {
    const base = await serve(() => undefined);
    const t0 = performance.now();
    const err = await httpGet(`${base}/`, 200).catch((e: unknown) => e);
    expect((err as HttpGetError).reason).toBe("no answer within 200 ms");
    expect(performance.now() - t0).toBeLessThan(2_000);
  });

  it("the metadata client refuses an answer over 64 KiB, and stops reading it", async () => {
    let sent = 0;
    const base = await serve((req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      const chunk = Buffer.alloc(16 * 1024, "1");
      const pump = () => {
        while (sent < 100 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        res.end();
      };
      pump();
    });
    const md = createMetadataClient({ baseUrl: base, timeoutMs: 5_000 });
    const err = await md.dropletId().catch((e: unknown) => e);
    expect(String(err)).toBe(`Error: metadata ${base}/metadata/v1/id: body larger than 65536 bytes`);
    await new Promise((r) => setTimeout(r, 100));
    expect(sent).toBeLessThan(20 * 1024 * 1024);
  });

  it("speaks HTTPS through a keep-alive agent: one TLS connection for several requests, same caps", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-tls-"));
    try {
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=127.0.0.1",
          "-addext",
          "subjectAltName=IP:127.0.0.1",
          "-keyout",
          join(dir, "key.pem"),
          "-out",
          join(dir, "cert.pem"),
        ],
        { stdio: "ignore" },
      );
      const cert = readFileSync(join(dir, "cert.pem"));
      let connections = 0;
      const tls = createHttpsServer({ key: readFileSync(join(dir, "key.pem")), cert }, (req, res) => {
        if (req.url === "/big") res.end("x".repeat(300_000));
        else res.writeHead(200, { "retry-after": "3" }).end(`{"n":${connections}}`);
      });
      tls.on("secureConnection", () => connections++);
      await new Promise<void>((r) => tls.listen(0, "127.0.0.1", r));
      const url = `https://127.0.0.1:${(tls.address() as AddressInfo).port}`;
      const agent = new HttpsAgent({ keepAlive: true, maxSockets: 2, timeout: 4_000, ca: cert });
      try {
        for (let i = 0; i < 3; i++) {
          const r = await httpRequest(`${url}/x`, { method: "POST", body: "{}", timeoutMs: 2_000, maxBytes: 1024, agent });
          expect([r.status, r.body, r.header("Retry-After")]).toEqual([200, '{"n":1}', "3"]);
        }
        expect(connections).toBe(1);
        const err = await httpRequest(`${url}/big`, { timeoutMs: 2_000, maxBytes: 100_000, agent }).catch((e: unknown) => e);
        expect((err as HttpGetError).reason).toBe("body larger than 100000 bytes");
      } finally {
        agent.destroy();
        tls.closeAllConnections();
        await new Promise((r) => tls.close(r));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
