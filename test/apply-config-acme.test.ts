/** `fipd apply-config` with ACME keys: validated with the agent's parsers, written 0640 root:<service group> under <dir>/acme, all or nothing. */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { applyConfig } from "../agent/apply-config.js";
import { loadAgentConfigFile } from "../agent/config-file.js";
import { createControlServer } from "../agent/control.js";
import { lookupGroup } from "../agent/safe-write.js";
import { makePki, type TestPki } from "./stack/pki.js";
import { newIdentity } from "../testbed/identity.js";

/** Each member's identity (agent/identity.ts). */
const ID = { b1: newIdentity(), b2: newIdentity(), w: newIdentity() };
const lbConfig = {
  nodeId: "b1",
  membershipVersion: 1,
  activeColor: "blue",
  reservedIp: "198.51.100.7",
  members: [
    { id: "b1", address: "198.51.100.11", port: 7946, role: "lb", color: "blue" },
    { id: "b2", address: "198.51.100.12", port: 7946, role: "lb", color: "blue" },
    { id: "w", address: "198.51.100.13", port: 7946, role: "witness" },
  ],
  peerAuth: { publicKeys: ["b1", "b2", "w"].map((id) => ({ id, publicKey: ID[id as keyof typeof ID].publicKey })) },
};
/** b1's own identity key, as the stack sends it. */
const KEY = ID.b1.privateKeyPem;
const HMAC = "c2VjcmV0LWhtYWMta2V5LWZvci1lYWItdGVzdHM";
const ecKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
const acmeSection = (eabKid?: string) => ({
  certificates: [
    { name: "site", domains: ["www.example.com"], email: "ops@example.com", directoryUrl: "https://acme.example.net/dir", ...(eabKid ? { eabKid } : {}) },
  ],
});

let pki: TestPki;
let dir = "";
beforeAll(() => (pki = makePki(["acme.example.net"], 30)));
afterAll(() => pki.cleanup());
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const snapshot = (d: string): unknown[] =>
  readdirSync(d)
    .sort()
    .flatMap((f) => {
      const st = statSync(join(d, f));
      if (st.isDirectory()) return [{ f, mode: st.mode & 0o7777 }, ...snapshot(join(d, f)).map((x) => ({ ...(x as object), in: f }))];
      return [{ f, text: readFileSync(join(d, f), "utf8"), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid }];
    });

