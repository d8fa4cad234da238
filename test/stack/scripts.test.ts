/**
 * The generated droplet scripts, run for real with sh against a stand-in `fipd` and service manager
 * (the namespace tests run them against the real agent over SSH).
 */
import { newIdentity } from "../../testbed/identity.js";
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, symlinkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildAgentBundle } from "../../agent/build.js";
import {
  applyConfigCommand,
  bundlePath,
  deleteScript,
  leaderRestartScript,
  rollingRestartScript,
  switchColorCheckScript,
  type ScriptOptions,
} from "../../components/scripts.js";

const SHA = "0123456789abcdef".repeat(4);
let dir: string;
let so: ScriptOptions;

/**
 * A fake agent bundle: logs its arguments; `status --json` prints $DIR/status.json, `status` prints
 * $DIR/status.txt (if there); `--wait-healthy`
 * exits with $DIR/healthy-rc; `handover` moves $DIR/after-handover.json into place. The scripts reach
 * it through the same wrapper and symlink they set up on a droplet.
 */
function fakeBundle(d: string): string {
  return `const fs = require("fs"); const d = ${JSON.stringify(d)}; const a = process.argv.slice(2);
fs.appendFileSync(d + "/log", "fipd " + a.join(" ") + "\\n");
if (a[0] === "status" && a[1] === "--json") process.stdout.write(fs.readFileSync(d + "/status.json", "utf8"));
else if (a[0] === "status" && a.length === 1 && fs.existsSync(d + "/status.txt")) process.stdout.write(fs.readFileSync(d + "/status.txt", "utf8"));
else if (a[0] === "status" && a[1] === "--wait-healthy") process.exitCode = fs.existsSync(d + "/healthy-rc") ? Number(fs.readFileSync(d + "/healthy-rc", "utf8")) : 0;
else if (a[0] === "handover" && fs.existsSync(d + "/after-handover.json")) fs.copyFileSync(d + "/after-handover.json", d + "/status.json");
`;
}
const status = (s: Record<string, unknown>) => writeFileSync(join(dir, "status.json"), JSON.stringify(s, null, 2));
const run = (script: string) => spawnSync("sh", ["-c", script], { encoding: "utf8", timeout: 20_000 });
const log = () => (existsSync(join(dir, "log")) ? readFileSync(join(dir, "log"), "utf8").trim().split("\n") : []);

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "halb-scripts-"));
  mkdirSync(join(dir, "opt"));
  writeFileSync(bundlePath(SHA, join(dir, "opt")), fakeBundle(dir));
  const fipd = join(dir, "fipd");
  // What installAgentScript leaves behind, for the scripts that run after it.
  symlinkSync(bundlePath(SHA, join(dir, "opt")), join(dir, "opt", "fipd.cjs"));
  writeFileSync(fipd, `#!/bin/sh\nexec "${process.execPath}" "${join(dir, "opt", "fipd.cjs")}" "$@"\n`, { mode: 0o755 });
  so = {
    node: process.execPath,
    fipdDir: join(dir, "opt"),
    fipd,
    etcDir: join(dir, "etc"),
    service: {
      isActive: `test -f "${dir}/active"`,
      restart: `echo "service restart" >> "${dir}/log"; touch "${dir}/active"`,
      stop: `echo "service stop" >> "${dir}/log"; rm -f "${dir}/active"`,
      install: `echo "service install" >> "${dir}/log"`,
    },
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("rollingRestartScript", () => {
  it("first start on a droplet: installs and starts, no handover, no waiting for a majority", () => {
    const r = run(rollingRestartScript(SHA, 120, so));
    expect(r.status, r.stderr).toBe(0);
    expect(log()).toEqual(["service install", expect.stringMatching(/^fipd check-config .*fipd\.yaml$/), "service restart"]);
  });

  it("a leader is left running for the second pass: installed, checked, not handed over, not restarted", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "leader", build: "ffffffffffffffff" });
    const r = run(rollingRestartScript(SHA, 90, so));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`its restart waits for the second pass, when the other droplets run build ${SHA.slice(0, 16)}`);
    expect(log().filter((l) => !l.startsWith("fipd status --json"))).toEqual(["service install", expect.stringMatching(/^fipd check-config/)]);
  });

  it("a follower restarts without a handover; an unhealthy cluster afterwards fails the step", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "follower" });
    writeFileSync(join(dir, "healthy-rc"), "1");
    const r = run(rollingRestartScript(SHA, 5, so));
    expect(r.status).not.toBe(0);
    expect(log()).not.toContain("fipd handover");
    expect(log()).toContain("service restart");
  });
});

