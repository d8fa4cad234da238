import { execFileSync } from "node:child_process";
import { createPrivateKey, createPublicKey, KeyObject } from "node:crypto";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AcmeStore } from "../../agent/acme/store.js";

const DAY_MS = 86_400_000;
const openssl = (args: string[], cwd: string) => execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });
const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

let dir: string;
let caPem: string;
let keys: Record<string, KeyObject>;
/** A leaf for key `key` (made once per key), SAN = `hosts`, valid for `days`, signed by the test CA, followed by the CA. */
function chain(key: "web" | "other", hosts: string[], days: number): string {
  const tag = `${key}-${hosts.join("_")}-${days}`;
  writeFileSync(join(dir, `${tag}.ext`), `subjectAltName=${hosts.map((h) => `DNS:${h}`).join(",")}\nbasicConstraints=CA:FALSE\n`);
  openssl(["req", "-new", "-key", `${key}.key`, "-out", `${tag}.csr`, "-subj", `/CN=${hosts[0]}`], dir);
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${tag}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${tag}.crt`,
      "-days",
      String(days),
      "-extfile",
      `${tag}.ext`,
    ],
    dir,
  );
  return readFileSync(join(dir, `${tag}.crt`), "utf8") + caPem;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "halb-acme-store-"));
  openssl(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "400", "-subj", "/CN=ha-lb test CA"], dir);
  caPem = readFileSync(join(dir, "ca.pem"), "utf8");
  keys = {};
  for (const k of ["web", "other"]) {
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${k}.key`], dir);
    keys[k] = createPrivateKey(readFileSync(join(dir, `${k}.key`)));
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("AcmeStore", () => {
  let now = Date.now();
  const stateDirOf = () => {
    const d = mkdtempSync(join(dir, "state-"));
    chmodSync(d, 0o700);
    return d;
  };
  const storeIn = (stateDir: string) =>
    new AcmeStore({
      stateDir,
      nowMs: () => now,
      publicKeyFor: (n) => (n === "web" ? createPublicKey(keys.web) : undefined),
      domainsFor: (n) => (n === "web" ? ["www.example.com", "example.com"] : undefined),
    });
  const hosts = ["www.example.com", "example.com"];

  it("accepts a valid chain, writes it atomically with mode 0600, and tells the listeners", () => {
    now = Date.now();
    const stateDir = stateDirOf();
    const s = storeIn(stateDir);
    const seen: string[] = [];
    s.onChange((c) => seen.push(c.sha256));
    const pem = chain("web", hosts, 30);
    expect(s.offer("web", pem, "acme")).toEqual({ accepted: true });
    const file = join(stateDir, "web.chain.pem");
    expect(readFileSync(file, "utf8")).toBe(pem);
    expect(lstatSync(file).mode & 0o777).toBe(0o600);
    // No staging file left behind.
    expect(readdirSync(stateDir)).toEqual(["web.chain.pem"]);
    const c = s.chain("web")!;
    expect(seen).toEqual([c.sha256]);
    expect(c.notAfterMs).toBeGreaterThan(now + 29 * DAY_MS);
    expect(c.notAfterMs).toBeLessThanOrEqual(now + 31 * DAY_MS);
    // A second store reads it back at boot.
    const again = storeIn(stateDir);
    again.load();
    expect(again.chains()).toEqual([c]);
    expect(again.loadProblems).toEqual([]);
  });

  it("rejects a chain for another key, for a name it does not know, or not covering the domains", () => {
    now = Date.now();
    const s = storeIn(stateDirOf());
    expect(s.offer("web", chain("other", hosts, 30), "lb-2")).toEqual({
      accepted: false,
      reason: "chain for web from lb-2: its leaf is for another key than this name's certificate key",
    });
    expect(s.offer("web", chain("web", ["www.example.com"], 30), "lb-2")).toEqual({
      accepted: false,
      reason: "chain for web from lb-2: it does not cover example.com",
    });
    expect(s.offer("api", chain("web", hosts, 30), "lb-2")).toEqual({
      accepted: false,
      reason: "chain for api from lb-2: not a configured ACME certificate name",
    });
    expect(s.offer("web", "hello", "lb-2")).toMatchObject({ accepted: false, reason: expect.stringMatching(/no PEM certificate/) });
    expect(s.offer("web", "x".repeat(70_000), "lb-2")).toMatchObject({ accepted: false, reason: expect.stringMatching(/at most 65536 bytes/) });
    // A chain whose second certificate did not sign the first.
    const [leaf] = chain("web", hosts, 30).match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n/g)!;
    expect(s.offer("web", leaf + leaf, "lb-2")).toMatchObject({ accepted: false, reason: expect.stringMatching(/not signed by certificate 2/) });
    expect(s.chains()).toEqual([]);
  });

  it("rejects an expired chain, and one not newer than the one held; accepts a newer one", () => {
    now = Date.now();
    const stateDir = stateDirOf();
    const s = storeIn(stateDir);
    const short = chain("web", hosts, 10);
    const long = chain("web", hosts, 60);
    expect(s.offer("web", long, "acme")).toEqual({ accepted: true });
    expect(s.offer("web", short, "lb-2")).toMatchObject({
      accepted: false,
      reason: expect.stringMatching(/^chain for web from lb-2: not newer than the one held/),
    });
    expect(s.offer("web", long, "lb-2")).toEqual({ accepted: false, reason: "chain for web from lb-2: already held" });
    expect(readFileSync(join(stateDir, "web.chain.pem"), "utf8")).toBe(long);
    const longer = chain("web", hosts, 90);
    expect(s.offer("web", longer, "lb-2")).toEqual({ accepted: true });
    expect(readFileSync(join(stateDir, "web.chain.pem"), "utf8")).toBe(longer);
    // Eleven days on, the 10-day chain has expired.
    now = Date.now() + 11 * DAY_MS;
    const fresh = storeIn(stateDirOf());
    expect(fresh.offer("web", short, "lb-2")).toMatchObject({ accepted: false, reason: expect.stringMatching(/^chain for web from lb-2: it expired at 20/) });
  });

  it("skips at load a chain it would not accept now, and says why", () => {
    now = Date.now();
    const stateDir = stateDirOf();
    writeFileSync(join(stateDir, "web.chain.pem"), chain("other", hosts, 30));
    writeFileSync(join(stateDir, "notes.txt"), "not a chain");
    const s = storeIn(stateDir);
    s.load();
    expect(s.chains()).toEqual([]);
    expect(s.loadProblems).toEqual([`${stateDir}/web.chain.pem: its leaf is for another key than this name's certificate key`]);
    expect(existsSync(join(stateDir, "notes.txt"))).toBe(true);
  });

  it("refuses to write into a directory others may write (fail-stop: offer throws)", () => {
    now = Date.now();
    const stateDir = join(dir, "open");
    mkdirSync(stateDir, { mode: 0o777 });
    chmodSync(stateDir, 0o777);
    expect(() => storeIn(stateDir).offer("web", chain("web", hosts, 30), "acme")).toThrow(/writable by group or others/);
  });

  it("serves tokens until they expire, and checks their shape", () => {
    now = 1_000_000;
    const s = storeIn(stateDirOf());
    const token = "tok_ABCDEFGHIJKLMNOP";
    const ka = `${token}.${"a".repeat(43)}`;
    s.putToken(token, ka, now + 60_000);
    expect(s.keyAuthorization(token)).toBe(ka);
    expect(s.keyAuthorization("tok_OTHER_OTHER_OTHER")).toBeUndefined();
    expect(s.tokens()).toEqual([{ token, keyAuthorization: ka, expiresAtMs: now + 60_000 }]);
    now += 59_999;
    expect(s.keyAuthorization(token)).toBe(ka);
    now += 1;
    expect(s.keyAuthorization(token)).toBeUndefined();
    expect(s.tokens()).toEqual([]);
    expect(() => s.putToken("short", "short." + "a".repeat(43), now + 1)).toThrow(/token must be/);
    expect(() => s.putToken(token, `tok_ZZZZZZZZZZZZZZZZ.${"a".repeat(43)}`, now + 1)).toThrow(/key authorization must be/);
  });
});
