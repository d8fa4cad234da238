/**
 * Every kind of HAProxy config the stack renders, checked with `haproxy -c` by each HAProxy binary
 * given. The droplets run Ubuntu 24.04's HAProxy 2.8; CI and the test bed run Debian 12's 2.6; one
 * rendered config must be accepted by both, without a warning.
 *
 *   npx tsx testbed/haproxy-versions.ts [haproxy binary …]     (default: haproxy on PATH)
 *
 * Exits non-zero when a binary refuses a config, warns about one, or has a diagnostic remark
 * (`-dD`), printing HAProxy's output.
 * test/stack/haproxy-versions.test.ts runs the same fixtures with the haproxy on PATH.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { check, problemsOf } from "../agent/schema.js";
import { ANCHOR_PLACEHOLDER, CONFIG_ID_PLACEHOLDER, certificateFiles, renderHaproxyConfig, type HaproxyOptions } from "../components/haproxy.js";
import { FrontendsSchema, PoolsSchema, type Frontend, type Pool } from "../components/lb-config.js";
import { makePki } from "../test/stack/pki.js";

const ANCHOR = "10.20.0.5";
const README = join(__dirname, "..", "README.md");

/** The README's "typical site" (`pulumi config set ha-lb:frontends '…'` and `ha-lb:pools`), parsed by the stack's schemas. */
export function readmeSite(readme = readFileSync(README, "utf8")): { frontends: Frontend[]; pools: Record<string, Pool> } {
  const value = (key: string) => {
    const m = new RegExp(`pulumi config set ha-lb:${key} '([^']*)'`).exec(readme);
    if (!m) throw new Error(`README.md has no \`pulumi config set ha-lb:${key} '…'\` example`);
    return JSON.parse(m[1]) as unknown;
  };
  const f = check(FrontendsSchema, value("frontends"));
  const p = check(PoolsSchema, value("pools"));
  if (!f.ok || !p.ok)
    throw new Error(`README.md's example is not valid: ${problemsOf([...(f.ok ? [] : f.issues), ...(p.ok ? [] : p.issues)]).map((x) => x.message)}`);
  return { frontends: f.value, pools: p.value };
}

/**
 * A site with every option of every frontend protocol and pool (each alternative once somewhere), certificates
 * `www` and `api`; `ca` is the CA the `api` pool verifies its servers with. The one home of this site: the
 * fixtures below and test/stack/haproxy.test.ts's rendering checks use it.
 */
export function everyOptionSite(ca: string): { frontends: Frontend[]; pools: Record<string, Pool> } {
  const pools: Record<string, Pool> = {
    web: {
      servers: ["10.10.0.5:8080", "10.10.0.6:8080"],
      healthCheck: { type: "http", path: "/healthz", expectStatus: 204, intervalMs: 1500, rise: 3, fall: 2 },
      stickySessions: { cookie: "SRV" },
      timeouts: { connectMs: 3000, serverMs: 60_000, queueMs: 5000, tunnelMs: 7_200_000 },
    },
    api: { servers: ["10.10.0.7:9000"], balance: "leastconn", proxyProtocol: "v1", tls: { verify: true, ca, serverName: "api.internal" } },
    insecure: { servers: ["10.10.0.9:8443"], healthCheck: { type: "http" }, tls: { verify: false } },
    sni: { servers: ["10.10.0.10:8443"], tls: { verify: false, serverName: "legacy.internal" } },
    pass: { servers: ["10.10.0.8:443"], proxyProtocol: "v2", balance: "source", healthCheck: { type: "tcp", intervalMs: 500 } },
  };
  const frontends: Frontend[] = [
    { port: 80, protocol: "http", pool: "web", redirectToHttps: true, denyCidrs: ["192.0.2.0/24"] },
    {
      port: 443,
      protocol: "https",
      pool: "web",
      certificates: ["www", "api"],
      hsts: 31536000,
      routes: [
        { host: "api.example.com", pool: "api" },
        { host: "www.example.com", pathPrefix: "/api/", pool: "api" },
        { pathPrefix: "/legacy/", pool: "sni" },
      ],
      rateLimit: { requestsPerSecond: 50, burst: 20 },
      timeouts: { clientMs: 20_000, httpRequestMs: 5000, httpKeepAliveMs: 2000 },
    },
    {
      port: 4443,
      protocol: "https",
      pool: "insecure",
      certificates: ["api"],
      http2: false,
      allowCidrs: ["198.51.100.0/24"],
      rateLimit: { requestsPerSecond: 5 },
    },
    { port: 8443, protocol: "tcp", pool: "pass", allowCidrs: ["198.51.100.0/24"], denyCidrs: ["198.51.100.7/32"], timeouts: { clientMs: 60_000 } },
  ];
  return { frontends, pools };
}

