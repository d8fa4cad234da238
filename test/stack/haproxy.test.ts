/** The rendered HAProxy config and its install script, checked with the real haproxy (CI installs it). */
import { spawnSync } from "node:child_process";
import { sh } from "../fixtures/sh.js";
import { X509Certificate } from "node:crypto";
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ANCHOR_PLACEHOLDER,
  BUNDLE_FILE_MARK,
  HAPROXY_CONFIG_ID_PATH,
  certificateFiles,
  haproxyBundle,
  cookieValue,
  haproxyInstallScript,
  maxconnForSize,
  renderHaproxyConfig,
} from "../../components/haproxy.js";
import { readCertificateExpiries } from "../../agent/cert-expiry.js";
import { CERTIFICATE_DIR } from "../../agent/config.js";
import type { Frontend, Pool } from "../../components/lb-config.js";
import { everyOptionSite } from "../../testbed/haproxy-versions.js";
import { makePki, type TestPki } from "./pki.js";

const ANCHOR = "10.20.0.5";
const PUBLIC = "203.0.113.44";
let md: Server;
let mdUrl: string;
let anchorReply = ANCHOR;

/** haproxy -c on a file; fails the test (not skips) when haproxy is missing. */
function haproxyCheck(file: string): { status: number | null; out: string } {
  const r = spawnSync("haproxy", ["-c", "-f", file], { encoding: "utf8", timeout: 10_000 });
  if (r.error) throw new Error(`haproxy is required for this test (apt-get install haproxy): ${r.error.message}`);
  return { status: r.status, out: r.stdout + r.stderr };
}

beforeAll(async () => {
  // A metadata service that knows both addresses: the script must take the anchor one.
  md = createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    if (u.pathname === "/metadata/v1/interfaces/public/0/anchor_ipv4/address") res.end(anchorReply);
    // A HAProxy that took whatever config is installed at ?cfg=: answers the id written into it.
    else if (u.pathname === "/config-id")
      res.end(/string (\S+) if \{ path \/halb-config-id \}/.exec(readFileSync(u.searchParams.get("cfg")!, "utf8"))?.[1] ?? "");
    // One whose reload failed: still answers the id of an older set.
    else if (u.pathname === "/stale-id") res.end("set.OLD123");
    else if (u.pathname === "/metadata/v1/interfaces/public/0/ipv4/address") res.end(PUBLIC);
    else ((res.statusCode = 404), res.end());
  });
  await new Promise<void>((r) => md.listen(0, "127.0.0.1", r));
  mdUrl = `http://127.0.0.1:${(md.address() as { port: number }).port}`;
});
afterAll(() => new Promise<void>((r) => md.close(() => r())));

