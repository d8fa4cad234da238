/** `fipd apply-config`, the stack's one way to write a droplet's config and secrets. */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applyConfig } from "../agent/apply-config.js";
import { loadAgentConfigFile } from "../agent/config-file.js";
import { createControlServer } from "../agent/control.js";
import { lookupGroup, lookupUser } from "../agent/safe-write.js";
import { readIdentityKeys, readSecretFile } from "../agent/secrets.js";
import { newIdentity } from "../testbed/identity.js";

/** Each member's identity, and the ones a key roll gives them. */
const ID = { b1: newIdentity(), b2: newIdentity(), w: newIdentity(), b3: newIdentity() };
const NEXT = { b1: newIdentity(), b2: newIdentity(), w: newIdentity(), b3: newIdentity() };
type Member = keyof typeof ID;
const publicKeys = (ids: readonly string[], roll = false) =>
  ids.map((id) =>
    roll ? { id, publicKey: NEXT[id as Member].publicKey, previousPublicKey: ID[id as Member].publicKey } : { id, publicKey: ID[id as Member].publicKey },
  );
const config = {
  nodeId: "w",
  membershipVersion: 1,
  activeColor: "blue",
  members: [
    { id: "b1", address: "198.51.100.11", port: 7946, role: "lb", color: "blue" },
    { id: "b2", address: "198.51.100.12", port: 7946, role: "lb", color: "blue" },
    { id: "w", address: "198.51.100.13", port: 7946, role: "witness" },
  ],
  peerAuth: { publicKeys: publicKeys(["b1", "b2", "w"]) },
};
const lbConfig = { ...config, nodeId: "b1", reservedIp: "198.51.100.7" };
/** b1's configs during a key roll: every member's new key and, as previous, its old one. */
const rolledLbConfig = { ...lbConfig, peerAuth: { publicKeys: publicKeys(["b1", "b2", "w"], true) } };
const afterRollLbConfig = { ...lbConfig, peerAuth: { publicKeys: ["b1", "b2", "w"].map((id) => ({ id, publicKey: NEXT[id as Member].publicKey })) } };
/** b1's own identity key, as the stack sends it. */
const KEY = ID.b1.privateKeyPem;
const NEW_KEY = NEXT.b1.privateKeyPem;
const payload = JSON.stringify({ config, identityKey: ID.w.privateKeyPem });
/** The base64 body of a PEM: what no message may quote. */
const keyBody = (pem: string) => pem.split("\n")[1];

