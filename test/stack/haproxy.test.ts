/** The rendered HAProxy config and its install script, checked with the real haproxy (CI installs it). */
import { spawn, spawnSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ANCHOR_PLACEHOLDER, haproxyInstallScript, renderHaproxyConfig } from "../../components/haproxy.js";

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

/** Runs a script with sh, stdin piped, bounded. */
function sh(script: string, input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn("sh", ["-c", script]);
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
    p.on("close", (code) => (clearTimeout(t), resolve({ code, stdout, stderr })));
    p.stdin.end(input);
  });
}

beforeAll(async () => {
  // A metadata service that knows both addresses: the script must take the anchor one.
  md = createServer((req, res) => {
    if (req.url === "/metadata/v1/interfaces/public/0/anchor_ipv4/address") res.end(anchorReply);
    else if (req.url === "/metadata/v1/interfaces/public/0/ipv4/address") res.end(PUBLIC);
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

describe("haproxyInstallScript", () => {
  it("fills in the anchor from the metadata service, validates, installs, reloads; never the public IP", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-"));
    try {
      const configPath = join(dir, "haproxy.cfg");
      const script = haproxyInstallScript({ metadataUrl: mdUrl, configPath, reloadCommand: `echo reloaded > ${join(dir, "reloaded")}`, retries: 0 });
      const r = await sh(script, renderHaproxyConfig({ listenPorts: [80], backends: ["10.10.0.5:8080"] }));
      expect(r.code, r.stderr).toBe(0);
      const installed = readFileSync(configPath, "utf8");
      expect(installed).toContain(`bind ${ANCHOR}:80`);
      expect(installed).not.toContain(ANCHOR_PLACEHOLDER);
      expect(installed).not.toMatch(/0\.0\.0\.0|\*:/);
      expect(installed).not.toContain(PUBLIC);
      expect(readFileSync(join(dir, "reloaded"), "utf8").trim()).toBe("reloaded");
      expect(readdirSync(dir).sort()).toEqual(["haproxy.cfg", "reloaded"]); // no temp file left behind
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses (non-zero, nothing installed, no reload) without an anchor address or with an invalid config", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-haproxy-"));
    try {
      const configPath = join(dir, "haproxy.cfg");
      writeFileSync(configPath, "# the old config\n");
      const opts = { configPath, reloadCommand: `touch ${join(dir, "reloaded")}`, retries: 0 };
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
      expect(readFileSync(configPath, "utf8")).toBe("# the old config\n");
      expect(readdirSync(dir)).toEqual(["haproxy.cfg"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
