/**
 * docs/alerts.yml: every rule parses, and every metric (and label) its expression names exists: fipd's
 * from its registry, HAProxy's from a real HAProxy exporter scrape of the config the stack renders.
 */
import { spawnSync } from "node:child_process";
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { load } from "js-yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMetrics } from "../agent/metrics.js";
import { ANCHOR_PLACEHOLDER, CONFIG_ID_PLACEHOLDER, renderHaproxyConfig } from "../components/haproxy.js";

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: { severity: string };
  annotations: { summary: string; runbook?: string };
}
const doc = load(readFileSync(join(__dirname, "..", "docs", "alerts.yml"), "utf8")) as { groups: { name: string; rules: Rule[] }[] };
const rules = doc.groups.flatMap((g) => g.rules);
const rule = (name: string) => {
  const r = rules.find((x) => x.alert === name);
  if (!r) throw new Error(`docs/alerts.yml has no alert ${name} (has ${rules.map((x) => x.alert).join(", ")})`);
  return r;
};
/** Labels every scraped series gets from Prometheus's target, not from the exporter. */
const TARGET_LABELS = ["instance", "job", "cluster"];

/** A metric name → its label names, and every value seen per label. */
type Catalog = Map<string, Map<string, Set<string>>>;

/** Parses Prometheus text exposition into a catalog (the HAProxy scrape). */
function catalogOfText(text: string): Catalog {
  const c: Catalog = new Map();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line);
    if (!m) continue;
    const labels = c.get(m[1]) ?? new Map<string, Set<string>>();
    c.set(m[1], labels);
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels.set(k, (labels.get(k) ?? new Set()).add(v));
    }
  }
  return c;
}

/** fipd's metrics: their names and label names from the registry (values are dynamic). */
function catalogOfFipd(): Catalog {
  const c: Catalog = new Map();
  for (const metric of createMetrics().registry.getMetricsAsArray()) {
    const { name, labelNames = [] } = metric as unknown as { name: string; labelNames?: string[] };
    const labels = new Map(labelNames.map((l) => [l, new Set<string>()]));
    c.set(name, labels);
    for (const suffix of ["_bucket", "_sum", "_count"]) c.set(name + suffix, new Map([...labels, ["le", new Set<string>()]]));
  }
  return c;
}

/** The problems with one expression: unknown metrics, unknown label names, matchers no series can meet. */
function problemsOf(r: Rule, catalog: (name: string) => Map<string, Set<string>> | undefined): string[] {
  const problems: string[] = [];
  const names = [...new Set([...r.expr.matchAll(/\b((?:fipd|haproxy)_[a-z0-9_]+)\b/g)].map((m) => m[1]))];
  if (!names.length) problems.push(`${r.alert}: names no fipd_ or haproxy_ metric`);
  const known = new Set<string>(TARGET_LABELS);
  for (const n of names) {
    const labels = catalog(n);
    if (!labels) problems.push(`${r.alert}: no metric ${n}`);
    else for (const l of labels.keys()) known.add(l);
  }
  for (const [, n, body] of r.expr.matchAll(/\b((?:fipd|haproxy)_[a-z0-9_]+)\{([^}]*)\}/g)) {
    const labels = catalog(n);
    if (!labels) continue;
    for (const [, k, op, v] of body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
      const seen = labels.get(k);
      if (!seen) problems.push(`${r.alert}: ${n} has no label ${k} (has ${[...labels.keys()].join(", ") || "none"})`);
      // A matcher no value meets selects nothing, so the rule could never fire (checked where the values are known).
      else if (seen.size && op === "=" && !seen.has(v)) problems.push(`${r.alert}: ${n}{${k}="${v}"} matches no series (values: ${[...seen].join(", ")})`);
      else if (seen.size && op === "=~" && ![...seen].some((x) => new RegExp(`^(?:${v})$`).test(x)))
        problems.push(`${r.alert}: ${n}{${k}=~"${v}"} matches no series (values: ${[...seen].join(", ")})`);
    }
  }
  for (const [, list] of r.expr.matchAll(/\b(?:by|on|without|ignoring)\s*\(([^)]*)\)/g)) {
    for (const l of list
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean))
      if (!known.has(l)) problems.push(`${r.alert}: groups by ${l}, a label none of its metrics has`);
  }
  return problems;
}

