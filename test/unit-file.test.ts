/**
 * The agent's systemd unit (components/assets/fipd.service), which the stack copies to every droplet:
 * hardened to an exposure of at most 2.0 by systemd's own analysis, valid for systemd, and with a
 * restart policy under which a crash-looping agent is restarted for ever, paced so that it does not
 * hammer the DigitalOcean API.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { soakPeakMb, type SoakResults } from "../bench/report.js";
import { UNIT_FILE, agentNodeFlags } from "../testbed/harness/node-flags.js";
import { parseBytes, parseTimeSpanMs, readUnit, unitValue, unitValues, type UnitFile } from "../testbed/harness/unit-file.js";

const MAX_EXPOSURE = 2.0;
/** Directives newer than some systemd this test may run with: the version that added each. */
const ADDED_IN: Record<string, number> = { RestartSteps: 254, RestartMaxDelaySec: 254 };
/** The systemd of the droplets' image (Ubuntu 24.04), whose restart back-off the policy is written for. */
const DROPLET_SYSTEMD = 255;
/** DigitalOcean's limit per token, shared by every agent of the cluster (README, "Using it"). */
const API_REQUESTS_PER_MIN = 250;
/**
 * What one start of an agent can cost at most: a failover's 6 requests at a 2 s action delay (README,
 * "Benchmarks"): an agent that crashes right after taking the lead assigns the IP again at each start.
 */
const API_REQUESTS_PER_START = 6;
/** The share of the token's budget one crash-looping agent may use. */
const CRASH_LOOP_API_SHARE = 0.1;

let dir = "";
let unitCopy = "";
let unit: UnitFile;
let systemdVersion = 0;