/** Render options per fixture; `certDir` is where certificateFiles are written. */
export function haproxyFixtures(ca: string, certDir: string, stateDir: string): Record<string, HaproxyOptions> {
  const { frontends, pools } = everyOptionSite(ca);
  const site = readmeSite();
  const droplet = { certDir, maxconn: 8192, serverName: "prod-lb-blue-1" } as const;
  // The test bed's form (testbed/netbed/bed.ts): no privilege drop, no master-worker, its own socket.
  const bed = { certDir, maxconn: 2000, runAs: null, masterWorker: false, statsSocket: join(stateDir, "haproxy.sock") } as const;
  return {
    "short form (backends + listenPorts), as on a droplet": { listenPorts: [80, 443, 8080], backends: ["10.10.0.5:8080", "10.10.0.6:8080"], ...droplet },
    "README typical site, as on a droplet": { ...site, ...droplet },
    "every option, as on a droplet, metrics open to metricsCidrs": { frontends, pools, metricsCidrs: ["10.10.0.0/16"], ...droplet },
    "every option, as in the test bed": { frontends, pools, ...bed },
  };
}

export interface VersionResult {
  fixture: string;
  status: number | null;
  /** HAProxy's output (stdout and stderr). */
  out: string;
  /** The WARNING, ALERT and DIAG lines. */
  complaints: string[];
}

/** Writes the fixtures (certificates included) into a fresh /tmp/halb-haproxy-versions-* directory and runs `bin -c` on each. */
export function checkWithHaproxy(bins: readonly string[]): { version: Record<string, string>; results: Record<string, VersionResult[]> } {
  const pki = makePki(["www.example.com", "api.example.com"], 30);
  const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-versions-"));
  try {
    const fixtures = haproxyFixtures(pki.ca, dir, dir);
    const certs = { www: pki.certs["www.example.com"], api: pki.certs["api.example.com"] };
    const version: Record<string, string> = {};
    const results: Record<string, VersionResult[]> = {};
    for (const bin of bins) {
      const v = spawnSync(bin, ["-v"], { encoding: "utf8", timeout: 10_000 });
      if (v.error) throw new Error(`${bin}: cannot run it: ${v.error.message}`);
      version[bin] = /HAProxy version (\S+)/.exec(v.stdout)?.[1] ?? "unknown";
      results[bin] = Object.entries(fixtures).map(([fixture, opts], i) => {
        for (const [n, c] of Object.entries(certificateFiles(certs, opts.pools ?? {}))) writeFileSync(join(dir, n), c, { mode: 0o600 });
        const file = join(dir, `fixture-${i}.cfg`);
        writeFileSync(file, renderHaproxyConfig(opts).replaceAll(ANCHOR_PLACEHOLDER, ANCHOR).replaceAll(CONFIG_ID_PLACEHOLDER, "set.FIXTURE"));
        // -dD: HAProxy's diagnostic mode (questionable but valid settings); -dW: any warning fails the check.
        const r = spawnSync(bin, ["-c", "-dD", "-dW", "-f", file], { encoding: "utf8", timeout: 20_000 });
        const out = `${r.stdout}${r.stderr}`;
        return { fixture, status: r.status, out, complaints: out.split("\n").filter((l) => /\[(WARNING|ALERT|DIAG)\]/.test(l)) };
      });
    }
    return { version, results };
  } finally {
    pki.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  const bins = process.argv.slice(2);
  const { version, results } = checkWithHaproxy(bins.length ? bins : ["haproxy"]);
  let failed = 0;
  for (const [bin, rs] of Object.entries(results)) {
    for (const r of rs) {
      const ok = r.status === 0 && !r.complaints.length;
      if (!ok) failed++;
      console.log(`${ok ? "ok  " : "FAIL"} HAProxy ${version[bin]} (${bin}): ${r.fixture}${ok ? "" : `\n${r.out.trimEnd()}`}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}