let haproxyCatalog: Catalog;
let stopHaproxy = () => {};
beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "halb-alerts-"));
  const freePort = () =>
    new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port));
      });
    });
  const [front, health, metrics] = [await freePort(), await freePort(), await freePort()];
  const cfg = renderHaproxyConfig({
    listenPorts: [front],
    backends: ["127.0.0.1:9"],
    healthPort: health,
    metricsPort: metrics,
    statsSocket: join(dir, "admin.sock"),
    runAs: null,
    maxconn: 2000,
  })
    .replaceAll(ANCHOR_PLACEHOLDER, "127.0.0.1")
    .replaceAll(CONFIG_ID_PLACEHOLDER, "set.test");
  writeFileSync(join(dir, "haproxy.cfg"), cfg);
  const pidFile = join(dir, "haproxy.pid");
  const r = spawnSync("haproxy", ["-D", "-p", pidFile, "-f", join(dir, "haproxy.cfg")], { encoding: "utf8", timeout: 10_000 });
  if (r.error) throw new Error(`haproxy is required for this test (apt-get install haproxy): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`haproxy did not start: ${r.stderr}`);
  stopHaproxy = () => {
    try {
      process.kill(Number(readFileSync(pidFile, "utf8").trim().split("\n")[0]), "SIGTERM");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  // Bounded: the exporter answers once the worker runs, and the server's check (nothing on :9) marks it DOWN.
  let text = "";
  for (let i = 0; i < 50 && !/haproxy_server_status\{[^}]*state="DOWN"\} 1/.test(text); i++) {
    await new Promise((res) => setTimeout(res, 100));
    text = await fetch(`http://127.0.0.1:${metrics}/metrics`).then(
      (x) => x.text(),
      () => "",
    );
  }
  haproxyCatalog = catalogOfText(text);
}, 20_000);
afterAll(() => stopHaproxy());

describe("docs/alerts.yml", () => {
  it("every rule has an expression, a severity and a summary", () => {
    expect(rules.length).toBeGreaterThan(10);
    for (const r of rules) {
      expect(r.expr, r.alert).toEqual(expect.any(String));
      expect(["page", "warn"], r.alert).toContain(r.labels.severity);
      expect(r.annotations.summary, r.alert).toEqual(expect.any(String));
    }
    expect(new Set(rules.map((r) => r.alert)).size).toBe(rules.length);
  });

  it("every metric and label a rule names exists: fipd's in its registry, HAProxy's in a real exporter scrape", () => {
    expect(haproxyCatalog.size, "the HAProxy scrape").toBeGreaterThan(50);
    const fipd = catalogOfFipd();
    const catalog = (n: string) => (n.startsWith("haproxy_") ? haproxyCatalog : fipd).get(n);
    expect(rules.flatMap((r) => problemsOf(r, catalog))).toEqual([]);
    // And the check can fail: a misspelt metric, a label the metric lacks, a value no series has.
    const bad = (expr: string) => problemsOf({ ...rules[0], alert: "X", expr }, catalog);
    expect(bad("haproxy_backend_active_server == 0")).toEqual(["X: no metric haproxy_backend_active_server"]);
    expect(bad('haproxy_server_status{status="DOWN"} == 1')[0]).toMatch(/has no label status/);
    expect(bad('haproxy_backend_http_responses_total{code="500"} > 0')[0]).toMatch(/matches no series \(values: 1xx, 2xx/);
    expect(bad('haproxy_backend_active_servers{proxy=~"be_.+"} == 0')[0]).toMatch(/matches no series/);
    expect(bad("max by (backend) (haproxy_backend_active_servers) == 0")).toEqual(["X: groups by backend, a label none of its metrics has"]);
  });

  it("has the load balancer's rules: a server down, a pool with no server up, a high 5xx rate, a certificate expiring within 14 days", () => {
    expect(rule("HaLbServerDown").expr).toMatch(/haproxy_server_status\{state="DOWN"\}\) == 1/);
    expect(rule("HaLbPoolNoServerUp").expr).toMatch(/haproxy_backend_active_servers\{proxy=~"pool_\.\+"\}\) == 0/);
    expect(rule("HaLbPoolNoServerUp").labels.severity).toBe("page");
    const five = rule("HaLbHigh5xxRate").expr;
    expect(five).toContain('rate(haproxy_backend_http_responses_total{code="5xx"}[5m])');
    expect(five).toMatch(/\/ sum by \(instance, proxy\) \(rate\(haproxy_backend_http_responses_total\[5m\]\)\) > 0\.05/);
    expect(rule("HaLbCertificateExpiringSoon").expr).toBe("min by (instance, name) (fipd_certificate_expiry_timestamp_seconds) - time() < 14 * 86400");
    expect(rule("HaLbCertificateUnreadable").expr).toContain("fipd_certificate_unreadable");
    // ACME: a day past the renewal time on every LB (the minimum), per certificate.
    expect(rule("HaLbAcmeRenewalOverdue").expr).toBe("min by (name) (time() - fipd_acme_renewal_due_timestamp_seconds) > 86400");
    // The pools the stack renders are what the proxy matcher selects.
    expect([...(haproxyCatalog.get("haproxy_backend_active_servers")?.get("proxy") ?? [])]).toContain("pool_app");
  });
});
