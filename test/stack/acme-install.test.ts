/**
 * The ACME install (issue 15): the root-run script of halb-acme-install.service puts a chain fipd
 * obtained into HAProxy, and `pulumi up`'s install keeps serving it over the stack's placeholder.
 * Real HAProxy (master-worker, reloaded by SIGUSR2 as systemd does) in a temp dir, and a test CA made
 * here with openssl.
 */
import { execFileSync } from "node:child_process";
import { sh } from "../fixtures/sh.js";
import { X509Certificate } from "node:crypto";
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { connect } from "node:tls";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  HAPROXY_CONFIG_ID_PATH,
  acmeInstallScript,
  certificateFiles,
  haproxyBundle,
  haproxyInstallScript,
  renderHaproxyConfig,
} from "../../components/haproxy.js";

const DOMAIN = "www.example.com";
let md: Server;
let mdUrl: string;

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createTcpServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

/** The certificate HAProxy presents for DOMAIN on the port: its SHA-256 fingerprint. */
function served(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, servername: DOMAIN, rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve(fp);
    });
    s.setTimeout(5000, () => (s.destroy(), reject(new Error("TLS handshake timed out"))));
    s.on("error", reject);
  });
}

/** A test CA, keys and certificates, made with openssl in dir. */
function makeCa(dir: string) {
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "90", "-subj", "/CN=halb test ACME CA"]);
  writeFileSync(join(dir, "leaf.ext"), `subjectAltName=DNS:${DOMAIN}\nbasicConstraints=CA:FALSE\n`);
  let n = 0;
  return {
    key(): string {
      const f = `k${++n}.key`;
      run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f]);
      return readFileSync(join(dir, f), "utf8");
    },
    /** The stack's placeholder: self-signed, for the key. */
    placeholder(key: string, days: number): string {
      writeFileSync(join(dir, "p.key"), key);
      run(["req", "-x509", "-key", "p.key", "-out", "p.pem", "-days", String(days), "-subj", `/CN=${DOMAIN}`, "-addext", `subjectAltName=DNS:${DOMAIN}`]);
      return readFileSync(join(dir, "p.pem"), "utf8");
    },
    /** What the CA issues for the key: leaf + CA, valid for days. */
    issue(key: string, days: number): string {
      writeFileSync(join(dir, "i.key"), key);
      run(["req", "-new", "-key", "i.key", "-out", "i.csr", "-subj", `/CN=${DOMAIN}`]);
      run([
        "x509",
        "-req",
        "-in",
        "i.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "i.crt",
        "-days",
        String(days),
        "-extfile",
        "leaf.ext",
      ]);
      return readFileSync(join(dir, "i.crt"), "utf8") + readFileSync(join(dir, "ca.pem"), "utf8");
    },
  };
}
const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;

beforeAll(async () => {
  md = createServer((req, res) => {
    if (req.url === "/metadata/v1/interfaces/public/0/anchor_ipv4/address") res.end("127.0.0.1");
    else ((res.statusCode = 404), res.end());
  });
  await new Promise<void>((r) => md.listen(0, "127.0.0.1", r));
  mdUrl = `http://127.0.0.1:${(md.address() as { port: number }).port}`;
});
afterAll(() => new Promise<void>((r) => md.close(() => r())));

