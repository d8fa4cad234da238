/**
 * The API token never leaves the agent: refused when malformed at load, redacted from API errors,
 * from `fipd status` (text and JSON) and from apply-config's refusals (which the deploy prints).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applyConfig } from "../agent/apply-config.js";
import type { StatusReport } from "../agent/controller.js";
import { createReservedIpClient } from "../agent/do-client.js";
import { readIdentityKeys, readSecretFile, redact, redactDeep, redactErrors } from "../agent/secrets.js";
import { newIdentity } from "../testbed/identity.js";
import { formatStatus } from "../agent/status-format.js";
import { LEADER_STATUS } from "./fixtures/status.js";

const HALF_A = "dop_v1_" + "a1".repeat(16);
const HALF_B = "b2".repeat(16);
/** A token file with a line break inside: today's loader keeps it, and fetch then quotes it in its error. */
const TOKEN_WITH_NEWLINE = `${HALF_A}\n${HALF_B}`;

let dir = "";
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const tokenFile = (content: string) => {
  dir = mkdtempSync(join(tmpdir(), "halb-secrets-"));
  const p = join(dir, "token");
  writeFileSync(p, content);
  chmodSync(p, 0o600);
  return p;
};

describe("the token when it is loaded", () => {
  it("refuses a token with a line break inside, naming the place and never the value", () => {
    const p = tokenFile(TOKEN_WITH_NEWLINE + "\n");
    let message = "";
    try {
      readSecretFile(p, "token");
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toBe(`the token file ${p} must be one line of printable ASCII without spaces; character 40 of 72 is a line break (U+000A)`);
    expect(message).not.toContain(HALF_A.slice(7));
    expect(message).not.toContain(HALF_B);
  });

  it.each([
    ["a space", "dop_v1_ab cd", "character 10 of 12 is a space or tab (U+0020)"],
    ["a tab", "ab\tcd", "character 3 of 5 is a space or tab (U+0009)"],
    ["a control character", "ab\u0001cd", "character 3 of 5 is a control character (U+0001)"],
    ["DEL", "ab\u007fcd", "character 3 of 5 is a control character (U+007F)"],
    ["a carriage return", "ab\rcd", "character 3 of 5 is a line break (U+000D)"],
    ["non-ASCII", "abécd", "character 3 of 5 is not ASCII (U+00E9)"],
  ])("refuses %s inside", (_what, token, detail) => {
    const p = tokenFile(token + "\n");
    expect(() => readSecretFile(p, "token")).toThrow(`the token file ${p} must be one line of printable ASCII without spaces; ${detail}`);
  });

  it("accepts a real-looking token with its trailing newline", () => {
    const token = "dop_v1_" + "0123456789abcdef".repeat(4);
    expect(readSecretFile(tokenFile(token + "\n"), "token")).toBe(token);
  });
});

describe("the identity key when it is loaded", () => {
  const own = newIdentity();
  const other = newIdentity();
  /** The key body (base64 inside the PEM): no error may quote any of it. */
  const body = (pem: string) => pem.split("\n")[1];
  const load = (content: string, o: { mode?: number; publicKey?: string; previous?: { content: string; publicKey?: string } } = {}) => {
    dir = mkdtempSync(join(tmpdir(), "halb-secrets-"));
    const keyFile = join(dir, "identity.key");
    writeFileSync(keyFile, content);
    chmodSync(keyFile, o.mode ?? 0o600);
    const previousKeyFile = o.previous ? join(dir, "identity.key.previous") : undefined;
    if (o.previous) writeFileSync(previousKeyFile!, o.previous.content, { mode: 0o600 });
    return readIdentityKeys({
      nodeId: "lb-1",
      peerAuth: {
        keyFile,
        ...(previousKeyFile ? { previousKeyFile } : {}),
        publicKeys: [
          { id: "lb-1", publicKey: o.publicKey ?? own.publicKey, ...(o.previous?.publicKey ? { previousPublicKey: o.previous.publicKey } : {}) },
          { id: "w", publicKey: other.publicKey },
        ],
      },
    });
  };
  const messageOf = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };

  it("loads this node's own key pair, current and previous, when they match its entry in peerAuth.publicKeys", () => {
    const prev = newIdentity();
    const k = load(own.privateKeyPem, { previous: { content: prev.privateKeyPem, publicKey: prev.publicKey } });
    expect(k.current.text).toBe(own.publicKey);
    expect(k.previous?.text).toBe(prev.publicKey);
  });

  it("refuses a key file group or others can read, one that is not an Ed25519 PKCS#8 PEM, and another member's key, never quoting it", () => {
    const m1 = messageOf(() => load(own.privateKeyPem, { mode: 0o640 }));
    expect(m1).toMatch(/identity key file .*identity\.key is readable or writable by group or others \(mode 640\); fix: chmod 600 /);
    const m2 = messageOf(() => load("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"));
    expect(m2).toMatch(/the identity key in .*identity\.key must be an Ed25519 private key in PKCS#8 PEM .*; it is a PEM "OPENSSH PRIVATE KEY"$/);
    const mangled = own.privateKeyPem.replace(body(own.privateKeyPem), body(own.privateKeyPem).slice(0, 20) + "!!");
    const m3 = messageOf(() => load(mangled));
    expect(m3).toMatch(/must be an Ed25519 private key in PKCS#8 PEM .*; its PEM does not decode$/);
    // The witness's private key on an LB: it would sign datagrams every peer drops.
    const m4 = messageOf(() => load(other.privateKeyPem));
    expect(m4).toMatch(
      /^the identity key in .*identity\.key \(public key id [0-9a-f]{8}\) does not match this node's peerAuth\.publicKeys publicKey in the config \(id [0-9a-f]{8}\)/,
    );
    const m5 = messageOf(() => load(own.privateKeyPem, { previous: { content: other.privateKeyPem } }));
    expect(m5).toMatch(/identity\.key\.previous .* does not match this node's peerAuth\.publicKeys previousPublicKey in the config \(not set\)/);
    for (const m of [m1, m2, m3, m4, m5]) {
      expect(m).not.toBe("");
      expect(m).not.toContain(body(own.privateKeyPem).slice(0, 16));
      expect(m).not.toContain(body(other.privateKeyPem).slice(0, 16));
    }
  });
});

describe("redaction", () => {
  it("an API error that quotes the token (a token loaded before this check) comes out redacted", async () => {
    // The API client itself (node:https) names the bad header, not its value.
    const raw = await createReservedIpClient({ baseUrl: "http://127.0.0.1:9", getToken: () => TOKEN_WITH_NEWLINE, requestTimeoutMs: 2_000, random: () => 0 })
      .getReservedIp("198.51.100.7")
      .then(
        () => "",
        (e: Error) => e.message,
      );
    expect(raw).not.toBe("");
    expect(raw).not.toContain(HALF_B);
    // The leak redactErrors guards against whatever the client: fetch (undici) refused such a header
    // and quoted it whole in its error.
    const quoting = {
      getReservedIp: (_ip: string): Promise<never> => Promise.reject(new Error(`Headers.append: "Bearer ${TOKEN_WITH_NEWLINE}" is an invalid header value.`)),
    };
    const safe = await redactErrors(quoting, () => [TOKEN_WITH_NEWLINE])
      .getReservedIp("198.51.100.7")
      .then(
        () => "",
        (e: Error) => e.message,
      );
    expect(safe).toContain("[redacted]");
    expect(safe).not.toContain(HALF_A.slice(7));
    expect(safe).not.toContain(HALF_B);
  });

  it("replaces known secrets and anything shaped like a DigitalOcean token, and leaves short strings alone", () => {
    expect(redact("auth failed for s3cret-value-1 and dop_v1_" + "f".repeat(64), ["s3cret-value-1", "ab", null])).toBe(
      "auth failed for [redacted] and [redacted]",
    );
  });

  // The shared report, with a keeper whose last assign failed with `error`.
  const report = (error: string): StatusReport => ({
    ...LEADER_STATUS,
    ipKeeper: {
      asserting: true,
      term: 3,
      onSelf: false,
      lastMetadataCheckAt: null,
      lastApiVerifyAt: null,
      assignInFlight: false,
      lastAssign: { outcome: "error", ms: 3, at: 1, error },
      lastError: `assign: ${error}`,
    },
  });
  const headerError = (token: string) => `POST /v2/reserved_ips/{ip}/actions: Headers.append: "Bearer ${token}" is an invalid header value.`;

  it("fipd status prints no token, and each error on its one line", () => {
    const token = "dop_v1_" + "c3".repeat(32);
    const out = formatStatus(report(headerError(`${token}\nlast error: forged line`)));
    expect(out).not.toContain(token);
    expect(out).toContain('last assign: error in 3 ms: POST /v2/reserved_ips/{ip}/actions: Headers.append: "Bearer [redacted]\\u{a}last error: forged line"');
    expect(out.split("\n").filter((l) => l.startsWith("last error:"))).toHaveLength(1);
  });

  it("fipd status names a color fallback and the keys waiting for a restart", () => {
    const plain = formatStatus(report("x"));
    expect(plain).not.toMatch(/FALLBACK|RESTART PENDING/);
    const out = formatStatus({
      ...report("x"),
      colorFallback: { color: "blue", requested: "green", forMs: 12_400, reason: "no healthy green node can take over (g1 down)" },
      restartPending: ["listen", "api"],
    });
    expect(out).toContain("FALLBACK: serving from blue instead of green for 12 s: no healthy green node can take over (g1 down)\n");
    expect(out).toContain("RESTART PENDING for listen, api: a reload cannot apply them (systemctl restart fipd)\n");
  });

  it("the agent's status answer (fipd status --json, the deploy scripts) carries no known secret", () => {
    const token = "not-a-do-shaped-token-0123";
    const st = redactDeep(report(headerError(token)), [token]);
    expect(JSON.stringify(st)).not.toContain(token);
    expect(st.ipKeeper?.lastError).toBe(`assign: ${headerError("[redacted]")}`);
    expect(st.term).toBe(3);
  });

  it("apply-config's refusal of a payload that is not JSON quotes none of it (the deploy prints it, Pulumi stores it)", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-secrets-"));
    const token = "dop_v1_" + "d4".repeat(32);
    const err = await applyConfig(`{"config": {}, "token": ${token}}`, { dir: join(dir, "etc"), reload: false }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/^stdin is not JSON \(\d+ characters\); expected the payload document$/);
    expect(err?.message).not.toContain("dop_v1");
  });
});