describe("leaderRestartScript (second pass)", () => {
  it("a leader still on the old build hands over, preferring the new build, then restarts and waits", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "leader", build: "ffffffffffffffff" });
    const r = run(leaderRestartScript(SHA, 90, so));
    expect(r.status, r.stderr).toBe(0);
    expect(log().filter((l) => !l.startsWith("fipd status --json"))).toEqual([
      `fipd handover --prefer-build ${SHA.slice(0, 16)}`,
      "service restart",
      "fipd status --wait-healthy --timeout 90",
    ]);
  });

  it("an agent that cannot say which build it runs is restarted (a follower: without a handover)", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "follower" });
    const r = run(leaderRestartScript(SHA, 90, so));
    expect(r.status, r.stderr).toBe(0);
    expect(log().filter((l) => !l.startsWith("fipd status --json"))).toEqual(["service restart", "fipd status --wait-healthy --timeout 90"]);
  });

  it("does nothing where the agent already runs the build, or does not run at all", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "leader", build: SHA.slice(0, 16) });
    expect(run(leaderRestartScript(SHA, 90, so)).stdout).toContain("already runs build");
    rmSync(join(dir, "active"));
    expect(run(leaderRestartScript(SHA, 90, so)).stdout).toContain("not running on this droplet");
    expect(log().filter((l) => !l.startsWith("fipd status --json"))).toEqual([]);
  });
});

describe("switchColorCheckScript", () => {
  it("fails, with the agents' reason, when the switch stays pending past the deadline", () => {
    status({ requestedColor: "green", colorInForce: "blue", pendingSwitch: "no healthy green node" });
    const r = run(switchColorCheckScript("green", 1, so));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/switch to green not done within 1 s: requested green, in force blue, pending: no healthy green node/);
  });

  it("fails when the agents never got the new color (requested is still the old one)", () => {
    status({ requestedColor: "blue", colorInForce: "blue", pendingSwitch: null });
    const r = run(switchColorCheckScript("green", 1, so));
    expect(r.status).toBe(1);
  });

  it("succeeds once the color is in force, nothing pending, and the cluster is healthy", () => {
    status({ requestedColor: "green", colorInForce: "green", pendingSwitch: null });
    const r = run(switchColorCheckScript("green", 5, so));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("green is in force");
    expect(r.stdout).not.toContain("peer key");
  });

  it("after a key roll, prints when the previous peer key was retired (the agent's status line)", () => {
    const keys = { current: "0badc0de", previous: null, waitingFor: [], retired: { keyId: "5eed1e55", at: "2026-12-03T08:30:00.000Z" } };
    status({ requestedColor: "green", colorInForce: "green", pendingSwitch: null, peerKeys: keys });
    const line = "previous peer key 5eed1e55 retired at 2026-12-03T08:30:00.000Z: every member signs with 0badc0de";
    writeFileSync(join(dir, "status.txt"), `node b1: leader, term 3, leader b1\n${line}\n`);
    const r = run(switchColorCheckScript("green", 5, so, 5));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`ha-lb: ${line}\n`);
    expect(r.stdout).not.toContain("node b1");
  });

  it("waits a bounded time for the previous peer key to be retired, then names the members it waits for, without failing", () => {
    const keys = { current: "0badc0de", previous: "5eed1e55", waitingFor: ["b2"], retired: null };
    status({ requestedColor: "green", colorInForce: "green", pendingSwitch: null, peerKeys: keys });
    const line = "previous peer key 5eed1e55 still accepted: waiting for b2 to sign with 0badc0de";
    writeFileSync(join(dir, "status.txt"), `${line}\n`);
    const started = Date.now();
    const r = run(switchColorCheckScript("green", 5, so, 2));
    expect(r.status, r.stderr).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(r.stdout).toContain(`ha-lb: ${line}\n`);
  });
});

describe("deleteScript", () => {
  it("a leader holding the IP hands over, leaves eligibility, waits until the IP left, then stops", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "leader", reservedIp: { onThisDroplet: true } });
    writeFileSync(join(dir, "after-handover.json"), JSON.stringify({ role: "follower", reservedIp: { onThisDroplet: false } }));
    const r = run(deleteScript(10, so));
    expect(r.status, r.stderr).toBe(0);
    expect(log().filter((l) => !l.startsWith("fipd status --json"))).toEqual(["fipd handover", "fipd maintenance on", "service stop"]);
  });

  it("never fails a deletion: an agent that is not running is fine", () => {
    const r = run(deleteScript(1, so));
    expect(r.status).toBe(0);
    expect(log()).toEqual([]);
  });
});

