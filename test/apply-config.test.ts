/** `fipd apply-config`, the stack's one way to write a droplet's config and secrets. */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applyConfig } from "../agent/apply-config.js";

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
const payload = JSON.stringify({ config, peerKey: "k".repeat(44) });

let dir = "";
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("apply-config", () => {
  it("writes the config and the key with mode 0600, owned by the service user", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    const out = await applyConfig(payload, { dir: etc, owner: "root", reload: false });
    expect(out[0]).toContain("node w, membership v1");
    for (const f of ["fipd.yaml", "peer.key"]) {
      const st = statSync(join(etc, f));
      expect(st.mode & 0o777, f).toBe(0o600);
      expect(st.uid, f).toBe(0);
    }
    expect(readFileSync(join(etc, "fipd.yaml"), "utf8")).toContain(`keyFile: ${join(etc, "peer.key")}`);
  });

  it("refuses an owner that does not exist, before writing anything", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const etc = join(dir, "etc");
    await expect(applyConfig(payload, { dir: etc, owner: "halb-no-such-user", reload: false })).rejects.toThrow(
      /--owner halb-no-such-user: no such user on this host.*useradd/s,
    );
    expect(existsSync(etc)).toBe(false);
  });

  it("refuses a short peer key by its length, without printing it, before writing anything", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config, peerKey: "SHORTSECRET" });
    const err = await applyConfig(bad, { dir: join(dir, "etc"), reload: false }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toBe("bad apply-config payload:\n  peerKey: must be a key of at least 32 characters, got 11 characters");
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });

  it("refuses a config the agent would reject, with the key's path", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config: { ...config, activeColor: "purple" }, peerKey: "k".repeat(44) });
    await expect(applyConfig(bad, { dir: join(dir, "etc"), reload: false })).rejects.toThrow(/activeColor/);
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });
});
