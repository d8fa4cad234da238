/**
 * The ACME child (dist/fipd-acme.cjs; `npm run build` first) against a CA that answers 429 with a
 * Retry-After: it must report rateLimited and the wait at once, never sleep it out itself
 * (acme-client's own retries are off), so fipd alone decides when to try again.
 */
import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { createServer, type Server } from "node:http";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const CHILD = resolve(__dirname, "..", "..", "dist", "fipd-acme.cjs");
let server: Server;
let port = 0;
let requests = 0;

beforeAll(async () => {
  server = createServer((_req, res) => {
    requests++;
    res.writeHead(429, { "content-type": "application/problem+json", "retry-after": "3600" });
    res.end(JSON.stringify({ type: "urn:ietf:params:acme:error:rateLimited", detail: "too many new orders recently" }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  port = (server.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

function runChild(order: unknown): Promise<{ lines: unknown[]; code: number | null; ms: number }> {
  const started = Date.now();
  const p = spawn(process.execPath, [CHILD], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  p.stdout.on("data", (b: Buffer) => (out += b.toString()));
  p.stdin.write(JSON.stringify(order) + "\n");
  const killer = setTimeout(() => p.kill("SIGKILL"), 20_000);
  return new Promise((r) =>
    p.on("exit", (code) => {
      clearTimeout(killer);
      r({
        lines: out
          .trim()
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as unknown),
        code,
        ms: Date.now() - started,
      });
    }),
  );
}

const key = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "sec1", format: "pem" }) as string;

describe("ACME child", () => {
  it("reports a rate limit with the CA's Retry-After at once, after one request", async () => {
    const r = await runChild({
      kind: "order",
      directoryUrl: `http://127.0.0.1:${port}/dir`,
      email: "ops@example.com",
      accountKeyPem: key(),
      certificateKeyPem: key(),
      domains: ["web.example.com"],
      requestTimeoutMs: 2_000,
      stepTimeoutMs: 5_000,
    });
    expect(r.lines.at(-1)).toMatchObject({ kind: "error", rateLimited: true, retryAfterS: 3600, reason: expect.stringMatching(/rateLimited|429/) });
    expect(r.code).toBe(1);
    expect(requests).toBe(1);
    expect(r.ms).toBeLessThan(10_000);
  }, 30_000);

  it("refuses an order that does not match the schema, naming the field", async () => {
    const r = await runChild({ kind: "order", directoryUrl: "not a url" });
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([{ kind: "error", reason: expect.stringMatching(/^order on stdin: .*directoryUrl/) }]);
  }, 30_000);
});
