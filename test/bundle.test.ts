/** The agent bundle the stack deploys: one self-contained file for Node 20, small, no native code. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAcmeBundle, buildAgentBundle, type AgentBundle } from "../agent/build.js";

let dir = "";
let bundle: AgentBundle;
let text = "";

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "halb-bundle-"));
  bundle = await buildAgentBundle(join(dir, "fipd.cjs"));
  text = readFileSync(bundle.path, "utf8");
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("agent bundle", () => {
  it("is one file under 1 MiB, with valibot and js-yaml but neither zod nor yaml (each costs the agent megabytes of RSS)", () => {
    expect(bundle.bytes).toBeLessThan(1024 * 1024);
    // esbuild heads each bundled module with its path: the packages the agent carries.
    const packages = new Set([...text.matchAll(/^\/\/ node_modules\/((?:@[^/]+\/)?[^/]+)\//gm)].map((m) => m[1]));
    expect(packages).toContain("valibot");
    expect(packages).toContain("js-yaml");
    expect(packages).not.toContain("zod");
    expect(packages).not.toContain("yaml");
    // The ACME client runs in its own short-lived child (dist/fipd-acme.cjs), never in the agent.
    for (const p of ["acme-client", "axios", "node-forge", "@peculiar/x509"]) expect(packages).not.toContain(p);
  });

  it("carries only the prom-client parts the agent uses: no push gateway, cluster aggregator, OpenTelemetry or summaries (agent/metrics.ts)", () => {
    const files = [...text.matchAll(/^\/\/ node_modules\/(\S+)$/gm)].map((m) => m[1]!);
    // The registry and the metric types are there: the check is not passing on a bundle without metrics.
    for (const f of ["prom-client/lib/registry.js", "prom-client/lib/gauge.js", "prom-client/lib/metrics/osMemoryHeap.js"]) expect(files).toContain(f);
    for (const f of [
      "prom-client/index.js",
      "prom-client/lib/pushgateway.js",
      "prom-client/lib/cluster.js",
      "prom-client/lib/defaultMetrics.js",
      "prom-client/lib/summary.js",
    ]) {
      expect(files, `${f} is in the bundle`).not.toContain(f);
    }
    expect(files.filter((f) => /^(@opentelemetry|tdigest|bintrees)\//.test(f))).toEqual([]);
    // Built-ins the agent itself never needs, which that code would load at start.
    const requires = new Set([...text.matchAll(/\brequire\(["']([^"']+)["']\)/g)].map((m) => m[1]!.replace(/^node:/, "")));
    for (const b of ["cluster", "zlib", "url", "perf_hooks", "v8"]) expect(requires.has(b), `require("${b}")`).toBe(false);
  });

  it("loads no native module and nothing from node_modules at run time", () => {
    expect(text).not.toMatch(/\.node["']\)/);
    const requires = [...text.matchAll(/\brequire\(["']([^"']+)["']\)/g)].map((m) => m[1]);
    const builtins = new Set(require("node:module").builtinModules as string[]);
    for (const r of requires) expect(builtins.has(r.replace(/^node:/, "")), `require("${r}") is not a Node built-in`).toBe(true);
  });

  it("carries no simulator-only code: the planted bugs and probe() are compiled out (agent/election/node.ts, SIM)", () => {
    for (const name of ["PlantedBugs", "noDriftMargin", "minorityLeader", "noJointMajority", "noBootQuiet", "noDurableState", "trustEchoes", "__SIM__"]) {
      expect(text, `${name} is in the bundle`).not.toContain(name);
    }
    // probe as a method, a property or a key (health.ts has a local variable of that name, which may stay).
    expect(text).not.toMatch(/(?:^\s*|[.'"]|function\s+)probe\b/m);
    // The core itself is there: the check above is not passing on an empty bundle.
    expect(text).toContain("lease expired: no acknowledgement from a majority in time");
  });

  it("embeds no path of this checkout, so every machine builds the same bytes from the same sources", () => {
    expect(text).not.toContain(resolve(__dirname, ".."));
  });

  it("is reproducible: the same sources give the same content hash (the stack deploys by hash)", async () => {
    const again = await buildAgentBundle(join(dir, "again.cjs"));
    expect(again.sha256).toBe(bundle.sha256);
  });

  it("has a separate ACME child bundle that carries acme-client and loads only Node built-ins", async () => {
    const child = await buildAcmeBundle(join(dir, "fipd-acme.cjs"));
    const childText = readFileSync(child.path, "utf8");
    const packages = new Set([...childText.matchAll(/^\/\/ node_modules\/((?:@[^/]+\/)?[^/]+)\//gm)].map((m) => m[1]));
    expect(packages).toContain("acme-client");
    const requires = [...childText.matchAll(/\brequire\(["']([^"']+)["']\)/g)].map((m) => m[1]);
    const builtins = new Set(require("node:module").builtinModules as string[]);
    // `debug` (acme-client's logger) tries supports-color inside a try and goes on without it.
    for (const r of requires.filter((x) => x !== "supports-color"))
      expect(builtins.has(r.replace(/^node:/, "")), `require("${r}") is not a Node built-in`).toBe(true);
  }, 60_000);
});
