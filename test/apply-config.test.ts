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

  it("refuses a config the agent would reject, with the key's path", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-apply-"));
    const bad = JSON.stringify({ config: { ...config, activeColor: "purple" }, peerKey: "k".repeat(44) });
    await expect(applyConfig(bad, { dir: join(dir, "etc"), reload: false })).rejects.toThrow(/activeColor/);
    expect(existsSync(join(dir, "etc"))).toBe(false);
  });
});
