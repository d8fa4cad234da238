/**
 * The load balancer's own features end to end, in network namespaces (testbed/netbed/bed.ts): the
 * stack's rendered config with two certificates from a test CA, installed by the stack's script
 * (certificates on stdin), reached by a client through the Reserved IP. Needs root, ip, nft, haproxy
 * and curl, as the other e2e tests.
 */
import { createServer, type Server } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLIENT_IP, HOST_IP, NetBed, RESERVED_IP, shAsync } from "../../testbed/netbed/bed.js";
import type { Certificates, Frontend, Pool } from "../../components/lb-config.js";
import { makePki, type TestPki } from "../stack/pki.js";

let bed: NetBed;
let pki: TestPki;
let api: Server;
let tls: HttpsServer;
let pp2: NetServer;
let hc: Server;
let hcFailing = false;
let lbOpts: { frontends: Frontend[]; pools: Record<string, Pool>; certificates: Certificates };
let caFile: string;

beforeAll(async () => {
  pki = makePki(["www.example.com", "api.example.com", "backend.example.com"], 30);
  caFile = join(pki.dir, "ca.pem");
  writeFileSync(caFile, pki.ca);
  const pools: Record<string, Pool> = {
    web: { servers: ["@APP@"] },
    api: { servers: ["@API@"], healthCheck: { type: "http", path: "/" } },
    sticky: { servers: ["@APP@", "@API@"], stickySessions: { cookie: "SRV" } },
    passthrough: { servers: ["@TLS@"] },
    proxied: { servers: ["@PP2@"], proxyProtocol: "v2" },
    checked: { servers: ["@HC@"], healthCheck: { type: "http", path: "/hc", expectStatus: 200, intervalMs: 200, rise: 3, fall: 2 } },
  };
  bed = await NetBed.start({
    lbs: ["blue", "blue"],
    witness: true,
    lb: (lbOpts = {
      frontends: [
        { port: 80, protocol: "http", pool: "web", redirectToHttps: true },
        { port: 443, protocol: "https", pool: "web", certificates: ["www", "api"], hsts: 31536000, routes: [{ host: "api.example.com", pool: "api" }] },
        { port: 8080, protocol: "http", pool: "sticky" },
        { port: 8081, protocol: "http", pool: "web", denyCidrs: [`${CLIENT_IP}/32`] },
        { port: 8082, protocol: "http", pool: "web", rateLimit: { requestsPerSecond: 5 } },
        { port: 8443, protocol: "tcp", pool: "passthrough" },
        { port: 8444, protocol: "tcp", pool: "proxied" },
        { port: 8083, protocol: "http", pool: "checked" },
      ],
      pools,
      certificates: { www: pki.certs["www.example.com"], api: pki.certs["api.example.com"] },
    }),
  });
  // A second app (on the bed's host address, which exists once the bed runs), so that routing to the api pool shows in the answer.
  api = createServer((_req, res) => res.end("api\n"));
  await new Promise<void>((r, j) => (api.once("error", j), api.listen(0, HOST_IP, () => r())));
  // A TLS server with its own certificate (passthrough), and one that reads the PROXY v2 header and answers with the source it names.
  tls = createHttpsServer({ cert: pki.certs["backend.example.com"].certificate, key: pki.certs["backend.example.com"].privateKey }, (_req, res) =>
    res.end("backend\n"),
  );
  await new Promise<void>((r, j) => (tls.once("error", j), tls.listen(0, HOST_IP, () => r())));
  pp2 = createNetServer((sock) => {
    sock.once("data", (b: Buffer) => {
      // 12-byte signature, version/command, family, length; then IPv4 source and destination.
      const local = (b[12] & 0x0f) === 0;
      sock.end(local ? "local\n" : `src=${[...b.subarray(16, 20)].join(".")}\n`);
    });
    sock.on("error", () => undefined);
  });
  await new Promise<void>((r, j) => (pp2.once("error", j), pp2.listen(0, HOST_IP, () => r())));
  const addr = (srv: { address(): unknown }) => `${HOST_IP}:${(srv.address() as AddressInfo).port}`;
  // A server whose health path answers 200 or 500 as the test says.
  hc = createServer((req, res) => {
    res.statusCode = req.url === "/hc" && !hcFailing ? 200 : req.url === "/hc" ? 500 : 200;
    res.end("checked\n");
  });
  await new Promise<void>((r, j) => (hc.once("error", j), hc.listen(0, HOST_IP, () => r())));
  const real: Record<string, string> = { "@API@": addr(api), "@TLS@": addr(tls), "@PP2@": addr(pp2), "@HC@": addr(hc) };
  for (const [k, p] of Object.entries(pools)) pools[k] = { ...p, servers: p.servers!.map((x) => real[x] ?? x) };
  for (const id of ["lb-blue-1", "lb-blue-2"]) await bed.installHaproxy(id);
  for (const id of bed.nodes.keys()) await bed.startAgent(id);
  await bed.waitForStableLeader();
}, 120_000);

