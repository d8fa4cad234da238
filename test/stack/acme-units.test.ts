/**
 * The root-run units that install fipd's issued certificates (issue 15): what the deploy writes on a
 * droplet (run for real with sh, against a stand-in systemctl), valid for systemd, and declared by
 * the stack on every LB (not the witness, which runs no HAProxy), outside cloud-init.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ACME_INSTALL_DEFAULTS, acmeInstallScript } from "../../components/haproxy.js";
import { ACME_INSTALL, acmeInstallUnits, installAcmeUnitsScript } from "../../components/scripts.js";
import { BASE_CONFIG, runProgram } from "./harness.js";

describe("installAcmeUnitsScript", () => {
  it("writes the install script (0700) and both units (0644), reloads systemd, enables the service and starts the path unit", () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-acme-units-"));
    try {
      writeFileSync(join(dir, "systemctl"), `#!/bin/sh\necho "systemctl $*" >> "${dir}/log"\n`, { mode: 0o755 });
      const paths = { script: join(dir, "lib", "acme-install.sh"), pathUnit: join(dir, "x.path"), serviceUnit: join(dir, "x.service") };
      const script = acmeInstallScript();
      const r = spawnSync("sh", ["-c", installAcmeUnitsScript(script, "/var/lib/fipd/acme", paths)], {
        encoding: "utf8",
        timeout: 10_000,
        env: { ...process.env, PATH: `${dir}:${process.env.PATH}` },
      });
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(paths.script, "utf8")).toBe(script);
      expect(statSync(paths.script).mode & 0o777).toBe(0o700);
      const units = acmeInstallUnits("/var/lib/fipd/acme", paths.script);
      expect(readFileSync(paths.pathUnit, "utf8")).toBe(units.path);
      expect(readFileSync(paths.serviceUnit, "utf8")).toBe(units.service);
      for (const f of [paths.pathUnit, paths.serviceUnit]) expect(statSync(f).mode & 0o777).toBe(0o644);
      expect(readFileSync(join(dir, "log"), "utf8").trim().split("\n")).toEqual([
        "systemctl daemon-reload",
        "systemctl enable halb-acme-install.service",
        "systemctl enable --now halb-acme-install.path",
      ]);
      expect(units.path).toContain("PathChanged=/var/lib/fipd/acme\n");
      expect(units.service).toContain(`ExecStart=/bin/sh ${paths.script}\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the units pass systemd-analyze verify", () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-acme-units-"));
    try {
      const units = acmeInstallUnits(dir, "/bin/true");
      writeFileSync(join(dir, "halb-acme-install.path"), units.path);
      writeFileSync(join(dir, "halb-acme-install.service"), units.service);
      const r = spawnSync("systemd-analyze", ["verify", "--man=no", "halb-acme-install.path", "halb-acme-install.service"], {
        cwd: dir,
        encoding: "utf8",
        timeout: 60_000,
      });
      if (r.error) throw new Error(`systemd-analyze: ${r.error.message} (install the Debian package systemd)`);
      // Complaints about units of the host (this is no booted system) are not ours.
      const ours = r.stderr.split("\n").filter((l) => l.includes("halb-acme-install"));
      expect(ours, r.stderr).toEqual([]);
      expect(r.status, r.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the stack installs the ACME units over SSH", () => {
  it("on every LB, with the install script watching fipd's state dir; not on the witness; not in userData", async () => {
    const r = await runProgram(BASE_CONFIG);
    const units = r.resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-acme-units"));
    const lbs = r.resources.filter((x) => x.type === "digitalocean:index/droplet:Droplet" && x.name.includes("-lb-"));
    expect(units.map((u) => u.name).sort()).toEqual(lbs.map((d) => `ha-lb-agent-${d.name}-acme-units`).sort());
    for (const u of units) {
      expect(u.inputs.create).toBe(installAcmeUnitsScript(acmeInstallScript(), ACME_INSTALL_DEFAULTS.stateDir));
      expect(u.inputs.create).toContain(`cat > "${ACME_INSTALL.pathUnit}.tmp"`);
      expect(u.inputs.create).toContain("systemctl enable --now halb-acme-install.path");
      expect(u.inputs.triggers).toHaveLength(1); // the droplet: a new droplet gets them too
    }
    for (const d of r.resources.filter((x) => x.type === "digitalocean:index/droplet:Droplet"))
      expect(String(d.inputs.userData ?? "")).not.toContain("halb-acme-install");
  });
});
