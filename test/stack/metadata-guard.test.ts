/** The metadata-service guard's nftables text, checked by nft itself (check mode: nothing is loaded). */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { METADATA_IPV4 } from "../../agent/ports.js";
import {
  METADATA_GUARD_LOADER_PATH,
  METADATA_GUARD_SET,
  METADATA_GUARD_TABLE,
  METADATA_GUARD_UNIT,
  metadataGuardLoader,
  metadataGuardRuleset,
  metadataGuardUnit,
} from "../../components/metadata-guard.js";

const nftCheck = (text: string) => spawnSync("nft", ["-c", "-f", "-"], { input: text, encoding: "utf8", timeout: 10_000 });

describe("the metadata guard ruleset", () => {
  it("nft accepts it (check mode), alone and with the uids the loader appends", () => {
    // testbed/ensure-system.mjs installs nft; without it this fails (no skip: a guard that was never parsed proves nothing).
    const alone = nftCheck(metadataGuardRuleset());
    expect(alone.error, "nft must be installed (testbed/ensure-system.mjs)").toBeUndefined();
    expect(alone.stderr).toBe("");
    expect(alone.status).toBe(0);
    const withUids = nftCheck(metadataGuardRuleset() + `add element inet ${METADATA_GUARD_TABLE} ${METADATA_GUARD_SET} { 998, 997 }\n`);
    expect(withUids.stderr).toBe("");
    expect(withUids.status).toBe(0);
  });

  it("matches the sending socket's owner in an output chain: the allowed uids pass, every other packet to the metadata address is refused", () => {
    const r = metadataGuardRuleset();
    expect(r).toMatch(/type filter hook output priority filter; policy accept;/);
    const rules = r.split("\n").filter((l) => l.includes(`ip daddr ${METADATA_IPV4}`));
    expect(rules.map((l) => l.trim())).toEqual([
      `ip daddr ${METADATA_IPV4} meta skuid @${METADATA_GUARD_SET} accept`,
      `ip daddr ${METADATA_IPV4} meta l4proto tcp counter reject with tcp reset`,
      `ip daddr ${METADATA_IPV4} counter drop`,
    ]);
    // Root only until the loader adds the others, in the same transaction: never open by default.
    expect(r).toMatch(/elements = \{ 0 \}/);
  });

  it("the loader lets in root, fipd and do-agent only, and refuses what is not a user name", () => {
    expect(metadataGuardLoader()).toMatch(/for u in fipd do-agent; do/);
    expect(() => metadataGuardLoader(["fipd; rm -rf /"])).toThrow(/is not a user name/);
  });

  it("the boot unit passes systemd-analyze verify (with the loader at a path that exists here)", () => {
    const dir = mkdtempSync("/tmp/halb-mdg-unit-");
    try {
      const loader = join(dir, "loader");
      writeFileSync(loader, metadataGuardLoader(), { mode: 0o755 });
      const unit = join(dir, METADATA_GUARD_UNIT);
      const text = metadataGuardUnit();
      expect(text).toContain(`ExecStart=${METADATA_GUARD_LOADER_PATH}\n`);
      writeFileSync(unit, text.replace(`ExecStart=${METADATA_GUARD_LOADER_PATH}`, `ExecStart=${loader}`));
      const r = spawnSync("systemd-analyze", ["verify", unit], { encoding: "utf8", timeout: 30_000 });
      expect(r.error, "systemd-analyze must be installed").toBeUndefined();
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