afterAll(async () => {
  await bed?.close();
  for (const srv of [api, tls, pp2, hc]) await new Promise<void>((r) => (srv ? srv.close(() => r()) : r()));
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

describe("pools and access control through the Reserved IP", () => {
  const plain = (args: string[]) => shAsync("ip", ["netns", "exec", "halb-cl", "curl", "-sS", "--max-time", "3", ...args]);

  it("a sticky cookie keeps one client on one server for 20 requests (without it, the pool alternates)", async () => {
    const jar = join(pki.dir, "jar.txt");
    const bodies: string[] = [];
    for (let i = 0; i < 20; i++) bodies.push((await plain(["-b", jar, "-c", jar, `http://${RESERVED_IP}:8080/`])).out.trim());
    expect(bodies).toHaveLength(20);
    expect(new Set(bodies).size, bodies.join(",")).toBe(1);
    const loose: string[] = [];
    for (let i = 0; i < 4; i++) loose.push((await plain([`http://${RESERVED_IP}:8080/`])).out.trim());
    expect(new Set(loose)).toEqual(new Set(["ok", "api"]));
  });

  it("a denied CIDR is refused; the rate limit answers 429 over requestsPerSecond + burst", async () => {
    const denied = await plain([`http://${RESERVED_IP}:8081/`]);
    expect(denied.code).not.toBe(0);
    expect((await plain([`http://${RESERVED_IP}:80/.well-known/acme-challenge/x`])).out).toBe("ok\n"); // the client itself is fine
    const urls = Array.from({ length: 12 }, () => ["-o", "/dev/null", `http://${RESERVED_IP}:8082/`]).flat();
    const codes = (await plain(["-w", "%{http_code}\n", ...urls])).out.trim().split("\n");
    expect(codes.slice(0, 5)).toEqual(["200", "200", "200", "200", "200"]);
    expect(codes).toContain("429");
  });

  it("tcp passthrough: the client sees the backend's own certificate", async () => {
    const r = await shAsync("ip", [
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
      `backend.example.com:8443:${RESERVED_IP}`,
      "https://backend.example.com:8443/",
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe("backend\n");
    expect(r.err).toMatch(/subject: CN=backend\.example\.com/);
  });

  it("a server reading the PROXY v2 header sees the client's real address", async () => {
    const script = `const s=require("net").connect(8444,"${RESERVED_IP}");let d="";s.on("data",(b)=>d+=b);s.on("end",()=>{process.stdout.write(d,()=>process.exit(0))});s.on("error",(e)=>{console.error(e.message);process.exit(1)});s.write("hi");setTimeout(()=>process.exit(2),4000)`;
    const r = await shAsync("ip", ["netns", "exec", "halb-cl", process.execPath, "-e", script]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(`src=${CLIENT_IP}\n`);
  });
});

describe("health checks through the Reserved IP", () => {
  it("a server failing its health path leaves the pool within interval × fall, and returns after rise", async () => {
    const status = async () =>
      (
        await shAsync("ip", [
          "netns",
          "exec",
          "halb-cl",
          "curl",
          "-s",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          "--max-time",
          "2",
          `http://${RESERVED_IP}:8083/`,
        ])
      ).out;
    await bed.waitFor("the checked server up", async () => (await status()) === "200", 10_000, 50);
    hcFailing = true;
    const t0 = Date.now();
    await bed.waitFor("the checked server out of the pool (503)", async () => (await status()) === "503", 5_000, 25);
    const downMs = Date.now() - t0;
    hcFailing = false;
    const t1 = Date.now();
    await bed.waitFor("the checked server back (200)", async () => (await status()) === "200", 5_000, 25);
    const upMs = Date.now() - t1;
    // interval 200 ms × fall 2 = 400 ms, × rise 3 = 600 ms; plus one interval of phase and the polling.
    expect(downMs).toBeLessThan(200 * 2 + 200 + 600);
    expect(upMs).toBeLessThan(200 * 3 + 200 + 600);
    expect(upMs).toBeGreaterThanOrEqual(200 * 2);
  });
});

describe("failover with HTTPS", () => {
  it("kill -9 of the holder (agent and HAProxy): HTTPS is served again, by another droplet, with the same certificate", async () => {
    const https = async () => {
      const r = await shAsync("ip", [
        "netns",
        "exec",
        "halb-cl",
        "curl",
        "-sS",
        "-v",
        "--max-time",
        "2",
        "--cacert",
        caFile,
        "--resolve",
        `www.example.com:443:${RESERVED_IP}`,
        "-D",
        "-",
        "-o",
        "/dev/null",
        "https://www.example.com/",
      ]);
      if (r.code !== 0) return null;
      return { servedBy: r.out.match(/^x-served-by:\s*(\S+)/im)?.[1], fingerprint: r.err.match(/subject: .*|expire date: .*/g)?.join(" ") };
    };
    const victim = bed.holder()!;
    const before = await https();
    expect(before?.servedBy).toBe(victim);
    expect(before?.fingerprint).toMatch(/subject: CN=www\.example\.com .*expire date: /);
    await bed.stopAgent(victim, "SIGKILL");
    await bed.stopHaproxy(victim);
    const after = await bed.waitFor(
      "HTTPS answered by another droplet",
      async () => {
        const r = await https();
        return r && r.servedBy !== victim ? r : null;
      },
      30_000,
      50,
    );
    expect(after.servedBy).toMatch(/^lb-blue-\d$/);
    expect(after.fingerprint).toBe(before!.fingerprint);
  });
});

describe("certificate rotation", () => {
  it("a new certificate by config change: served after the reload, and no request fails meanwhile", async () => {
    const next = makePki(["www.example.com"], 60); // a later expiry tells the two apart
    try {
      const both = join(pki.dir, "both-ca.pem");
      writeFileSync(both, pki.ca + next.ca);
      const expiry = async () => {
        const r = await shAsync("ip", [
          "netns",
          "exec",
          "halb-cl",
          "curl",
          "-sS",
          "-v",
          "--max-time",
          "2",
          "--cacert",
          both,
          "--resolve",
          `www.example.com:443:${RESERVED_IP}`,
          "-o",
          "/dev/null",
          "https://www.example.com/",
        ]);
        return r.code === 0 ? (r.err.match(/expire date: (.*)/)?.[1] ?? "?") : null;
      };
      const old = await expiry();
      expect(old).toBeTruthy();
      const seen: (string | null)[] = [];
      let stop = false;
      const loop = (async () => {
        for (let i = 0; i < 400 && !stop; i++) {
          seen.push(await expiry());
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      lbOpts.certificates = { ...lbOpts.certificates, www: next.certs["www.example.com"] };
      for (const id of ["lb-blue-1", "lb-blue-2"]) if (bed.haproxyPid(id)) await bed.installHaproxy(id);
      await bed.waitFor(
        "the new certificate served",
        async () => seen.length > 0 && seen[seen.length - 1] !== old && seen[seen.length - 1] !== null,
        10_000,
        20,
      );
      await new Promise((r) => setTimeout(r, 300));
      stop = true;
      await loop;
      expect(seen.filter((x) => x === null)).toHaveLength(0);
      expect(seen[0]).toBe(old);
      expect(seen[seen.length - 1]).not.toBe(old);
    } finally {
      next.cleanup();
    }
  });
});
