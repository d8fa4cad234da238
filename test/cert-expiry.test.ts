/** fipd's certificate expiry metric: the files the HAProxy install publishes, read at scrape time. */
import { publicKeysFor } from "../testbed/identity.js";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_CERTIFICATE_FILE_BYTES, readCertificateExpiries } from "../agent/cert-expiry.js";
import { CERTIFICATE_DIR, parseAgentConfig } from "../agent/config.js";
import { createMetrics } from "../agent/metrics.js";
import { makePki, type TestPki } from "./stack/pki.js";

/** notAfter as openssl reads it, in Unix seconds: an independent reading of the same file. */
const opensslNotAfterS = (pem: string) => {
  const out = execFileSync("openssl", ["x509", "-noout", "-enddate"], { input: pem, encoding: "utf8" });
  return Math.floor(Date.parse(out.trim().replace(/^notAfter=/, "")) / 1000);
};
const firstCert = (pem: string) => pem.slice(0, pem.indexOf("-----END CERTIFICATE-----") + 25) + "\n";

let long: TestPki;
let short: TestPki;
let dir: string;
beforeAll(() => {
  long = makePki(["www.example.com", "api.example.com"], 90);
  short = makePki([], 5);
  dir = mkdtempSync(join(tmpdir(), "halb-certs-"));
});
afterAll(() => {
  long.cleanup();
  short.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("readCertificateExpiries", () => {
  it("gives each <name>.pem's earliest notAfter in its chain; skips other names; a missing directory is none", async () => {
    const www = long.certs["www.example.com"].certificate;
    writeFileSync(join(dir, "www.pem"), www);
    // A chain whose second certificate expires first: the chain breaks then, so that is its expiry.
    writeFileSync(join(dir, "api.pem"), firstCert(long.certs["api.example.com"].certificate) + short.ca);
    writeFileSync(join(dir, "ca-app.pem"), short.ca);
    writeFileSync(join(dir, ".www.pem.tmp"), "half written");
    writeFileSync(join(dir, "README"), "not a certificate");
    const got = await readCertificateExpiries(dir);
    expect(got).toEqual([
      { name: "api", notAfterS: opensslNotAfterS(short.ca) },
      { name: "ca-app", notAfterS: opensslNotAfterS(short.ca) },
      { name: "www", notAfterS: opensslNotAfterS(www) },
    ]);
    // About 90 and 5 days from now.
    const days = (s: number) => Math.round((s * 1000 - Date.now()) / 86_400_000);
    expect(got.map((c) => ("notAfterS" in c ? days(c.notAfterS) : null))).toEqual([5, 5, 90]);
    expect(await readCertificateExpiries(join(dir, "nope"))).toEqual([]);
  });

  it("reports a file it cannot use, by name and reason, and still reads the others", async () => {
    const d = mkdtempSync(join(tmpdir(), "halb-certs-bad-"));
    try {
      writeFileSync(join(d, "ok.pem"), short.ca);
      writeFileSync(join(d, "empty.pem"), "");
      writeFileSync(join(d, "garbage.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
      writeFileSync(join(d, "huge.pem"), "x".repeat(MAX_CERTIFICATE_FILE_BYTES + 1));
      mkdirSync(join(d, "dir.pem"));
      const got = await readCertificateExpiries(d);
      expect(got.map((c) => c.name)).toEqual(["dir", "empty", "garbage", "huge", "ok"]);
      expect(got[0]).toMatchObject({ error: expect.stringContaining("not a regular file") });
      expect(got[1]).toMatchObject({ error: expect.stringContaining("no PEM certificate") });
      expect(got[2]).toMatchObject({ error: expect.stringContaining(join(d, "garbage.pem")) });
      expect(got[3]).toMatchObject({ error: expect.stringMatching(/more than the 262144 a certificate chain needs/) });
      expect(got[4]).toEqual({ name: "ok", notAfterS: opensslNotAfterS(short.ca) });
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe("fipd_certificate_expiry_timestamp_seconds", () => {
  it("is exported per certificate at each scrape, following the directory's content", async () => {
    let certDir: string | undefined = dir;
    const m = createMetrics({ certificateDir: () => certDir });
    const scrape = () => m.registry.metrics();
    const text = await scrape();
    expect(text).toContain(`fipd_certificate_expiry_timestamp_seconds{name="www"} ${opensslNotAfterS(long.certs["www.example.com"].certificate)}`);
    expect(text).toContain(`fipd_certificate_expiry_timestamp_seconds{name="api"} ${opensslNotAfterS(short.ca)}`);
    expect(text).not.toMatch(/fipd_certificate_unreadable\{/);
    // A rotation: the file changes, the next scrape shows it; a removed certificate leaves the metric.
    writeFileSync(join(dir, "www.pem"), short.ca);
    rmSync(join(dir, "api.pem"));
    writeFileSync(join(dir, "bad.pem"), "no certificate here");
    const next = await scrape();
    expect(next).toContain(`fipd_certificate_expiry_timestamp_seconds{name="www"} ${opensslNotAfterS(short.ca)}`);
    expect(next).not.toContain('{name="api"}');
    expect(next).toContain('fipd_certificate_unreadable{name="bad"} 1');
    certDir = undefined;
    expect(await scrape()).not.toMatch(/fipd_certificate_(expiry_timestamp_seconds|unreadable)\{/);
  });

  it("reads metrics.certificateDir, by default where the HAProxy install publishes", () => {
    const lb = {
      nodeId: "a",
      members: [{ id: "a", address: "10.0.0.1", color: "blue" }],
      reservedIp: "203.0.113.10",
      peerAuth: { publicKeys: publicKeysFor(["a"]) },
    };
    expect(parseAgentConfig(lb).metrics.certificateDir).toBe(CERTIFICATE_DIR);
    expect(parseAgentConfig({ ...lb, metrics: { certificateDir: "/srv/certs" } }).metrics.certificateDir).toBe("/srv/certs");
    expect(() => parseAgentConfig({ ...lb, metrics: { certificateDir: "certs" } })).toThrow(/metrics.certificateDir: must be an absolute path/);
  });
});
