/**
 * The load balancer's own features end to end, in network namespaces (testbed/netbed/bed.ts): the
 * stack's rendered config with two certificates from a test CA, installed by the stack's script
 * (certificates on stdin), reached by a client through the Reserved IP. Needs root, ip, nft, haproxy
 * and curl, as the other e2e tests.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOST_IP, NetBed, RESERVED_IP, shAsync } from "../../testbed/netbed/bed.js";
import type { Pool } from "../../components/lb-config.js";
import { makePki, type TestPki } from "../stack/pki.js";

let bed: NetBed;
let pki: TestPki;
let api: Server;
let caFile: string;

beforeAll(async () => {
  pki = makePki(["www.example.com", "api.example.com"], 30);
  caFile = join(pki.dir, "ca.pem");
  writeFileSync(caFile, pki.ca);
  const pools: Record<string, Pool> = { web: { servers: ["@APP@"] }, api: { servers: ["@API@"], healthCheck: { type: "http", path: "/" } } };
  bed = await NetBed.start({
    lbs: ["blue", "blue"],
    witness: true,
    lb: {
      frontends: [
        { port: 80, protocol: "http", pool: "web", redirectToHttps: true },
        { port: 443, protocol: "https", pool: "web", certificates: ["www", "api"], hsts: 31536000, routes: [{ host: "api.example.com", pool: "api" }] },
      ],
      pools,
      certificates: { www: pki.certs["www.example.com"], api: pki.certs["api.example.com"] },
    },
  });
  // A second app (on the bed's host address, which exists once the bed runs), so that routing to the api pool shows in the answer.
  api = createServer((_req, res) => res.end("api\n"));
  await new Promise<void>((r, j) => (api.once("error", j), api.listen(0, HOST_IP, () => r())));
  pools.api = { ...pools.api, servers: [`${HOST_IP}:${(api.address() as AddressInfo).port}`] };
  for (const id of ["lb-blue-1", "lb-blue-2"]) await bed.installHaproxy(id);
  for (const id of bed.nodes.keys()) await bed.startAgent(id);
  await bed.waitForStableLeader();
}, 120_000);

afterAll(async () => {
  await bed?.close();
  await new Promise<void>((r) => (api ? api.close(() => r()) : r()));
  pki?.cleanup();
}, 60_000);

/** curl from the client namespace, names resolved to the Reserved IP; verbose output in err. */
const curl = (args: string[]) =>
  shAsync("ip", [
    "netns",
    "exec",
    "halb-cl",
    "curl",
    "-sS",
    "-v",
    "--max-time",
    "5",
    "--cacert",
    caFile,
    "--resolve",
    `www.example.com:443:${RESERVED_IP}`,
    "--resolve",
    `api.example.com:443:${RESERVED_IP}`,
    "--resolve",
    `www.example.com:80:${RESERVED_IP}`,
    ...args,
  ]);

describe("HTTPS through the Reserved IP", () => {
  it("two certificates chosen by SNI (verified against the test CA), h2 by ALPN, HSTS, host routing to two pools", async () => {
    const www = await curl(["-D", "-", "-w", "\\nversion=%{http_version}\\n", "https://www.example.com/"]);
    expect(www.code, www.err).toBe(0);
    expect(www.out).toMatch(/^strict-transport-security: max-age=31536000\r?$/m);
    expect(www.out).toMatch(/\nok\n/);
    expect(www.out).toContain("version=2");
    expect(www.err).toMatch(/subject: CN=www\.example\.com/);
    const a = await curl(["-w", "\\nversion=%{http_version}\\n", "https://api.example.com/"]);
    expect(a.code, a.err).toBe(0);
    expect(a.out).toMatch(/^api\n/);
    expect(a.err).toMatch(/subject: CN=api\.example\.com/);
    // http2: the default is h2; a client offering only http/1.1 gets it.
    const h1 = await curl(["--http1.1", "-w", "\\nversion=%{http_version}\\n", "https://www.example.com/"]);
    expect(h1.out).toContain("version=1.1");
  });

  it("the first certificate is the default (a client without SNI)", async () => {
    const r = await shAsync("ip", ["netns", "exec", "halb-cl", "curl", "-sS", "-v", "-k", "--max-time", "5", `https://${RESERVED_IP}/`]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/subject: CN=www\.example\.com/);
  });

  it("port 80 redirects to https permanently, except the ACME challenge path", async () => {
    const r = await curl(["-D", "-", "-o", "/dev/null", "http://www.example.com/some/path?q=1"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^HTTP\/1\.1 301/);
    expect(r.out).toMatch(/^location: https:\/\/www\.example\.com\/some\/path\?q=1\r?$/im);
    const acme = await curl(["-D", "-", "http://www.example.com/.well-known/acme-challenge/token"]);
    expect(acme.out).toMatch(/^HTTP\/1\.1 200/);
    expect(acme.out).toMatch(/\nok\n/);
  });
});
