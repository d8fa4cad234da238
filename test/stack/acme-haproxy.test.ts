/**
 * The HAProxy config with an ACME certificate: valid for the real haproxy (-c), and, run for real,
 * the challenge path reaches fipd's responder ahead of the https redirect, the routes and the rate
 * limit, while the https frontend serves the placeholder.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ACME_CHALLENGE_PREFIX } from "../../agent/ports.js";
import { ANCHOR_PLACEHOLDER, CONFIG_ID_PLACEHOLDER, certificateFiles, renderHaproxyConfig, type HaproxyOptions } from "../../components/haproxy.js";
import type { Frontend, Pool } from "../../components/lb-config.js";

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createTcpServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
const answer = (body: (url: string) => string) =>
  new Promise<{ server: Server; port: number }>((resolve) => {
    const server = createServer((req, res) => res.end(body(req.url ?? ""))).listen(0, "127.0.0.1", () =>
      resolve({ server, port: (server.address() as { port: number }).port }),
    );
  });
/** One request on its own connection (no pool): status, location and body. */
const get = (port: number, path: string) =>
  new Promise<{ status: number; location?: string; body: string }>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false, headers: { host: "www.example.com" }, timeout: 5000 }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, body }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: timed out`)));
    req.end();
  });

let dir = "";
/** The placeholder as tls.SelfSignedCert makes it: self-signed, ECDSA P-256, the domains as subjectAltNames. */
let placeholder: { certificate: string; privateKey: string };
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "halb-acme-haproxy-"));
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650"],
      ...["-keyout", "ph.key", "-out", "ph.crt", "-subj", "/CN=www.example.com", "-addext", "subjectAltName=DNS:www.example.com,DNS:example.com"],
    ],
    { cwd: dir, stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 },
  );
  placeholder = { certificate: readFileSync(join(dir, "ph.crt"), "utf8"), privateKey: readFileSync(join(dir, "ph.key"), "utf8") };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pools: Record<string, Pool> = { web: { servers: ["127.0.0.1:9"] }, other: { servers: ["127.0.0.1:9"] } };
const frontends = (http: number, https: number): Frontend[] => [
  {
    port: http,
    protocol: "http",
    pool: "web",
    redirectToHttps: true,
    // A route that would take the challenge path if the ACME rule did not come first.
    routes: [{ pathPrefix: "/.well-known/", pool: "other" }],
    rateLimit: { requestsPerSecond: 1 },
    denyCidrs: ["192.0.2.0/24"],
  },
  { port: https, protocol: "https", pool: "web", certificates: ["site"] },
];
const install = (o: HaproxyOptions) => {
  for (const [n, c] of Object.entries(certificateFiles({ site: placeholder }))) writeFileSync(join(dir, n), c, { mode: 0o600 });
  const file = join(dir, "haproxy.cfg");
  writeFileSync(
    file,
    renderHaproxyConfig({ certDir: dir, ...o })
      .replaceAll(ANCHOR_PLACEHOLDER, "127.0.0.1")
      .replaceAll(CONFIG_ID_PLACEHOLDER, "set.test"),
  );
  return file;
};

describe("HAProxy with an ACME certificate", () => {
  it("is valid for haproxy -c (2.6), without a warning, with the placeholder as the certificate file", () => {
    const file = install({ frontends: frontends(80, 443), pools, acmeResponderPort: 8406 });
    const r = spawnSync("haproxy", ["-c", "-f", file], { encoding: "utf8", timeout: 10_000 });
    if (r.error) throw new Error(`haproxy is required for this test (apt-get install haproxy): ${r.error.message}`);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/WARNING|ALERT/);
    const cfg = readFileSync(file, "utf8");
    // The challenge rule is the first http-request rule, and its use_backend the first.
    const fe80 = cfg.slice(cfg.indexOf("frontend fe_80"), cfg.indexOf("frontend fe_443"));
    expect(
      fe80
        .split("\n")
        .find((l) => l.trim().startsWith("http-request"))
        ?.trim(),
    ).toBe("http-request allow if acme_challenge");
    expect(
      fe80
        .split("\n")
        .find((l) => l.trim().startsWith("use_backend"))
        ?.trim(),
    ).toBe("use_backend be_acme if acme_challenge");
    expect(cfg).toContain(`acl acme_challenge path_beg ${ACME_CHALLENGE_PREFIX}`);
    expect(cfg).toContain("backend be_acme\n    mode http\n    server fipd_acme 127.0.0.1:8406\n");
    // The https frontend needs no challenge route; without ACME no http frontend has one.
    expect(cfg.slice(cfg.indexOf("frontend fe_443"))).not.toContain("acme_challenge");
    expect(renderHaproxyConfig({ frontends: frontends(80, 443), pools })).not.toMatch(/acme_challenge|be_acme/);
  });

  it("run for real: a challenge request reaches the responder past the redirect, the routes and the rate limit; https serves the placeholder", async () => {
    const [httpPort, httpsPort, healthPort, metricsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const responder = await answer((url) => `responder ${url}`);
    const file = install({
      frontends: frontends(httpPort, httpsPort),
      pools,
      acmeResponderPort: responder.port,
      healthPort,
      metricsPort,
      statsSocket: join(dir, "admin.sock"),
      logTarget: "stderr",
      runAs: null,
      masterWorker: false,
      maxconn: 2000,
    });
    let log = "";
    const haproxy: ChildProcess = spawn("haproxy", ["-db", "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
    haproxy.stderr!.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    try {
      for (let i = 0; i < 100; i++) {
        const up = await get(httpPort, "/").then(
          () => true,
          () => false,
        );
        if (up) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 1100)); // let the rate of the probes above leave the 1 s window
      // Ten challenge requests within a second: a rate limit of 1/s would refuse most; none is redirected.
      for (let i = 0; i < 10; i++)
        expect(await get(httpPort, `${ACME_CHALLENGE_PREFIX}token${i}`), log).toEqual({
          status: 200,
          body: `responder ${ACME_CHALLENGE_PREFIX}token${i}`,
          location: undefined,
        });
      // Other requests: redirected, and over the limit refused, as before.
      const first = await get(httpPort, "/page");
      expect([first.status, first.location]).toEqual([301, "https://www.example.com/page"]);
      expect((await get(httpPort, "/page")).status).toBe(429);
      expect(await get(httpPort, `${ACME_CHALLENGE_PREFIX}after`)).toMatchObject({ status: 200, body: `responder ${ACME_CHALLENGE_PREFIX}after` });
      // The https frontend serves the placeholder until the issued chain replaces the file.
      const served = await new Promise<string>((resolve, reject) => {
        const s = connect({ host: "127.0.0.1", port: httpsPort, servername: "www.example.com", rejectUnauthorized: false }, () => {
          resolve(s.getPeerX509Certificate()!.fingerprint256);
          s.end();
        });
        s.on("error", reject);
      });
      expect(served).toBe(new X509Certificate(placeholder.certificate).fingerprint256);
    } finally {
      haproxy.kill("SIGTERM");
      responder.server.close();
    }
  }, 30_000);
});