describe("applyConfigCommand: keys a reload cannot apply", () => {
  it("restarts an agent that reports restartPending after the reload, a leader after a handover, and waits for a healthy cluster", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "leader", restartPending: ["listen.port"] });
    writeFileSync(join(dir, "after-handover.json"), JSON.stringify({ role: "follower", restartPending: ["listen.port"] }));
    const r = run(applyConfigCommand(SHA, { ...so, owner: "root" }, 45).replace(/^(mkdir|chown|chmod) .*$/gm, ":"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("ha-lb: the running agent needs a restart for: listen.port");
    expect(log().filter((l) => !l.startsWith("fipd status --json"))).toEqual([
      expect.stringMatching(/^fipd apply-config --dir .* --owner root$/),
      "fipd handover",
      "service restart",
      "fipd status --wait-healthy --timeout 45",
    ]);
  });

  it("does not restart when nothing is pending, or when the agent is not running", () => {
    writeFileSync(join(dir, "active"), "");
    status({ role: "follower", restartPending: [] });
    expect(run(applyConfigCommand(SHA, so).replace(/^(mkdir|chown|chmod) .*$/gm, ":")).status).toBe(0);
    rmSync(join(dir, "active"));
    status({ role: "follower", restartPending: ["listen.port"] });
    expect(run(applyConfigCommand(SHA, so).replace(/^(mkdir|chown|chmod) .*$/gm, ":")).status).toBe(0);
    expect(log().filter((l) => !l.startsWith("fipd status --json"))).toEqual([
      expect.stringMatching(/^fipd apply-config /),
      expect.stringMatching(/^fipd apply-config /),
    ]);
  });
});

describe("applyConfigCommand with the real bundle", () => {
  it("makes the config directory root's (as droplets bootstrapped before left it: the service user's), then writes config and secrets from stdin, no secret on the command line", async () => {
    const bundle = await buildAgentBundle(bundlePath(SHA, join(dir, "opt")));
    expect(bundle.path).toBe(bundlePath(SHA, join(dir, "opt")));
    const cmd = applyConfigCommand(SHA, { ...so, owner: "nobody" });
    const nobody = {
      uid: Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" })),
      gid: Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8" })),
    };
    // /etc/fipd as cloud-init makes it: install -d -m 0750 -o fipd -g fipd.
    mkdirSync(join(dir, "etc"), { mode: 0o750 });
    chownSync(join(dir, "etc"), nobody.uid, nobody.gid);
    const ids = ["dev-lb-blue-1", "dev-lb-blue-2", "dev-witness"];
    const keys = Object.fromEntries(ids.map((id) => [id, newIdentity()]));
    const payload = {
      config: {
        nodeId: "dev-lb-blue-1",
        membershipVersion: 1,
        members: [
          { id: "dev-lb-blue-1", address: "10.10.10.11", role: "lb", color: "blue" },
          { id: "dev-lb-blue-2", address: "10.10.10.12", role: "lb", color: "blue" },
          { id: "dev-witness", address: "203.0.113.13", role: "witness" },
        ],
        activeColor: "blue",
        reservedIp: "198.51.100.7",
        controlSocket: join(dir, "none.sock"),
        peerAuth: { publicKeys: ids.map((id) => ({ id, publicKey: keys[id].publicKey })) },
      },
      token: "dop_v1_SECRETTOKEN",
      identityKey: keys["dev-lb-blue-1"].privateKeyPem,
    };
    expect(cmd).not.toContain("SECRETTOKEN");
    // Twice: the fix of the directory is idempotent, and so is the whole step.
    for (let i = 0; i < 2; i++) {
      execFileSync("sh", ["-c", cmd], { input: JSON.stringify(payload), stdio: ["pipe", "pipe", "pipe"], timeout: 20_000 });
      const etc = statSync(join(dir, "etc"));
      expect([etc.mode & 0o7777, etc.uid, etc.gid]).toEqual([0o755, 0, 0]);
      for (const f of ["token", "identity.key"]) {
        const st = statSync(join(dir, "etc", f));
        expect([st.mode & 0o777, st.uid, st.gid], f).toEqual([0o600, nobody.uid, nobody.gid]);
      }
      const cfg = statSync(join(dir, "etc", "fipd.yaml"));
      expect([cfg.mode & 0o777, cfg.uid, cfg.gid]).toEqual([0o640, 0, nobody.gid]);
    }
    expect(readFileSync(join(dir, "etc", "token"), "utf8").trim()).toBe("dop_v1_SECRETTOKEN");
    expect(readFileSync(join(dir, "etc", "fipd.yaml"), "utf8")).not.toContain("SECRETTOKEN");
  }, 30_000);

  it("refuses a config directory that is a symbolic link, and changes nothing where it points", () => {
    mkdirSync(join(dir, "elsewhere"), { mode: 0o700 });
    chownSync(join(dir, "elsewhere"), 65534, 65534);
    symlinkSync(join(dir, "elsewhere"), join(dir, "etc"));
    const r = spawnSync("sh", ["-c", applyConfigCommand(SHA, { ...so, owner: "root" })], { input: "{}", encoding: "utf8", timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${join(dir, "etc")} is a symbolic link; refusing to write config and secrets through it`);
    const st = statSync(join(dir, "elsewhere"));
    expect([st.mode & 0o7777, st.uid]).toEqual([0o700, 65534]);
    expect(log()).toEqual([]);
  });
});