describe("halb-acme-install: issued chains into a real HAProxy", () => {
  it("installs a good chain (served after a confirmed reload), refuses a chain for another key and ignores an older one, each leaving the running set untouched; pulumi up's install keeps the issued chain over the placeholder", async () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-acme-install-"));
    const p = { cfg: join(dir, "haproxy.cfg"), pid: join(dir, "haproxy.pid"), log: join(dir, "haproxy.log") };
    const stateDir = join(dir, "state");
    const keyDir = join(dir, "keys");
    mkdirSync(stateDir);
    mkdirSync(keyDir);
    const [healthPort, metricsPort, httpsPort] = [await freePort(), await freePort(), await freePort()];
    try {
      const ca = makeCa(mkdtempSync(join(dir, "ca-")));
      const key = ca.key();
      writeFileSync(join(keyDir, "www.key"), key, { mode: 0o600 });
      const placeholder = ca.placeholder(key, 3650); // outlives any issued chain: the install must not compare by notAfter alone
      const opts = {
        configPath: p.cfg,
        metadataUrl: mdUrl,
        retries: 0,
        confirmTimeoutS: 5,
        acmeStateDir: stateDir,
        acmeKeyDir: keyDir,
        configIdUrl: `http://127.0.0.1:${healthPort}${HAPROXY_CONFIG_ID_PATH}`,
        reloadCommand: `if [ -s "${p.pid}" ] && kill -0 "$(cat "${p.pid}")" 2>/dev/null; then kill -USR2 "$(cat "${p.pid}")"; else nohup haproxy -W -p "${p.pid}" -f "${p.cfg}" >>"${p.log}" 2>&1 </dev/null & fi`,
        logCommand: `cat "${p.log}"`,
      };
      const pools = { web: { servers: ["127.0.0.1:9"] } };
      const bundle = haproxyBundle(
        renderHaproxyConfig({
          frontends: [{ port: httpsPort, protocol: "https", pool: "web", certificates: ["www"] }],
          pools,
          healthPort,
          metricsPort,
          statsSocket: join(dir, "admin.sock"),
          runAs: null,
          maxconn: 2000,
        }),
        certificateFiles({ www: { certificate: placeholder, privateKey: key } }, pools),
      );
      const sets = () => readdirSync(join(dir, "ha-lb"));

      // pulumi up: the placeholder is served.
      const first = await sh(haproxyInstallScript(opts), bundle);
      expect(first.code, first.stderr).toBe(0);
      expect(await served(httpsPort)).toBe(fingerprint(placeholder));
      // Nothing issued yet: nothing to do, no new set.
      const idle = await sh(acmeInstallScript(opts));
      expect(idle.code, idle.stderr).toBe(0);
      expect(idle.stdout).toContain("no newer issued certificate to install");
      const [set0] = sets();

      // fipd writes an issued chain: installed, served after the confirmed reload.
      const issued = ca.issue(key, 60);
      writeFileSync(join(stateDir, "www.chain.pem"), issued);
      const good = await sh(acmeInstallScript(opts));
      expect(good.code, good.stderr).toBe(0);
      expect(good.stdout).toMatch(/issued certificate\(s\) www installed: HAProxy config set\.\S+ running/);
      const [set1] = sets();
      expect(set1).not.toBe(set0);
      expect(readFileSync(join(dir, "ha-lb", set1, "www.pem"), "utf8")).toBe(issued + key);
      expect(await served(httpsPort)).toBe(fingerprint(issued));
      expect(readFileSync(join(dir, "ha-lb-certs", "www.pem"), "utf8")).toBe(issued); // the expiry metric sees it; no key
      const installedCfg = readFileSync(p.cfg, "utf8");

      // A chain for another key (a forged or stray one): refused with the reason, nothing changes.
      writeFileSync(join(stateDir, "www.chain.pem"), ca.issue(ca.key(), 80));
      const forged = await sh(acmeInstallScript(opts));
      expect(forged.code, forged.stderr).toBe(0);
      expect(forged.stderr).toContain(
        `www: refusing ${stateDir}/www.chain.pem: its certificate's public key does not match the key ${keyDir}/www.key; the running set is untouched`,
      );
      expect(sets()).toEqual([set1]);
      expect(readFileSync(p.cfg, "utf8")).toBe(installedCfg);
      expect(await served(httpsPort)).toBe(fingerprint(issued));

      // An older chain for the right key (ending before the one served): ignored.
      writeFileSync(join(stateDir, "www.chain.pem"), ca.issue(key, 30));
      const older = await sh(acmeInstallScript(opts));
      expect(older.code, older.stderr).toBe(0);
      expect(older.stdout).toContain("no newer issued certificate to install");
      expect(older.stderr).toBe("");
      expect(sets()).toEqual([set1]);
      expect(await served(httpsPort)).toBe(fingerprint(issued));

      // Not a certificate at all: refused.
      writeFileSync(join(stateDir, "www.chain.pem"), "garbage\n");
      const garbage = await sh(acmeInstallScript(opts));
      expect(garbage.stderr).toContain("refusing");
      expect(garbage.stderr).toContain("no certificate in it");
      expect(sets()).toEqual([set1]);

      // pulumi up again, with the placeholder in its bundle: the valid issued chain stays served.
      writeFileSync(join(stateDir, "www.chain.pem"), issued);
      const again = await sh(haproxyInstallScript(opts), bundle);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toContain("www: serving the certificate fipd obtained");
      expect(await served(httpsPort)).toBe(fingerprint(issued));
      expect(readFileSync(join(dir, "ha-lb", sets()[0], "www.pem"), "utf8")).toBe(issued + key);
    } finally {
      try {
        process.kill(Number(readFileSync(p.pid, "utf8").trim()), "SIGTERM");
      } catch {
        // never started
      }
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
