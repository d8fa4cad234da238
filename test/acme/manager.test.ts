/** AcmeManager with a stand-in child (a tiny script): the waits between orders, on real timers. */
import { generateKeyPairSync } from "node:crypto";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AcmeManager, type FailureKind } from "../../agent/acme/manager.js";
import { AcmeStore } from "../../agent/acme/store.js";
import { AcmeSchema, type AcmeConfig } from "../../agent/config.js";
import { silentLogger } from "../../agent/log.js";
import { check } from "../../agent/schema.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "halb-acme-manager-"));
  const key = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "sec1", format: "pem" }) as string;
  writeFileSync(join(dir, "web.account.key"), key());
  writeFileSync(join(dir, "web.key"), key());
  // The stand-in child: notes when it starts, then answers what a rate-limited CA makes the real one answer.
  writeFileSync(
    join(dir, "child.cjs"),
    `require("fs").appendFileSync(${JSON.stringify(join(dir, "starts"))}, Date.now() + "\\n");
process.stdout.write(JSON.stringify({ kind: "error", reason: "too many new orders recently (rateLimited)", rateLimited: true, retryAfterS: 2 }) + "\\n");
process.exit(1);`,
  );
  appendFileSync(join(dir, "starts"), "");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("AcmeManager", () => {
  it("orders no sooner than the CA's Retry-After after a rateLimited answer, though its own backoff is shorter", async () => {
    const r = check(AcmeSchema, {
      stateDir: join(dir, "state"),
      keyDir: dir,
      checkIntervalMs: 100,
      retryInitialMs: 1_000,
      retryMaxMs: 1_000,
      certificates: [{ name: "web", domains: ["web.example.com"], email: "ops@example.com", directoryUrl: "https://acme.example.com/dir" }],
    });
    if (!r.ok) throw new Error("bad test config");
    const config: AcmeConfig = r.value;
    const store = new AcmeStore({ stateDir: config.stateDir, nowMs: () => Date.now(), publicKeyFor: () => undefined, domainsFor: () => ["web.example.com"] });
    const failures: FailureKind[] = [];
    const m = new AcmeManager({
      config,
      store,
      log: silentLogger,
      nowMs: () => Date.now(),
      childPath: join(dir, "child.cjs"),
      random: () => 0,
      onFailure: (_n, k) => failures.push(k),
    });
    m.setLeading(true);
    await new Promise((res) => setTimeout(res, 5_500));
    m.close();
    const starts = readFileSync(join(dir, "starts"), "utf8").trim().split("\n").map(Number);
    // Backoff alone (500 ms with the jitter pinned low) would have started about ten; Retry-After allows three.
    expect(starts.length).toBeGreaterThanOrEqual(2);
    expect(starts.length).toBeLessThanOrEqual(3);
    for (let i = 1; i < starts.length; i++) expect(starts[i] - starts[i - 1]).toBeGreaterThanOrEqual(2_000);
    expect(failures.every((k) => k === "rate_limited")).toBe(true);
    expect(m.status()[0].line).toMatch(/^web: failing: too many new orders recently \(rateLimited\); next try at 20\d\d-.*; serving: placeholder/);
  }, 20_000);
});