function systemdAnalyze(args: string[]) {
  const r = spawnSync("systemd-analyze", args, { cwd: dir, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw new Error(`systemd-analyze ${args.join(" ")}: ${r.error.message} (install the Debian package systemd: testbed/ensure-system.mjs)`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "halb-unit-"));
  unitCopy = join(dir, "fipd.service");
  copyFileSync(UNIT_FILE, unitCopy);
  unit = readUnit(unitCopy);
  const version = /^systemd (\d+)/.exec(systemdAnalyze(["--version"]).stdout);
  if (!version) throw new Error("systemd-analyze --version: no version number");
  systemdVersion = Number(version[1]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** systemd's warnings about the unit, less the unknown keys that are only newer than the systemd here. */
function unexpectedWarnings(stderr: string): string[] {
  return stderr
    .split("\n")
    .filter((l) => l.trim() !== "")
    .filter((l) => {
      const unknown = /Unknown key '(\w+)' in section \[\w+\], ignoring\.$/.exec(l);
      return !(unknown && (ADDED_IN[unknown[1]] ?? 0) > systemdVersion);
    });
}

describe("fipd.service hardening", () => {
  it(`rates an exposure of at most ${MAX_EXPOSURE} with systemd-analyze security --offline`, () => {
    const r = systemdAnalyze(["security", "--offline=true", `--threshold=${MAX_EXPOSURE * 10}`, unitCopy]);
    const level = /Overall exposure level for fipd\.service: (\d+\.\d+)/.exec(r.stdout);
    expect(level, `no exposure level in:\n${r.stdout}\n${r.stderr}`).not.toBeNull();
    const exposure = Number(level![1]);
    const failing = r.stdout.split("\n").filter((l) => l.startsWith("✗"));
    expect(exposure, `exposure ${exposure} > ${MAX_EXPOSURE}; the checks that fail:\n${failing.join("\n")}`).toBeLessThanOrEqual(MAX_EXPOSURE);
    expect(r.status, `systemd-analyze's own --threshold check failed:\n${r.stderr}`).toBe(0);
    expect(unexpectedWarnings(r.stderr)).toEqual([]);
  });

  it("passes systemd-analyze verify with no warning about the unit", () => {
    const r = systemdAnalyze(["verify", "--man=no", unitCopy]);
    expect(unexpectedWarnings(r.stderr)).toEqual([]);
    expect(r.status).toBe(0);
  });

  it("fails a filtered system call with EPERM rather than killing the agent with SIGSYS", () => {
    expect(unitValues(unit, "Service", "SystemCallFilter").length).toBeGreaterThan(0);
    expect(unitValue(unit, "Service", "SystemCallErrorNumber")).toBe("EPERM");
  });

  it("caps memory with at least twice the agent's measured peak as headroom", () => {
    const soak = JSON.parse(readFileSync(resolve(__dirname, "..", "bench", "results", "soak.json"), "utf8")) as SoakResults;
    const peakMb = Math.max(...soak.agents.map(soakPeakMb));
    expect(peakMb).toBeGreaterThan(0);
    const max = unitValue(unit, "Service", "MemoryMax");
    expect(max, "MemoryMax= is not set").toBeDefined();
    expect(parseBytes(max!)).toBeGreaterThanOrEqual(2 * peakMb * 1024 * 1024);
  });
});

describe("fipd.service node flags", () => {
  it("start Node.js without a warning: lite mode's WebAssembly notice would reach the journal at every start", () => {
    const flags = agentNodeFlags();
    expect(flags).toContain("--lite-mode");
    const r = spawnSync(process.execPath, [...flags, "-e", "process.stdout.write(typeof WebAssembly)"], { encoding: "utf8", timeout: 30_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("undefined");
  });
});

/**
 * systemd's restart delay before the n-th automatic restart since the last manual start (n ≥ 1), as
 * service_restart_usec_next() computes it (systemd 254+): RestartSec, growing geometrically over
 * RestartSteps restarts to RestartMaxDelaySec. Older systemd has neither key and waits RestartSec.
 */
function restartDelayMs(u: UnitFile, n: number, version: number): number {
  const base = parseTimeSpanMs(unitValue(u, "Service", "RestartSec") ?? "100ms");
  const steps = version >= 254 ? Number(unitValue(u, "Service", "RestartSteps") ?? "0") : 0;
  const maxMs = version >= 254 ? parseTimeSpanMs(unitValue(u, "Service", "RestartMaxDelaySec") ?? "infinity") : Infinity;
  if (n <= 1 || steps === 0 || base === 0 || maxMs === Infinity || base >= maxMs) return base;
  if (n > steps) return maxMs;
  return base * Math.pow(maxMs / base, (n - 1) / steps);
}

/**
 * Start times of an agent that dies the instant it starts, for `starts` starts, and whether systemd's
 * start limit (ratelimit_below(): a window of StartLimitIntervalSec opened by the first start in it,
 * at most StartLimitBurst starts in it; an interval or burst of 0 turns it off) lets each one through.
 */
function crashLoop(u: UnitFile, starts: number, version: number): { atMs: number[]; refusedAt: number | null } {
  const intervalMs = parseTimeSpanMs(unitValue(u, "Unit", "StartLimitIntervalSec") ?? "10s");
  const burst = Number(unitValue(u, "Unit", "StartLimitBurst") ?? "5");
  const limited = intervalMs > 0 && burst > 0;
  const atMs: number[] = [];
  let windowStartMs = -Infinity;
  let inWindow = 0;
  let t = 0;
  for (let i = 0; i < starts; i++) {
    if (i > 0) t += restartDelayMs(u, i, version);
    atMs.push(t);
    if (!limited) continue;
    if (t - windowStartMs > intervalMs) {
      windowStartMs = t;
      inWindow = 1;
    } else if (++inWindow > burst) return { atMs, refusedAt: i };
  }
  return { atMs, refusedAt: null };
}

describe("fipd.service restart policy", () => {
  it("restarts the agent whatever ended it", () => {
    expect(unitValue(unit, "Service", "Restart")).toBe("always");
  });

  // 2,000 starts: a day of crashing every 30 s, far past any back-off's cap.
  for (const version of [DROPLET_SYSTEMD, 253]) {
    it(`never gives up on a crash loop (systemd ${version}: ${version >= 254 ? "with" : "without"} RestartSteps)`, () => {
      const loop = crashLoop(unit, 2_000, version);
      expect(loop.refusedAt, `start ${loop.refusedAt} at ${loop.atMs[loop.refusedAt ?? 0]} ms would be refused by the start limit`).toBeNull();
    });
  }

  it("brings a one-off crash back within seconds, and backs a crash loop off to a small share of the API budget", () => {
    const loop = crashLoop(unit, 2_000, DROPLET_SYSTEMD);
    expect(loop.atMs[1]).toBeLessThanOrEqual(5_000);
    // The steady state: starts per minute over the last hour of the loop.
    const endMs = loop.atMs[loop.atMs.length - 1];
    const lastHour = loop.atMs.filter((t) => t > endMs - 3_600_000).length;
    const requestsPerMin = (lastHour / 60) * API_REQUESTS_PER_START;
    expect(requestsPerMin).toBeLessThanOrEqual(CRASH_LOOP_API_SHARE * API_REQUESTS_PER_MIN);
  });
});
