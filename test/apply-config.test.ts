/** `fipd apply-config`, the stack's one way to write a droplet's config and secrets. */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applyConfig } from "../agent/apply-config.js";
import { loadAgentConfigFile } from "../agent/config-file.js";
import { createControlServer } from "../agent/control.js";
import { lookupGroup, lookupUser } from "../agent/safe-write.js";
import { readPeerKeys, readSecretFile } from "../agent/secrets.js";

const config = {
  nodeId: "w",
  membershipVersion: 1,
  activeColor: "blue",
  members: [
    { id: "b1", address: "198.51.100.11", port: 7946, role: "lb", color: "blue" },
    { id: "b2", address: "198.51.100.12", port: 7946, role: "lb", color: "blue" },
    { id: "w", address: "198.51.100.13", port: 7946, role: "witness" },
  ],
};
const lbConfig = { ...config, nodeId: "b1", reservedIp: "198.51.100.7" };
const KEY = "ab".repeat(32);
const payload = JSON.stringify({ config, peerKey: "k".repeat(44) });

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
    const out = await applyConfig(JSON.stringify({ config: lbConfig, token: "dop_v1_x", peerKey: KEY }), { dir: etc, owner: "nobody", reload: false });
    expect(out[0]).toContain("node b1, membership v1");
    for (const f of ["token", "peer.key"]) {
      const st = statSync(join(etc, f));
      expect([st.mode & 0o777, st.uid, st.gid], f).toEqual([0o600, nobody.uid, nobody.gid]);
    }
    const cfg = statSync(join(etc, "fipd.yaml"));
    expect([cfg.mode & 0o777, cfg.uid, cfg.gid]).toEqual([0o640, 0, lookupGroup("nogroup")]);
    expect([statSync(etc).mode & 0o7777, statSync(etc).uid]).toEqual([0o755, 0]);
    expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).toContain(`keyFile: ${join(etc, "peer.key")}`);
    // What was written is what the agent loads.
    const loaded = loadAgentConfigFile(join(etc, "fipd.yaml"));
    expect(readSecretFile(loaded.api.tokenFile, "token")).toBe("dop_v1_x");
    expect(readPeerKeys(loaded.peerAuth).current.key.toString("hex")).toBe(KEY);
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
    const doc = (membershipVersion: number, members = config.members, peerKey = "k".repeat(44)) =>
      JSON.stringify({ config: { ...config, membershipVersion, members }, peerKey });
    await applyConfig(doc(5), { dir: etc, owner: "root", reload: false });
    const before = readFileSync(join(etc, "fipd.yaml"), "utf8");
    const file = join(etc, "fipd.yaml").replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    await expect(applyConfig(doc(4, config.members, "n".repeat(44)), { dir: etc, owner: "root", reload: false })).rejects.toThrow(
      new RegExp(`membershipVersion 4 is lower than 5, ${file}'s version: refusing an older member list.*; nothing was written`),
    );
    const grown = [...config.members, { id: "b3", address: "198.51.100.14", port: 7946, role: "lb", color: "blue" }];
    await expect(applyConfig(doc(5, grown, "n".repeat(44)), { dir: etc, owner: "root", reload: false })).rejects.toThrow(
      /the member list changed \(b1, b2, w, b3 instead of b1, b2, w\) but membershipVersion stayed 5/,
    );
    expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).toBe(before);
    expect(readFileSync(join(etc, "peer.key"), "utf8").trim()).toBe("k".repeat(44));
    // The same list again (a reload, a key roll) and a higher version are fine.
    await applyConfig(doc(5), { dir: etc, owner: "root", reload: false });
    expect((await applyConfig(doc(6, grown), { dir: etc, owner: "root", reload: false }))[0]).toContain("membership v6");
  });

  it("refuses a short peer key by its length, without printing it, before writing anything", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config, peerKey: "SHORTSECRET" });
    const err = await applyConfig(bad, { dir: join(dir, "etc"), reload: false }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/^bad apply-config payload; nothing was written:\n  peerKey: .*at least 32 bytes/);
    expect(err?.message).not.toContain("SHORTSECRET");
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });

  it("refuses a config the agent would reject, with the key's path", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config: { ...config, activeColor: "purple" }, peerKey: "k".repeat(44) });
    await expect(applyConfig(bad, { dir: join(dir, "etc"), reload: false })).rejects.toThrow(/config\.activeColor/);
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });

  it("refuses a peer key of 40 × z and a blank token with the agent's own parsers, one line each, before anything is written", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    await applyConfig(JSON.stringify({ config: lbConfig, token: "dop_v1_good", peerKey: KEY }), { dir: etc, reload: false });
    const before = snapshot(etc);
    const bad = JSON.stringify({ config: lbConfig, token: "   \n\t ", peerKey: "z".repeat(40), previousPeerKey: KEY, extra: 1 });
    const err = await applyConfig(bad, { dir: etc, reload: false }).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(err).toBe(
      [
        "bad apply-config payload; nothing was written:",
        "  extra: unknown field (expected config, token, peerKey, previousPeerKey, acme)",
        "  token: the token sent to apply-config is empty",
        "  peerKey: the peer key sent to apply-config must hold at least 32 bytes as hex (64 characters) or base64; it holds 30",
      ].join("\n"),
    );
    expect(snapshot(etc)).toEqual(before);
    // A load-balancer without a token at all is refused too.
    await expect(applyConfig(JSON.stringify({ config: lbConfig, peerKey: KEY }), { dir: etc, reload: false })).rejects.toThrow(
      /token: required for a load-balancer node/,
    );
    expect(snapshot(etc)).toEqual(before);
  });

  it("restores the previous files when the running agent refuses the new set, and fails with the agent's reason", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const sock = join(dir, "fipd.sock");
    const first = { ...lbConfig, controlSocket: sock };
    await applyConfig(JSON.stringify({ config: first, token: "dop_v1_old", peerKey: KEY }), { dir: etc, reload: false });
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
      const next = JSON.stringify({ config: { ...first, reservedIp: "198.51.100.8" }, token: "dop_v1_new", peerKey: "cd".repeat(32), previousPeerKey: KEY });
      await expect(applyConfig(next, { dir: etc, reload: true })).rejects.toThrow(
        /^the running agent refused the new configuration: reservedIp changed from 198\.51\.100\.7 to 198\.51\.100\.8; restart fipd.*\nthe previous files in .* are restored/,
      );
      // The agent was asked while the new set was in place; afterwards the old set is back, byte for byte.
      expect(seen).toEqual(["dop_v1_new\n"]);
      expect(snapshot(etc)).toEqual(before);
      expect(existsSync(join(etc, "peer.key.previous"))).toBe(false);
    } finally {
      await server.close();
    }
  });

  it("keeps the new set when the running agent accepts it; a finished key roll removes the previous key file", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const sock = join(dir, "fipd.sock");
    const cfg = { ...lbConfig, controlSocket: sock };
    await applyConfig(JSON.stringify({ config: cfg, token: "t", peerKey: "cd".repeat(32), previousPeerKey: KEY }), { dir: etc, reload: false });
    expect(readFileSync(join(etc, "peer.key.previous"), "utf8")).toBe(KEY + "\n");
    const server = await createControlServer(sock, () => Promise.resolve({ ok: true }));
    try {
      const out = await applyConfig(JSON.stringify({ config: cfg, token: "t", peerKey: "cd".repeat(32) }), { dir: etc, reload: true });
      expect(out).toContain("running agent reloaded the configuration");
    } finally {
      await server.close();
    }
    expect(existsSync(join(etc, "peer.key.previous"))).toBe(false);
    expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).not.toContain("previousKeyFile");
  });

  it("does not follow a link planted at peer.key, and refuses a directory the service user owns", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    mkdirSync(etc, { mode: 0o755 });
    const victim = join(dir, "shadow");
    writeFileSync(victim, "root's secret\n", { mode: 0o640 });
    symlinkSync(victim, join(etc, "peer.key"));
    await expect(applyConfig(payload, { dir: etc, owner: "nobody", reload: false })).rejects.toThrow(
      `${join(etc, "peer.key")} is a symbolic link (to ${victim}); refusing`,
    );
    expect(readFileSync(victim, "utf8")).toBe("root's secret\n");
    expect([statSync(victim).uid, statSync(victim).mode & 0o777]).toEqual([0, 0o640]);
    expect(readdirSync(etc)).toEqual(["peer.key"]);

    // /etc/fipd as cloud-init made it (owned by the service user): refused, with the fix.
    rmSync(join(etc, "peer.key"));
    chownSync(etc, lookupUser("nobody")!.uid, lookupUser("nobody")!.gid);
    await expect(applyConfig(payload, { dir: etc, owner: "nobody", reload: false })).rejects.toThrow(/is owned by uid 65534, not root.*fix: chown root:root/);
    expect(readdirSync(etc)).toEqual([]);
  });

  it("refuses stdin larger than a payload can be", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    await expect(applyConfig(" ".repeat(1024 * 1024 + 1), { dir: join(dir, "etc"), reload: false })).rejects.toThrow(/more than 1048576 bytes/);
  });
});
