/**
 * `npm run demo -- --web` in a real browser: Debian's chromium (never a downloaded one), headless,
 * driven by playwright-core. The demo runs as users run it (demo/demo.ts as its own process, real fipd
 * agents), the test reads only what the page shows, and presses its buttons.
 *
 * Saves docs/demo-web.png, the screenshot in the README, after a kill -9 of the leader.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUNDLE } from "../../testbed/harness/local-cluster.js";

const ROOT = resolve(__dirname, "..", "..");
const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT = join(ROOT, "docs", "demo-web.png");
// Chromium's own background connections (updates, sync, QUIC probes) are refused here: turn them off.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--headless",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let demo: ChildProcess | null = null;
let demoOut = "";
let demoExit: Promise<number | null> | null = null;
let browser: BrowserContext | null = null;
let profile: string | null = null;
let page: Page;
let url: string;

/** Start the demo as `npm run demo -- --web --port 0` does, and read its URL from what it prints. */
async function startDemo(): Promise<string> {
  // npm test builds the bundle first; the demo rebuilds it only when it is missing.
  const p = spawn(process.execPath, ["--import", "tsx", "demo/demo.ts", "--web", "--port", "0", "--action-delay-ms", "500"], {
    cwd: ROOT,
    env: { ...process.env, FIPD_REBUILD: existsSync(BUNDLE) ? "0" : "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  demo = p;
  demoExit = new Promise((r) => p.once("exit", (code) => r(code)));
  p.stdout.on("data", (d: Buffer) => (demoOut += d.toString()));
  p.stderr.on("data", (d: Buffer) => (demoOut += d.toString()));
  const until = Date.now() + 60_000;
  for (;;) {
    const m = /open (http:\/\/127\.0\.0\.1:\d+\/) in a browser/.exec(demoOut);
    if (m) return m[1];
    if (p.exitCode !== null) throw new Error(`the demo exited (${p.exitCode}) before serving its page:\n${demoOut}`);
    if (Date.now() > until) throw new Error(`the demo printed no URL within 60 s:\n${demoOut}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Wait until the page shows an agreed leader that holds the IP (other than `not`), and return it. */
async function leaderWithIp(not: string | null, timeoutMs = 60_000): Promise<string> {
  const handle = await page.waitForFunction(
    (not) => {
      const leader = document.getElementById("leader")?.textContent ?? "";
      const holder = document.getElementById("holder")?.textContent ?? "";
      return leader.startsWith("lb-") && leader === holder && leader !== not ? leader : null;
    },
    not,
    { timeout: timeoutMs, polling: 100 },
  );
  return (await handle.jsonValue()) as string;
}

/** Press a button and return the message the page shows for the demo's answer. */
async function press(selector: string): Promise<string> {
  await page.locator("#message").evaluate((e) => (e.textContent = ""));
  await page.click(selector);
  await page.waitForFunction(() => {
    const t = document.getElementById("message")?.textContent ?? "";
    return t !== "" && t !== "…";
  });
  return (await page.textContent("#message")) ?? "";
}

/** Wait until the page's list of events says how a long operation ended: "done", or "stopped: <why>". */
async function outcome(what: string, timeoutMs: number): Promise<string> {
  const handle = await page.waitForFunction(
    (what) => {
      for (const li of document.querySelectorAll("#events li")) {
        const m = new RegExp(`^${what}: (done|stopped: .*)$`).exec(li.lastChild?.textContent ?? "");
        if (m) return m[1];
      }
      return null;
    },
    what,
    { timeout: timeoutMs, polling: 250 },
  );
  return (await handle.jsonValue()) as string;
}

/** POST an action as the page does, from the page, and return the demo's answer. */
const post = (body: unknown) =>
  page.evaluate(async (body) => {
    const res = await fetch("/api/actions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as unknown };
  }, body);

const role = (node: string) => page.getAttribute(`[data-node="${node}"]`, "data-role");

beforeAll(async () => {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: testbed/ensure-system.mjs installs Debian's chromium`).toBe(true);
  url = await startDemo();
  profile = mkdtempSync(join(tmpdir(), "halb-chromium-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(url);
}, 120_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (demo && demo.exitCode === null) {
    demo.kill("SIGTERM");
    const code = await Promise.race([demoExit, new Promise((r) => setTimeout(() => r("timeout"), 20_000))]);
    if (code === "timeout") demo.kill("SIGKILL");
  }
  // What the demo printed, for a failure's post-mortem (.tmp/ is not committed).
  mkdirSync(join(ROOT, ".tmp"), { recursive: true });
  writeFileSync(join(ROOT, ".tmp", "demo-web.log"), demoOut);
}, 60_000);

describe("npm run demo -- --web, in Debian's chromium", () => {
  it("kill -9 the leader from the page: the page shows another leader holding the Reserved IP, and the client's answers move to it", async () => {
    await leaderWithIp(null);
    expect(await page.textContent("#connection")).toBe("live");
    // A few seconds of answers first, so that the screenshot shows the client before and after.
    await page.waitForFunction(() => document.querySelectorAll("#chart rect.tick").length >= 60, undefined, { timeout: 30_000 });
    // The demo kills the leader the agents agree on when it gets the request (on a busy machine, not
    // necessarily the one the page showed a moment before).
    const killed = /^killed (lb-\S+)$/.exec(await press("#kill-leader"))?.[1];
    expect(killed).toBeDefined();
    const second = await leaderWithIp(killed!);
    expect(second).not.toBe(killed);
    // The killed agent comes back, as systemd restarts it, and takes part again.
    await page.waitForFunction(
      (n) => ["follower", "candidate", "leader"].includes(document.querySelector(`[data-node="${n}"]`)?.getAttribute("data-role") ?? ""),
      killed!,
      { timeout: 30_000 },
    );
    expect(await page.textContent("#events")).toContain(`kill -9 ${killed}`);
    expect(await page.textContent("#api")).toMatch(/POST \/v2\/reserved_ips\/198\.51\.100\.100\/actions → 201/);
    // The chart shows the client's answers from the first leader, then from the second.
    await page.waitForSelector(`#chart rect.tick[data-by="${second}"]`);
    const answeredBy = await page.$$eval("#chart rect.tick", (ticks) => new Set(ticks.map((t) => t.getAttribute("data-by"))).size);
    expect(answeredBy).toBeGreaterThanOrEqual(2);
    expect(await page.$(`#chart rect.tick[data-by="${killed}"]`)).not.toBeNull();
    await leaderWithIp(null);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  }, 120_000);

  it("stop HAProxy, partition, switch color, rolling upgrade: each from its button, each seen on the page", async () => {
    const leader = await leaderWithIp(null);
    // HAProxy stopped on the leader: its health check fails, another node takes the IP.
    await page.click(`[data-node="${leader}"] [data-act="haproxy"]`);
    const next = await leaderWithIp(leader);
    await page.click(`[data-node="${leader}"] [data-act="haproxy"]`);
    expect(await page.textContent("#client-stats")).toMatch(/\d+ requests, [1-9]\d* failed/);
    // The new leader cut off from its peers: it loses its majority, the others elect a leader that takes the IP.
    await page.click(`[data-node="${next}"] [data-act="partition"]`);
    await page.waitForFunction((n) => document.querySelector(`[data-node="${n}"] .peers`)?.textContent === "PARTITIONED", next);
    const third = await leaderWithIp(next);
    expect(third).not.toBe(next);
    await page.click(`[data-node="${next}"] [data-act="partition"]`);
    await page.waitForFunction((n) => document.querySelector(`[data-node="${n}"] .peers`)?.textContent === "majority reachable", next, { timeout: 30_000 });
    expect(await role(next)).toBe("follower");

    // Switch to green, as the stack does it (apply-config everywhere, then its check): green holds the IP.
    expect(await press("#switch-color")).toBe("switch to green started");
    expect(await outcome("switch to green", 120_000)).toBe("done");
    expect(await leaderWithIp(null)).toMatch(/^lb-green-/);
    expect(await page.textContent("#color")).toBe("green");

    // A rolling upgrade with the stack's scripts: every agent on the new build, the leader last.
    const before = (await page.textContent("#build"))!;
    expect(await press("#rolling-upgrade")).toBe("rolling upgrade started");
    await page.waitForFunction(() => (document.getElementById("rolling-upgrade") as HTMLButtonElement).disabled);
    // One change at a time, and a precise answer to a request the page would not send.
    expect(await post({ action: "switch-color" })).toEqual({
      status: 409,
      body: { ok: false, error: expect.stringMatching(/^rolling upgrade is still running/) },
    });
    expect(await post({ action: "partition", node: "lb-blue-9", cut: true })).toEqual({
      status: 404,
      body: { ok: false, error: expect.stringContaining('no node "lb-blue-9"') },
    });
    expect(await post({ action: "haproxy", node: "lb-blue-1" })).toEqual({ status: 400, body: { ok: false, error: expect.stringContaining("up:") } });
    expect(await outcome("rolling upgrade", 240_000)).toBe("done");
    await page.waitForFunction(() => !(document.getElementById("rolling-upgrade") as HTMLButtonElement).disabled);
    const events = (await page.textContent("#events"))!;
    const after = (await page.textContent("#build"))!;
    expect(after).toMatch(/^[0-9a-f]{16}$/);
    expect(after).not.toBe(before);
    const builds = await page.$$eval("#nodes .build", (dds) => dds.map((d) => d.textContent));
    expect(builds).toEqual(builds.map(() => after));
    // The second pass: the node that led during the first restarts last, after a handover.
    expect(events).toMatch(/(lb-\S+) \$ ha-lb: this node leads: its restart waits for the second pass/);
    await leaderWithIp(null);
  }, 360_000);
});