let dir = "";
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Every file in the directory with its bytes, mode and owner: "nothing changed" is this, unchanged. */
const snapshot = (d: string) =>
  readdirSync(d)
    .sort()
    .map((f) => {
      const st = statSync(join(d, f));
      return { f, text: readFileSync(join(d, f), "utf8"), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    });

describe("apply-config", () => {
  it("writes the secrets 0600 owned by the service user and the config 0640 root:<its group>, in a root-owned directory", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const nobody = lookupUser("nobody")!;
    // The shared key of an earlier build: it leaves the disk with the first identity set.
    mkdirSync(etc, { mode: 0o755 });
    writeFileSync(join(etc, "peer.key"), "ab".repeat(32) + "\n", { mode: 0o600 });
    const out = await applyConfig(JSON.stringify({ config: lbConfig, token: "dop_v1_x", identityKey: KEY }), { dir: etc, owner: "nobody", reload: false });
    expect(out[0]).toContain("node b1, membership v1");
    expect(readdirSync(etc).sort()).toEqual(["fipd.yaml", "identity.key", "token"]);
    for (const f of ["token", "identity.key"]) {
      const st = statSync(join(etc, f));
      expect([st.mode & 0o777, st.uid, st.gid], f).toEqual([0o600, nobody.uid, nobody.gid]);
    }
    const cfg = statSync(join(etc, "fipd.yaml"));
    expect([cfg.mode & 0o777, cfg.uid, cfg.gid]).toEqual([0o640, 0, lookupGroup("nogroup")]);
    expect([statSync(etc).mode & 0o7777, statSync(etc).uid]).toEqual([0o755, 0]);
    expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).toContain(`keyFile: ${join(etc, "identity.key")}`);
    // What was written is what the agent loads.
    const loaded = loadAgentConfigFile(join(etc, "fipd.yaml"));
    expect(readSecretFile(loaded.api.tokenFile, "token")).toBe("dop_v1_x");
    expect(readIdentityKeys(loaded).current.text).toBe(ID.b1.publicKey);
  });

  it("refuses an owner that does not exist, before writing anything", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    await expect(applyConfig(payload, { dir: etc, owner: "halb-no-such-user", reload: false })).rejects.toThrow(
      /--owner halb-no-such-user: no such user on this host.*useradd/s,
    );
    expect(existsSync(etc)).toBe(false);
  });

  it("refuses an older member list than the config in place, or other members at the same version, naming both versions; writes nothing", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const doc = (membershipVersion: number, members = config.members) =>
      JSON.stringify({
        config: { ...config, membershipVersion, members, peerAuth: { publicKeys: publicKeys(members.map((m) => m.id)) } },
        identityKey: ID.w.privateKeyPem,
      });
    await applyConfig(doc(5), { dir: etc, owner: "root", reload: false });
    const before = readFileSync(join(etc, "fipd.yaml"), "utf8");
    const file = join(etc, "fipd.yaml").replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    await expect(applyConfig(doc(4, config.members), { dir: etc, owner: "root", reload: false })).rejects.toThrow(
      new RegExp(`membershipVersion 4 is lower than 5, ${file}'s version: refusing an older member list.*; nothing was written`),
    );
    const grown = [...config.members, { id: "b3", address: "198.51.100.14", port: 7946, role: "lb", color: "blue" }];
    await expect(applyConfig(doc(5, grown), { dir: etc, owner: "root", reload: false })).rejects.toThrow(
      /the member list changed \(b1, b2, w, b3 instead of b1, b2, w\) but membershipVersion stayed 5/,
    );
    expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).toBe(before);
    expect(readFileSync(join(etc, "identity.key"), "utf8").trim()).toBe(ID.w.privateKeyPem.trim());
    // The same list again (a reload, a key roll) and a higher version are fine.
    await applyConfig(doc(5), { dir: etc, owner: "root", reload: false });
    expect((await applyConfig(doc(6, grown), { dir: etc, owner: "root", reload: false }))[0]).toContain("membership v6");
  });

  it("refuses an identity key that is not an Ed25519 PEM, without printing it, before writing anything", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config, identityKey: "SHORTSECRET" });
    const err = await applyConfig(bad, { dir: join(dir, "etc"), reload: false }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(
      /^bad apply-config payload; nothing was written:\n  identityKey: the identity key sent to apply-config must be an Ed25519 private key in PKCS#8 PEM .*; it is not PEM$/,
    );
    expect(err?.message).not.toContain("SHORTSECRET");
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });

  it("refuses another member's private key (the witness's sent to an LB), naming both key ids, never the key", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config: lbConfig, token: "dop_v1_x", identityKey: ID.w.privateKeyPem });
    const err = await applyConfig(bad, { dir: join(dir, "etc"), reload: false }).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(err).toMatch(
      /^bad apply-config payload; nothing was written:\n  identityKey: its public key \(id [0-9a-f]{8}\) is not this node's publicKey in peerAuth\.publicKeys \(id [0-9a-f]{8}\)$/,
    );
    expect(err).not.toContain(keyBody(ID.w.privateKeyPem).slice(0, 16));
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });

  it("refuses a config the agent would reject, with the key's path", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config: { ...config, activeColor: "purple" }, identityKey: ID.w.privateKeyPem });
    await expect(applyConfig(bad, { dir: join(dir, "etc"), reload: false })).rejects.toThrow(/config\.activeColor/);
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });

  it("refuses an identity key of 40 × z and a blank token with the agent's own parsers, one line each, before anything is written", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    await applyConfig(JSON.stringify({ config: lbConfig, token: "dop_v1_good", identityKey: KEY }), { dir: etc, reload: false });
    const before = snapshot(etc);
    const bad = JSON.stringify({ config: lbConfig, token: "   \n\t ", identityKey: "z".repeat(40), previousIdentityKey: KEY, extra: 1 });
    const err = await applyConfig(bad, { dir: etc, reload: false }).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(err).toBe(
      [
        "bad apply-config payload; nothing was written:",
        "  extra: unknown field (expected config, token, identityKey, previousIdentityKey, acme)",
        "  token: the token sent to apply-config is empty",
        "  identityKey: the identity key sent to apply-config must be an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----, as @pulumi/tls privateKeyPem gives it); it is not PEM",
        "  previousIdentityKey: sent, but this node's peerAuth.publicKeys entry has no previousPublicKey",
      ].join("\n"),
    );
    expect(snapshot(etc)).toEqual(before);
    // A load-balancer without a token at all is refused too.
    await expect(applyConfig(JSON.stringify({ config: lbConfig, identityKey: KEY }), { dir: etc, reload: false })).rejects.toThrow(
      /token: required for a load-balancer node/,
    );
    expect(snapshot(etc)).toEqual(before);
  });

  it("restores the previous files when the running agent refuses the new set, and fails with the agent's reason", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const sock = join(dir, "fipd.sock");
    const first = { ...lbConfig, controlSocket: sock };
    await applyConfig(JSON.stringify({ config: first, token: "dop_v1_old", identityKey: KEY }), { dir: etc, reload: false });
    const before = snapshot(etc);
    // The agent's own control server, answering as the controller does when it refuses a reload.
    const seen: string[] = [];
    const server = await createControlServer(sock, async (req) => {
      await Promise.resolve();
      if (req.cmd !== "reload") return { error: "unexpected" };
      seen.push(readFileSync(join(etc, "token"), "utf8"));
      return { ok: false, error: "reservedIp changed from 198.51.100.7 to 198.51.100.8; restart fipd to serve another address" };
    });
    try {
      const next = JSON.stringify({
        config: { ...rolledLbConfig, controlSocket: sock, reservedIp: "198.51.100.8" },
        token: "dop_v1_new",
        identityKey: NEW_KEY,
        previousIdentityKey: KEY,
      });
      await expect(applyConfig(next, { dir: etc, reload: true })).rejects.toThrow(
        /^the running agent refused the new configuration: reservedIp changed from 198\.51\.100\.7 to 198\.51\.100\.8; restart fipd.*\nthe previous files in .* are restored/,
      );
      // The agent was asked while the new set was in place; afterwards the old set is back, byte for byte.
      expect(seen).toEqual(["dop_v1_new\n"]);
      expect(snapshot(etc)).toEqual(before);
      expect(existsSync(join(etc, "identity.key.previous"))).toBe(false);
    } finally {
      await server.close();
    }
  });

  it("upgrade from the shared-key build: a running agent of another build that cannot parse the new config keeps running, and the new set stays for its restart; the same build, or another reason, restores", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const sock = join(dir, "fipd.sock");
    const OLD_BUILD = "f988d1b46e9ba39b";
    const NEW_BUILD = "0123456789abcdef";
    // What the shared-key build left: its config (no publicKeys) and the shared key.
    mkdirSync(etc, { mode: 0o755 });
    const oldCfg = { ...lbConfig, controlSocket: sock, peerAuth: { keyFile: join(etc, "peer.key") }, api: { tokenFile: join(etc, "token") } };
    writeFileSync(join(etc, "fipd.yaml"), JSON.stringify(oldCfg) + "\n", { mode: 0o640 });
    writeFileSync(join(etc, "peer.key"), "ab".repeat(32) + "\n", { mode: 0o600 });
    writeFileSync(join(etc, "token"), "dop_v1_x\n", { mode: 0o600 });
    // The old agent as its control socket answers: its build in status; its parser refusing the new file on reload.
    let refusal = `invalid configuration in ${join(etc, "fipd.yaml")}:\n  peerAuth: has unknown key "publicKeys" (known keys: keyFile, previousKeyFile)`;
    let reloads = 0;
    const server = await createControlServer(sock, async (req) => {
      await Promise.resolve();
      if (req.cmd === "status") return { build: OLD_BUILD, membershipVersion: 1, members: lbConfig.members };
      if (req.cmd !== "reload") return { error: "unexpected" };
      reloads++;
      return { ok: false, error: refusal };
    });
    const next = JSON.stringify({ config: { ...lbConfig, controlSocket: sock }, token: "dop_v1_x", identityKey: KEY });
    try {
      const before = snapshot(etc);
      // The running agent runs this very build: its refusal stands, and the old files are back.
      await expect(applyConfig(next, { dir: etc, reload: true, build: OLD_BUILD })).rejects.toThrow(/refused the new configuration: invalid configuration in/);
      expect(snapshot(etc)).toEqual(before);
      // Another build refusing what the config asks (not its format): restored as well.
      refusal = "reservedIp changed from 198.51.100.7 to 198.51.100.8; restart fipd to serve another address";
      await expect(applyConfig(next, { dir: etc, reload: true, build: NEW_BUILD })).rejects.toThrow(/refused the new configuration: reservedIp changed/);
      expect(snapshot(etc)).toEqual(before);
      // Another build whose parser cannot read this build's config: the new set stays, for the restart.
      refusal = `invalid configuration in ${join(etc, "fipd.yaml")}:\n  peerAuth: has unknown key "publicKeys" (known keys: keyFile, previousKeyFile)`;
      const out = await applyConfig(next, { dir: etc, reload: true, build: NEW_BUILD });
      expect(reloads).toBe(3);
      expect(out).toContain(
        `the running agent (build ${OLD_BUILD}) cannot read this configuration (invalid configuration in ${join(etc, "fipd.yaml")}: peerAuth: has unknown key "publicKeys" (known keys: keyFile, previousKeyFile)); it keeps running on what it loaded, and reads the new files when the deploy restarts it on build ${NEW_BUILD}`,
      );
      expect(readdirSync(etc).sort()).toEqual(["fipd.yaml", "identity.key", "token"]);
      expect(readIdentityKeys(loadAgentConfigFile(join(etc, "fipd.yaml"))).current.text).toBe(ID.b1.publicKey);
    } finally {
      await server.close();
    }
  });

  it("keeps the new set when the running agent accepts it; a finished key roll removes the previous key file", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const sock = join(dir, "fipd.sock");
    const cfg = { ...rolledLbConfig, controlSocket: sock };
    await applyConfig(JSON.stringify({ config: cfg, token: "t", identityKey: NEW_KEY, previousIdentityKey: KEY }), { dir: etc, reload: false });
    expect(readFileSync(join(etc, "identity.key.previous"), "utf8")).toBe(KEY.trim() + "\n");
    const during = readIdentityKeys(loadAgentConfigFile(join(etc, "fipd.yaml")));
    expect([during.current.text, during.previous?.text]).toEqual([NEXT.b1.publicKey, ID.b1.publicKey]);
    const server = await createControlServer(sock, () => Promise.resolve({ ok: true }));
    try {
      const out = await applyConfig(JSON.stringify({ config: { ...afterRollLbConfig, controlSocket: sock }, token: "t", identityKey: NEW_KEY }), {
        dir: etc,
        reload: true,
      });
      expect(out).toContain("running agent reloaded the configuration");
    } finally {
      await server.close();
    }
    expect(existsSync(join(etc, "identity.key.previous"))).toBe(false);
    expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).not.toContain("previousKeyFile");
  });

  it("does not follow a link planted at identity.key, and refuses a directory the service user owns", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    mkdirSync(etc, { mode: 0o755 });
    const victim = join(dir, "shadow");
    writeFileSync(victim, "root's secret\n", { mode: 0o640 });
    symlinkSync(victim, join(etc, "identity.key"));
    await expect(applyConfig(payload, { dir: etc, owner: "nobody", reload: false })).rejects.toThrow(
      `${join(etc, "identity.key")} is a symbolic link (to ${victim}); refusing`,
    );
    expect(readFileSync(victim, "utf8")).toBe("root's secret\n");
    expect([statSync(victim).uid, statSync(victim).mode & 0o777]).toEqual([0, 0o640]);
    expect(readdirSync(etc)).toEqual(["identity.key"]);

    // /etc/fipd as cloud-init made it (owned by the service user): refused, with the fix.
    rmSync(join(etc, "identity.key"));
    chownSync(etc, lookupUser("nobody")!.uid, lookupUser("nobody")!.gid);
    await expect(applyConfig(payload, { dir: etc, owner: "nobody", reload: false })).rejects.toThrow(/is owned by uid 65534, not root.*fix: chown root:root/);
    expect(readdirSync(etc)).toEqual([]);
  });

  it("refuses stdin larger than a payload can be", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    await expect(applyConfig(" ".repeat(1024 * 1024 + 1), { dir: join(dir, "etc"), reload: false })).rejects.toThrow(/more than 1048576 bytes/);
  });
});
