import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { keepalivedConfig } from "../../bench/keepalived.js";

const base = { selfIp: "198.51.100.141", peers: ["198.51.100.142"], priority: 200, checkScript: "/bin/true", notifyScript: "/bin/true" };

describe("keepalived as users set it up (benchmark baseline)", () => {
  it("copied: the tutorial's VRRPv2 defaults (advert_int 1), a 2 s track script, notify_master calling the API", () => {
    const c = keepalivedConfig({ ...base, flavor: "copied" });
    expect(c).not.toMatch(/advert_int|vrrp_version/);
    expect(c).toMatch(/interval 2\n/);
    expect(c).toContain("state MASTER");
    expect(c).toContain("notify_master /bin/true");
    expect(c).toContain("unicast_peer {\n    198.51.100.142\n  }");
  });

  it("tuned: VRRPv3, advert_int 0.1, a 1 s track script with fall 1, one placeholder VIP (v3 requires one)", () => {
    const c = keepalivedConfig({ ...base, flavor: "tuned", priority: 100 });
    expect(c).toContain("vrrp_version 3");
    expect(c).toContain("advert_int 0.1");
    expect(c).toMatch(/interval 1\n\s+fall 1/);
    expect(c).toContain("state BACKUP");
    expect(c).toContain("198.51.100.190/32 dev eth1");
    expect(c).not.toContain("auth_type"); // VRRPv3 has no authentication
  });

  it("both pass keepalived's own config check (root: in a namespace with an eth1, as on a droplet)", () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-ka-"));
    const ns = "halb-kacheck";
    execFileSync("ip", ["netns", "add", ns]);
    try {
      execFileSync("ip", ["-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"]); // this kernel has no dummy driver
      execFileSync("ip", ["-n", ns, "link", "set", "eth1", "up"]);
      for (const flavor of ["copied", "tuned"] as const) {
        const f = join(dir, `${flavor}.conf`);
        writeFileSync(f, keepalivedConfig({ ...base, flavor }));
        const r = spawnSync("ip", ["netns", "exec", ns, "keepalived", "-t", "-l", "-f", f], { encoding: "utf8" });
        const problems = `${r.stdout}${r.stderr}`.split("\n").filter(Boolean);
        if (flavor === "tuned") expect({ status: r.status, problems }).toEqual({ status: 0, problems: [] });
        // The tutorial's config has no virtual address (the API moves the IP): keepalived only warns.
        else expect(problems.every((l) => /No VIP specified; at least one is sensible/.test(l))).toBe(true);
      }
    } finally {
      execFileSync("ip", ["netns", "del", ns]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