describe("renderHaproxyConfig", () => {
  const cfg = renderHaproxyConfig({ listenPorts: [80, 443], backends: ["10.10.0.5:8080", "app.internal:9000"], serverName: "dev-lb-blue-1" });

  it("binds public listeners only to the anchor placeholder; health on 127.0.0.1:8405, failing without backends", () => {
    const binds = cfg.split("\n").filter((l) => l.trim().startsWith("bind "));
    expect(binds.map((l) => l.trim())).toEqual([
      "bind 127.0.0.1:8405",
      "bind 127.0.0.1:8404",
      `bind ${ANCHOR_PLACEHOLDER}:80`,
      `bind ${ANCHOR_PLACEHOLDER}:443`,
    ]);
    expect(cfg).not.toMatch(/0\.0\.0\.0|\*:|bind :|::/);
    expect(cfg).toContain("monitor-uri /healthz");
    expect(cfg).toContain("monitor fail if { nbsrv(pool_app) lt 1 }");
    expect(cfg).toContain("stats socket /run/haproxy/admin.sock");
    expect(cfg.match(/check inter 1000ms rise 2 fall 2/g)).toHaveLength(2);
    expect(renderHaproxyConfig({ listenPorts: [80], backends: ["a:1"], healthPort: 9000 })).toContain("bind 127.0.0.1:9000");
  });

  it("is valid for haproxy -c once the anchor is filled in", () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-"));
    try {
      const file = join(dir, "haproxy.cfg");
      writeFileSync(file, cfg.replaceAll(ANCHOR_PLACEHOLDER, ANCHOR));
      const r = haproxyCheck(file);
      expect(r.status, r.out).toBe(0);
      // And the check can fail: an unresolved placeholder is not a valid address.
      writeFileSync(file, cfg);
      expect(haproxyCheck(file).status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the every-option site: https with two certificates, redirect, routes, tcp passthrough, re-encryption", () => {
  let pki: TestPki;
  let dir: string;
  beforeAll(() => {
    pki = makePki(["www.example.com", "api.example.com"], 30);
    dir = mkdtempSync(join(tmpdir(), "halb-haproxy-site-"));
  });
  afterAll(() => {
    pki.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  // The stack's every-option site (testbed/haproxy-versions.ts), read once pki exists.
  const site = () => everyOptionSite(pki.ca);
  const render = (over: Partial<Parameters<typeof renderHaproxyConfig>[0]> = {}) =>
    renderHaproxyConfig({ ...site(), certDir: dir, metricsCidrs: ["10.10.0.0/16"], maxconn: 8192, serverName: "lb-blue-1", ...over });
  const install = (cfg: string) => {
    for (const [n, c] of Object.entries(certificateFiles({ www: pki.certs["www.example.com"], api: pki.certs["api.example.com"] }, site().pools))) {
      writeFileSync(join(dir, n), c, { mode: 0o600 });
    }
    const file = join(dir, "haproxy.cfg");
    writeFileSync(file, cfg.replaceAll(ANCHOR_PLACEHOLDER, ANCHOR));
    return file;
  };

  it("is valid for haproxy -c, without a warning", () => {
    const r = haproxyCheck(install(render()));
    expect(r.status, r.out).toBe(0);
    expect(r.out).not.toMatch(/WARNING|ALERT/);
  });

  it("haproxy -c reads the certificate files: a missing one fails the check", () => {
    const file = install(render());
    rmSync(join(dir, "api.pem"));
    const r = haproxyCheck(file);
    expect(r.status).not.toBe(0);
    expect(r.out).toContain("api.pem");
  });

  it("renders each feature as HAProxy expects it", () => {
    const cfg = render();
    const has = (line: string) => expect(cfg.split("\n").map((l) => l.trim())).toContain(line);
    has(`bind ${ANCHOR_PLACEHOLDER}:443 ssl crt ${dir}/www.pem crt ${dir}/api.pem alpn h2,http/1.1`);
    has("http-request redirect scheme https code 301 unless { path_beg /.well-known/acme-challenge/ }");
    has('http-response set-header Strict-Transport-Security "max-age=31536000"');
    has("http-request set-header X-Forwarded-Proto https");
    has("option idle-close-on-response"); // a reload does not close idle keep-alive connections under the client
    has("use_backend pool_api if { req.hdr(host),field(1,:),lower -m str api.example.com }");
    has("use_backend pool_api if { req.hdr(host),field(1,:),lower -m str www.example.com } { path_beg /api/ }");
    has("tcp-request connection reject if { src 192.0.2.0/24 }");
    has("tcp-request connection reject unless { src 198.51.100.0/24 }");
    has("http-request deny deny_status 429 if { sc_http_req_rate(0) gt 70 }"); // 50/s + burst 20
    has("timeout http-request 5000ms");
    has("timeout tunnel 7200000ms");
    has("http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host localhost");
    has("http-check expect status 204");
    has("cookie SRV insert indirect nocache httponly");
    has(`server s_10_10_0_5_8080 10.10.0.5:8080 check inter 1500ms rise 3 fall 2 cookie ${cookieValue("10.10.0.5:8080")}`);
    has(
      `server s_10_10_0_7_9000 10.10.0.7:9000 check inter 2000ms rise 2 fall 3 send-proxy check-send-proxy ssl verify required ca-file ${dir}/ca-api.pem sni str(api.internal) check-sni api.internal verifyhost api.internal`,
    );
    has("server s_10_10_0_8_443 10.10.0.8:443 check inter 500ms rise 2 fall 3 send-proxy-v2 check-send-proxy");
    has("monitor fail if { nbsrv(pool_web) lt 1 } { nbsrv(pool_api) lt 1 } { nbsrv(pool_insecure) lt 1 } { nbsrv(pool_sni) lt 1 } { nbsrv(pool_pass) lt 1 }");
    has("bind 0.0.0.0:8404");
    has("tcp-request connection reject unless { src 127.0.0.0/8 10.10.0.0/16 }");
    for (const l of ["master-worker", "user haproxy", "group haproxy", "chroot /var/lib/haproxy", "maxconn 8192"]) has(l);
    // http2: false offers http/1.1 only; no metricsCidrs keeps the exporter on loopback.
    const h1 = render({ frontends: site().frontends.map((f) => (f.protocol === "https" ? { ...f, http2: false } : f)), metricsCidrs: [] });
    expect(h1).toContain(`crt ${dir}/api.pem alpn http/1.1\n`);
    expect(h1).toContain("bind 127.0.0.1:8404");
  });

  it("sticky cookie values depend on the server only: every LB renders the same", () => {
    const cookies = (c: string) => c.split("\n").filter((l) => / cookie [0-9a-f]{16}/.test(l));
    expect(cookies(render({ serverName: "lb-green-2" }))).toEqual(cookies(render()));
    expect(cookies(render())).toHaveLength(2);
    expect(cookieValue("10.10.0.5:8080")).not.toBe(cookieValue("10.10.0.6:8080"));
  });

  it("maxconn is sized from the droplet's memory", () => {
    expect(maxconnForSize("s-1vcpu-1gb")).toBe(8192);
    expect(maxconnForSize("s-1vcpu-512mb-10gb")).toBe(4096);
    expect(maxconnForSize("s-4vcpu-8gb")).toBe(65536);
  });
});

/** The earliest notAfter in a PEM chain, Unix seconds. */
const earliestS = (pem: string) =>
  Math.min(...(pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map((b) => Date.parse(new X509Certificate(b).validTo) / 1000));

/** Install options whose "running HAProxy" took the installed config (the metadata mock reads it back). */
const took = (configPath: string) => ({ configIdUrl: `${mdUrl}/config-id?cfg=${encodeURIComponent(configPath)}`, confirmTimeoutS: 3 });

describe("haproxyInstallScript", () => {
  it("fills in the anchor from the metadata service, validates, installs, reloads; never the public IP", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-"));
    try {
      const configPath = join(dir, "haproxy.cfg");
      const script = haproxyInstallScript({
        ...took(configPath),
        metadataUrl: mdUrl,
        configPath,
        reloadCommand: `echo reloaded > ${join(dir, "reloaded")}`,
        retries: 0,
      });
      const r = await sh(script, renderHaproxyConfig({ listenPorts: [80], backends: ["10.10.0.5:8080"] }));
      expect(r.code, r.stderr).toBe(0);
      const installed = readFileSync(configPath, "utf8");
      expect(installed).toContain(`bind ${ANCHOR}:80`);
      expect(installed).not.toContain(ANCHOR_PLACEHOLDER);
      expect(installed).not.toMatch(/0\.0\.0\.0|\*:/);
      expect(installed).not.toContain(PUBLIC);
      expect(readFileSync(join(dir, "reloaded"), "utf8").trim()).toBe("reloaded");
      expect(readdirSync(dir).sort()).toEqual(["ha-lb", "ha-lb-certs", "haproxy.cfg", "reloaded"]); // no temp file left behind
      expect(readdirSync(join(dir, "ha-lb"))).toHaveLength(1); // the one set in use
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses (non-zero, nothing installed, no reload) without an anchor address or with an invalid config", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-"));
    try {
      const configPath = join(dir, "haproxy.cfg");
      writeFileSync(configPath, "# the old config\n");
      const opts = { ...took(configPath), configPath, reloadCommand: `touch ${join(dir, "reloaded")}`, retries: 0 };
      const good = renderHaproxyConfig({ listenPorts: [80], backends: ["10.10.0.5:8080"] });
      const unreachable = await sh(haproxyInstallScript({ ...opts, metadataUrl: "http://127.0.0.1:9" }), good);
      expect(unreachable.code).not.toBe(0);
      expect(unreachable.stderr).toContain("no anchor IPv4");
      anchorReply = "";
      const empty = await sh(haproxyInstallScript({ ...opts, metadataUrl: mdUrl }), good);
      anchorReply = ANCHOR;
      expect(empty.code).not.toBe(0);
      const invalid = await sh(haproxyInstallScript({ ...opts, metadataUrl: mdUrl }), good.replace("balance roundrobin", "balance nonsense"));
      expect(invalid.code).not.toBe(0);
      expect(invalid.stderr).toMatch(/haproxy -c refused the new config; the running one is untouched:\n[\s\S]*balance only supports/);
      expect(readFileSync(configPath, "utf8")).toBe("# the old config\n");
      expect(readdirSync(dir).sort()).toEqual(["ha-lb", "haproxy.cfg"]);
      expect(readdirSync(join(dir, "ha-lb"))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("installs certificates from the bundle (0600 in a new 0700 set) with the config; a set failing haproxy -c leaves the running one untouched", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-"));
    const pki = makePki(["www.example.com", "api.example.com"], 30);
    try {
      const configPath = join(dir, "haproxy.cfg");
      const opts = { ...took(configPath), configPath, metadataUrl: mdUrl, reloadCommand: `echo reloaded >> ${join(dir, "reloads")}`, retries: 0 };
      const frontends: Frontend[] = [{ port: 443, protocol: "https", pool: "web", certificates: ["www", "api"] }];
      const pools: Record<string, Pool> = { web: { servers: ["10.10.0.5:8080"] } };
      const cfg = renderHaproxyConfig({ frontends, pools, runAs: null });
      const certs = { www: pki.certs["www.example.com"], api: pki.certs["api.example.com"] };
      const ok = await sh(haproxyInstallScript(opts), haproxyBundle(cfg, certificateFiles(certs, pools)));
      expect(ok.code, ok.stderr).toBe(0);
      const [set] = readdirSync(join(dir, "ha-lb"));
      const setDir = join(dir, "ha-lb", set);
      expect(statSync(setDir).mode & 0o777).toBe(0o700);
      expect(readdirSync(setDir).sort()).toEqual(["api.pem", "www.pem"]);
      for (const f of ["api.pem", "www.pem"]) expect(statSync(join(setDir, f)).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(setDir, "www.pem"), "utf8")).toBe(certs.www.certificate + certs.www.privateKey);
      const installed = readFileSync(configPath, "utf8");
      expect(installed).toContain(`bind ${ANCHOR}:443 ssl crt ${setDir}/www.pem crt ${setDir}/api.pem alpn h2,http/1.1`);
      expect(installed).not.toContain("PRIVATE KEY");
      expect(ok.stdout + ok.stderr).not.toContain("PRIVATE KEY");

      // A key that does not match its certificate: haproxy -c refuses, its message is shown, nothing changes.
      const bad = { www: { ...certs.www, privateKey: certs.api.privateKey }, api: certs.api };
      const refused = await sh(haproxyInstallScript(opts), haproxyBundle(cfg, certificateFiles(bad, pools)));
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/haproxy -c refused the new config; the running one is untouched:\n[\s\S]*www\.pem/);
      expect(refused.stderr).not.toContain("PRIVATE KEY");
      expect(readFileSync(configPath, "utf8")).toBe(installed);
      expect(readdirSync(join(dir, "ha-lb"))).toEqual([set]);
      expect(readFileSync(join(setDir, "www.pem"), "utf8")).toBe(certs.www.certificate + certs.www.privateKey);
      expect(readFileSync(join(dir, "reloads"), "utf8")).toBe("reloaded\n");

      // A rotation: a new set, the config points at it, the old set is gone after the reload.
      const rotated = await sh(haproxyInstallScript(opts), haproxyBundle(cfg, certificateFiles({ www: certs.api, api: certs.www }, pools)));
      expect(rotated.code, rotated.stderr).toBe(0);
      const sets = readdirSync(join(dir, "ha-lb"));
      expect(sets).toHaveLength(1);
      expect(sets[0]).not.toBe(set);
      expect(readFileSync(configPath, "utf8")).toContain(`crt ${join(dir, "ha-lb", sets[0])}/www.pem`);
      // The running set's chains (never a key) are published 0644 for fipd's expiry metric; a removed certificate leaves.
      const pub = join(dir, "ha-lb-certs");
      expect(statSync(pub).mode & 0o777).toBe(0o755);
      expect(readdirSync(pub).sort()).toEqual(["api.pem", "www.pem"]);
      expect(readFileSync(join(pub, "www.pem"), "utf8")).toBe(certs.api.certificate);
      for (const f of ["api.pem", "www.pem"]) expect(statSync(join(pub, f)).mode & 0o777).toBe(0o644);
      expect(await readCertificateExpiries(pub)).toEqual([
        { name: "api", notAfterS: earliestS(certs.www.certificate) },
        { name: "www", notAfterS: earliestS(certs.api.certificate) },
      ]);
      // By default, where fipd looks (metrics.certificateDir's default).
      expect(haproxyInstallScript()).toContain(`mkdir -p "${CERTIFICATE_DIR}"`);
      const cfgWwwOnly = renderHaproxyConfig({ frontends: [{ ...frontends[0], certificates: ["www"] }], pools, runAs: null });
      const fewer = await sh(haproxyInstallScript(opts), haproxyBundle(cfgWwwOnly, certificateFiles({ www: certs.www }, pools)));
      expect(fewer.code, fewer.stderr).toBe(0);
      expect(readdirSync(pub)).toEqual(["www.pem"]);
      expect(readFileSync(join(pub, "www.pem"), "utf8")).toBe(certs.www.certificate);
      expect(() => haproxyBundle(cfg, { "../x": "y" })).toThrow(/bad file name/);
      expect(() => haproxyBundle(cfg, { x: `${BUNDLE_FILE_MARK}haproxy.cfg\n` })).toThrow(/file mark/);
    } finally {
      pki.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("haproxyInstallScript confirms that HAProxy took the new config", () => {
  it("a reload that exits 0 while the running HAProxy keeps its old config fails the install and puts the previous config back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-"));
    try {
      const configPath = join(dir, "haproxy.cfg");
      const base = { configPath, metadataUrl: mdUrl, retries: 0, confirmTimeoutS: 2, logCommand: `echo "the log since $since"` };
      const first = renderHaproxyConfig({ listenPorts: [80], backends: ["10.10.0.5:8080"] });
      const ok = await sh(haproxyInstallScript({ ...base, ...took(configPath), reloadCommand: "true" }), first);
      expect(ok.code, ok.stderr).toBe(0);
      const installed = readFileSync(configPath, "utf8");
      const [set] = readdirSync(join(dir, "ha-lb"));
      expect(installed).toContain(`string ${set} if { path ${HAPROXY_CONFIG_ID_PATH} }`);
      expect(ok.stdout).toContain(`HAProxy config ${set} installed and running`);

      const second = renderHaproxyConfig({ listenPorts: [80, 8080], backends: ["10.10.0.5:8080"] });
      for (const [reloadCommand, why] of [
        ["true", "the reload command exited 0"],
        ["exit 3", "the reload command failed"],
      ]) {
        const r = await sh(haproxyInstallScript({ ...base, configIdUrl: `${mdUrl}/stale-id`, reloadCommand }), second);
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(
          new RegExp(`HAProxy did not take the new config within 2 s \\(${why}; the running one answers config id '(set\\.OLD123|none)'`),
        );
        expect(r.stderr).toMatch(/the previous config is back in place. HAProxy's log since the reload:\nthe log since \d+\n/);
        expect(readFileSync(configPath, "utf8")).toBe(installed);
        expect(readdirSync(join(dir, "ha-lb"))).toEqual([set]); // the running set kept, the new one removed
        expect(readdirSync(dir).sort()).toEqual(["ha-lb", "ha-lb-certs", "haproxy.cfg"]); // no temp or backup file left
      }
      // A config that does not answer its id cannot be confirmed: refused before anything changes.
      const noId = await sh(haproxyInstallScript({ ...base, ...took(configPath), reloadCommand: "true" }), second.replace(/^.*halb-config-id.*$/m, ""));
      expect(noId.code).not.toBe(0);
      expect(noId.stderr).toContain("does not answer its id");
      expect(readFileSync(configPath, "utf8")).toBe(installed);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("real HAProxy (master-worker, reloaded by SIGUSR2 as systemd does): a bind error after haproxy -c passed fails the install with HAProxy's message", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-reload-"));
    const freePort = () =>
      new Promise<number>((resolve) => {
        const s = createTcpServer().listen(0, "127.0.0.1", () => {
          const { port } = s.address() as { port: number };
          s.close(() => resolve(port));
        });
      });
    const [healthPort, metricsPort, portA, portB] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const holder = createTcpServer();
    const p = { cfg: join(dir, "haproxy.cfg"), pid: join(dir, "haproxy.pid"), log: join(dir, "haproxy.log") };
    anchorReply = "127.0.0.1";
    try {
      const opts = {
        configPath: p.cfg,
        metadataUrl: mdUrl,
        retries: 0,
        confirmTimeoutS: 5,
        configIdUrl: `http://127.0.0.1:${healthPort}${HAPROXY_CONFIG_ID_PATH}`,
        // First run starts the master in the background (its output to a file); later runs signal it, as `systemctl reload` does.
        reloadCommand: `if [ -s "${p.pid}" ] && kill -0 "$(cat "${p.pid}")" 2>/dev/null; then kill -USR2 "$(cat "${p.pid}")"; else nohup haproxy -W -p "${p.pid}" -f "${p.cfg}" >>"${p.log}" 2>&1 </dev/null & fi`,
        logCommand: `cat "${p.log}"`,
      };
      const render = (listenPorts: number[]) =>
        renderHaproxyConfig({
          listenPorts,
          backends: ["127.0.0.1:9"],
          healthPort,
          metricsPort,
          statsSocket: join(dir, "admin.sock"),
          runAs: null,
          maxconn: 2000,
        });
      const idNow = async () => (await fetch(`http://127.0.0.1:${healthPort}${HAPROXY_CONFIG_ID_PATH}`)).text();

      const first = await sh(haproxyInstallScript(opts), render([portA]));
      expect(first.code, first.stderr).toBe(0);
      const [set1] = readdirSync(join(dir, "ha-lb"));
      expect(await idNow()).toBe(set1);
      const installed = readFileSync(p.cfg, "utf8");

      // Another process holds portB: haproxy -c passes (it binds nothing), the reload cannot bind.
      await new Promise<void>((r) => holder.listen(portB, "127.0.0.1", r));
      const both = render([portA, portB]);
      const failed = await sh(haproxyInstallScript(opts), both);
      expect(failed.code).not.toBe(0);
      expect(failed.stderr).toContain(
        `HAProxy did not take the new config within 5 s (the reload command exited 0; the running one answers config id '${set1}'`,
      );
      expect(failed.stderr).toMatch(new RegExp(`cannot bind socket \\(Address already in use\\) for \\[127\\.0\\.0\\.1:${portB}\\]`));
      expect(readFileSync(p.cfg, "utf8")).toBe(installed);
      expect(readdirSync(join(dir, "ha-lb"))).toEqual([set1]);
      expect(await idNow()).toBe(set1); // the old workers still serve

      // The port freed, the same config goes in.
      await new Promise<void>((r) => holder.close(() => r()));
      const ok = await sh(haproxyInstallScript(opts), both);
      expect(ok.code, ok.stderr).toBe(0);
      const [set2] = readdirSync(join(dir, "ha-lb"));
      expect(set2).not.toBe(set1);
      expect(await idNow()).toBe(set2);
    } finally {
      anchorReply = ANCHOR;
      if (holder.listening) holder.close();
      try {
        process.kill(Number(readFileSync(p.pid, "utf8").trim()), "SIGTERM");
      } catch {
        // never started
      }
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