describe("apply-config: ACME keys", () => {
  it("writes each certificate's keys 0640 root:<service group> and the directory's CA 0644 under <dir>/acme, and points the config at them", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-acme-"));
    const etc = join(dir, "etc");
    const [accountKey, key] = [ecKey(), ecKey()];
    const out = await applyConfig(
      JSON.stringify({
        config: { ...lbConfig, acme: { ...acmeSection("kid-1"), keyDir: "/elsewhere" } },
        token: "dop_v1_x",
        identityKey: KEY,
        acme: { site: { accountKey, key, eabHmacKey: HMAC, directoryCaPem: pki.ca } },
      }),
      { dir: etc, owner: "nobody", reload: false },
    );
    expect(out[0]).toContain("node b1");
    const acme = join(etc, "acme");
    expect([statSync(acme).mode & 0o7777, statSync(acme).uid]).toEqual([0o755, 0]);
    const nogroup = lookupGroup("nogroup");
    for (const [f, text] of [
      ["site.account.key", accountKey],
      ["site.key", key],
      ["site.eab", HMAC + "\n"],
    ]) {
      const st = statSync(join(acme, f));
      expect([st.mode & 0o777, st.uid, st.gid], f).toEqual([0o640, 0, nogroup]);
      expect(readFileSync(join(acme, f), "utf8"), f).toBe(text);
    }
    expect(statSync(join(acme, "site.directory-ca.pem")).mode & 0o777).toBe(0o644);
    // What was written is what the agent loads: keys found under keyDir, the CA by its file.
    const loaded = loadAgentConfigFile(join(etc, "fipd.yaml"));
    expect(loaded.acme?.keyDir).toBe(acme);
    expect(loaded.acme?.certificates[0]).toMatchObject({ name: "site", eabKid: "kid-1", directoryCaFile: join(acme, "site.directory-ca.pem") });
    expect(readFileSync(loaded.acme!.certificates[0].directoryCaFile!, "utf8")).toBe(pki.ca);
  });

  it.each([
    [
      "a key that is not a PEM private key, never shown",
      { config: { ...lbConfig, acme: acmeSection() }, acme: { site: { accountKey: "NOTAKEY-SECRET", key: ecKey() } } },
      "acme.site.accountKey: the ACME account key sent to apply-config is not one unencrypted PEM private key (-----BEGIN PRIVATE KEY----- … -----END PRIVATE KEY-----)",
    ],
    [
      "an Ed25519 key",
      {
        config: { ...lbConfig, acme: acmeSection() },
        acme: { site: { accountKey: ecKey(), key: generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }) } },
      },
      "acme.site.key: the certificate key sent to apply-config is an ed25519 key; ACME needs an EC or RSA key",
    ],
    [
      "a configured certificate without its keys",
      { config: { ...lbConfig, acme: acmeSection() } },
      "acme.site: required: config.acme names the certificate site, whose keys are missing",
    ],
    [
      "keys for a certificate the config does not name",
      { config: lbConfig, acme: { shop: { accountKey: ecKey(), key: ecKey() } } },
      "acme.shop: config.acme names no such certificate (it names none)",
    ],
    [
      "an EAB key id without its HMAC key",
      { config: { ...lbConfig, acme: acmeSection("kid-1") }, acme: { site: { accountKey: ecKey(), key: ecKey() } } },
      "acme.site.eabHmacKey: required: config.acme gives the EAB key id kid-1",
    ],
    [
      "an HMAC key that is not base64url, by its length",
      { config: { ...lbConfig, acme: acmeSection("kid-1") }, acme: { site: { accountKey: ecKey(), key: ecKey(), eabHmacKey: "not base64url SECRET" } } },
      "acme.site.eabHmacKey: the EAB HMAC key sent to apply-config must be one line of printable ASCII without spaces; character 4 of 20 is a space or tab (U+0020)",
    ],
    [
      "a directory CA that does not parse, and an unknown field",
      {
        config: { ...lbConfig, acme: acmeSection() },
        acme: { site: { accountKey: ecKey(), key: ecKey(), directoryCaPem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", chain: "x" } },
      },
      "acme.site.chain: unknown field (expected accountKey, key, eabHmacKey, directoryCaPem)\n  acme.site.directoryCaPem: certificate 1 does not parse",
    ],
  ])("refuses %s, one line each, and writes nothing", async (_what, doc, lines) => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-acme-"));
    const etc = join(dir, "etc");
    await applyConfig(JSON.stringify({ config: lbConfig, token: "dop_v1_x", identityKey: KEY }), { dir: etc, reload: false });
    const before = snapshot(etc);
    const err = await applyConfig(JSON.stringify({ token: "dop_v1_x", identityKey: KEY, ...doc }), { dir: etc, reload: false }).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(err).toBe(`bad apply-config payload; nothing was written:\n  ${lines}`);
    expect(err).not.toContain("SECRET");
    expect(snapshot(etc)).toEqual(before);
  });

  it("puts the previous keys back when the running agent refuses the new set; a certificate dropped from the config takes its files along", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-acme-"));
    const etc = join(dir, "etc");
    const sock = join(dir, "fipd.sock");
    const config = { ...lbConfig, controlSocket: sock, acme: acmeSection() };
    await applyConfig(JSON.stringify({ config, token: "t", identityKey: KEY, acme: { site: { accountKey: ecKey(), key: ecKey(), directoryCaPem: pki.ca } } }), {
      dir: etc,
      reload: false,
    });
    const before = snapshot(etc);
    let answer: { ok: boolean; error?: string } = { ok: false, error: "acme: the key of site does not match its issued chain" };
    const seen: string[] = [];
    const server = await createControlServer(sock, async (req) => {
      await Promise.resolve();
      if (req.cmd !== "reload") return { error: "unexpected" };
      seen.push(readdirSync(join(etc, "acme")).sort().join(","));
      return answer;
    });
    try {
      const next = JSON.stringify({ config, token: "t", identityKey: KEY, acme: { site: { accountKey: ecKey(), key: ecKey() } } });
      await expect(applyConfig(next, { dir: etc, reload: true })).rejects.toThrow(
        /^the running agent refused the new configuration: acme: the key of site does not match its issued chain\nthe previous files in .* are restored/,
      );
      expect(seen).toEqual(["site.account.key,site.key"]); // asked while the new set (no CA file) was in place
      expect(snapshot(etc)).toEqual(before);

      answer = { ok: true };
      await applyConfig(JSON.stringify({ config: { ...lbConfig, controlSocket: sock }, token: "t", identityKey: KEY }), { dir: etc, reload: true });
      expect(readdirSync(join(etc, "acme"))).toEqual([]);
      expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).not.toMatch(/^acme:/m);
    } finally {
      await server.close();
    }
    expect(existsSync(join(etc, "acme"))).toBe(true);
  });
});
