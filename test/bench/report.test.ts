import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  type FailoverCase,
  type FailoverResults,
  type FailoverSample,
  niceAxis,
  renderFailoverMarkdown,
  renderFailoverSvg,
  renderSoakMarkdown,
  renderSoakResultsMarkdown,
  renderSoakSvg,
  type SoakAgent,
  type SoakResults,
  soakPeakOfRole,
  summarize,
  writeFailoverReport,
  writeSoakReport,
} from "../../bench/report.js";

const sample = (downtimeMs: number, apiRequests = 3, assigns = 1, failedRequests = 0): FailoverSample => ({ downtimeMs, failedRequests, apiRequests, assigns });

const results: FailoverResults = {
  startedAt: "2025-01-02T03:04:05.000Z",
  host: "bench-1",
  cases: [
    { system: "fipd", scenario: "kill haproxy", actionDelayMs: 0, samples: [sample(300, 4, 1, 2), sample(100, 2), sample(200, 3)] },
    { system: "keepalived-copied", scenario: "kill haproxy", actionDelayMs: 0, samples: [sample(1000), sample(1200), sample(900), sample(1100)] },
    { system: "keepalived-tuned", scenario: "kill haproxy", actionDelayMs: 0, samples: [sample(400), sample(800)] },
    { system: "fipd", scenario: "blue-green switch", actionDelayMs: 500, samples: [sample(50), sample(70)], note: "planned handover" },
    { system: "fipd", scenario: "power off <primary>", actionDelayMs: 0, samples: [sample(250)] },
    { system: "keepalived-copied", scenario: "power off <primary>", actionDelayMs: 0, samples: [sample(0)] },
    { system: "keepalived-tuned", scenario: "power off <primary>", actionDelayMs: 0, samples: [sample(500)] },
  ],
};

function rowOf(md: string, startsWith: string, nth = 0): string[] {
  const rows = md.split("\n").filter((l) => l.startsWith(`| ${startsWith}`));
  const row = rows[nth];
  if (!row) throw new Error(`no row ${startsWith}`);
  return row
    .slice(1, -1)
    .split("|")
    .map((c) => c.trim());
}

describe("summarize", () => {
  it("median of an odd and an even count, min, max, API medians, max failed", () => {
    expect(summarize(results.cases[0]!)).toEqual({ median: 200, min: 100, max: 300, n: 3, medianApiRequests: 3, medianAssigns: 1, maxFailed: 2 });
    expect(summarize(results.cases[1]!)).toMatchObject({ median: 1050, min: 900, max: 1200, n: 4 });
    expect(summarize(results.cases[2]!).median).toBe(600);
  });

  it("nulls for no samples", () => {
    const c: FailoverCase = { system: "fipd", scenario: "x", actionDelayMs: 0, samples: [] };
    expect(summarize(c)).toEqual({ median: null, min: null, max: null, n: 0, medianApiRequests: null, medianAssigns: null, maxFailed: null });
  });
});

describe("renderFailoverMarkdown", () => {
  const md = renderFailoverMarkdown(results);

  it("starts with a heading and names startedAt and host", () => {
    expect(md.startsWith("# ")).toBe(true);
    expect(md).toContain("2025-01-02T03:04:05.000Z");
    expect(md).toContain("bench-1");
  });

  it("downtime cells and ratios of medians", () => {
    const r = rowOf(md, "kill haproxy");
    expect(r).toEqual(["kill haproxy", "0 ms", "200 (100–300) ms", "1050 (900–1200) ms", "600 (400–800) ms", (200 / 1050).toFixed(2), (200 / 600).toFixed(2)]);
    expect(r[5]).toBe("0.19");
    expect(r[6]).toBe("0.33");
  });

  it("n/a for a missing system, — for a zero keepalived median", () => {
    const bg = rowOf(md, "blue-green switch");
    expect(bg.slice(2)).toEqual(["60 (50–70) ms", "n/a", "n/a", "n/a", "n/a"]);
    const off = rowOf(md, "power off");
    expect(off[5]).toBe("—");
    expect(off[6]).toBe("0.50");
  });

  it("a second table with API requests and assigns per system", () => {
    const api = rowOf(md, "kill haproxy", 1);
    // scenario, delay, then per system: API requests, assigns, failed (max), runs
    expect(api.slice(2, 6)).toEqual(["3", "1", "2", "3"]);
    expect(api).toHaveLength(2 + 3 * 4);
    expect(rowOf(md, "blue-green switch", 1).slice(6)).toEqual(Array(8).fill("n/a"));
  });

  it("table cells contain no pipe", () => {
    const piped: FailoverResults = { ...results, cases: [{ system: "fipd", scenario: "a|b", actionDelayMs: 0, samples: [sample(1)], note: "x|y" }] };
    const out = renderFailoverMarkdown(piped);
    const rows = out.split("\n").filter((l) => l.startsWith("|"));
    for (const r of rows) {
      const cells = r.slice(1, -1).split("|");
      expect(cells.length === 7 || cells.length === 14).toBe(true);
    }
    expect(out).not.toContain("a|b");
  });
});

describe("renderFailoverSvg", () => {
  const svg = renderFailoverSvg(results);

  it("is a standalone svg with one rect per bar and a legend", () => {
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
    expect(svg).toContain('xmlns="http://www.w3.org/2000/svg"');
    expect(svg).toContain('width="900"');
    expect(svg).toContain('font-family="sans-serif"');
    // 3 + 1 + 3 bars
    expect(svg.match(/<rect\b/g)).toHaveLength(7);
    for (const name of ["fipd", "keepalived-copied", "keepalived-tuned"]) expect(svg).toContain(`>${name}</text>`);
    expect(new Set(svg.match(/<rect\b[^>]*fill="(#[0-9a-f]{6})"/g)?.map((r) => /fill="([^"]+)"/.exec(r)![1])).size).toBe(3);
  });

  it("escapes text", () => {
    expect(svg).toContain("power off &lt;primary&gt;");
    expect(svg).not.toContain("<primary>");
    const amp = renderFailoverSvg({ ...results, host: "a & b" });
    expect(amp).toContain("a &amp; b");
  });

  it("is well formed enough: every tag closes", () => {
    const stack: string[] = [];
    for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)\b[^<>]*?(\/?)>/g)) {
      if (m[3]) continue; // self-closing
      if (m[1]) expect(stack.pop()).toBe(m[2]);
      else stack.push(m[2]!);
    }
    expect(stack).toEqual([]);
    // no stray markup characters outside tags
    expect(svg.replace(/<[^<>]*>/g, "")).not.toMatch(/[<>]/);
    expect(svg).not.toMatch(/NaN|undefined|Infinity/);
  });

  it("axis: 0 to a nice number at or above the largest max, 4–6 ticks in ms", () => {
    expect(svg).toContain(">0 ms</text>");
    expect(svg).toContain(">1500 ms</text>");
    for (const m of [1, 5, 7, 99, 100, 101, 1234, 2001, 9999, 12345, 0.5, 0]) {
      const a = niceAxis(m);
      expect(a.top).toBeGreaterThanOrEqual(m);
      expect(a.ticks.length).toBeGreaterThanOrEqual(4);
      expect(a.ticks.length).toBeLessThanOrEqual(6);
      expect(a.ticks[0]).toBe(0);
      expect(a.ticks.at(-1)).toBe(a.top);
    }
  });

  it("bar length is proportional to the median; height grows with groups", () => {
    const widths = [...svg.matchAll(/<rect\b[^>]*width="([\d.]+)"/g)].map((m) => Number(m[1]));
    // first group: fipd 200, copied 1050, tuned 600 on a 0–1500 axis
    expect(widths[1]! / widths[0]!).toBeCloseTo(1050 / 200, 2);
    expect(widths[2]! / widths[0]!).toBeCloseTo(600 / 200, 2);
    const h = (s: string) => Number(/height="(\d+)"/.exec(s)![1]);
    expect(h(svg)).toBeGreaterThan(h(renderFailoverSvg({ ...results, cases: results.cases.slice(0, 3) })));
  });
});

describe("writeFailoverReport and renderSoakMarkdown", () => {
  it("writes the three files", () => {
    const dir = mkdtempSync(join(tmpdir(), "failover-report-"));
    try {
      const out = join(dir, "a", "b");
      writeFailoverReport(results, out);
      expect(JSON.parse(readFileSync(join(out, "failover.json"), "utf8"))).toEqual(results);
      expect(readFileSync(join(out, "failover.json"), "utf8")).toContain("\n  ");
      expect(readFileSync(join(out, "failover.md"), "utf8")).toBe(renderFailoverMarkdown(results));
      expect(readFileSync(join(out, "failover.svg"), "utf8")).toBe(renderFailoverSvg(results));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("soak: metric | value", () => {
    const md = renderSoakMarkdown({ leaderChanges: 0, "p99 ms": 12.34567, verdict: "ok|fine" });
    const lines = md.trim().split("\n");
    expect(lines[0]).toBe("| metric | value |");
    expect(lines).toHaveLength(5);
    expect(lines[2]).toBe("| leaderChanges | 0 |");
    expect(lines[3]).toBe("| p99 ms | 12.346 |");
    expect(lines[4]!.slice(1, -1).split("|")).toHaveLength(2);
  });
});

describe("soak report", () => {
  const agent = (id: string, role: SoakAgent["role"], hwmMb: number, peakSampledMb: number, rssMb = [50, 51, 52]): SoakAgent => ({
    id,
    role,
    hwmMb,
    peakSampledMb,
    finalRssMb: rssMb.at(-1)!,
    cpuPct: 5.5,
    rssMb,
  });
  const soak: SoakResults = {
    startedAt: "2026-12-03T10:00:00.000Z",
    host: "vm",
    node: "v20.20.2 (this machine; the droplets run Node.js 22.12.0)",
    nodeFlags: ["--max-semi-space-size=1", "--lite-mode"],
    minutes: 10,
    rssTargetMb: 60,
    seriesStepS: 5,
    summary: { "leader changes": 0, "Reserved IP answers at the end": "true" },
    agents: [
      agent("lb-blue-2", "leader", 57.25, 58.5),
      agent("lb-blue-1", "idle follower", 55, 54),
      agent("lb-blue-3", "idle follower", 53.5, 56.75),
      agent("witness", "witness", 51, 50),
    ],
  };

  it("the peak of a role is the largest of its agents' high-water marks and samples", () => {
    expect(soakPeakOfRole(soak, "leader")).toBe(58.5);
    expect(soakPeakOfRole(soak, "idle follower")).toBe(56.75);
    expect(soakPeakOfRole(soak, "witness")).toBe(51);
    expect(soakPeakOfRole({ ...soak, agents: soak.agents.slice(0, 1) }, "witness")).toBeNull();
  });

  it("markdown: the Node.js and flags, the summary table, one row per agent with its role, and the verdict per role", () => {
    const md = renderSoakResultsMarkdown(soak, "npm run bench:soak -- --minutes 10");
    expect(md.startsWith("# Soak: `npm run bench:soak -- --minutes 10`\n")).toBe(true);
    expect(md).toContain("Node.js v20.20.2 (this machine; the droplets run Node.js 22.12.0)");
    expect(md).toContain("`--max-semi-space-size=1 --lite-mode`");
    expect(rowOf(md, "leader changes")).toEqual(["leader changes", "0"]);
    expect(md).toContain("Peak resident memory per role: leader 58.5 MB, idle follower 56.8 MB, witness 51 MB, against the 60 MB target: met.");
    expect(rowOf(md, "lb-blue-2")).toEqual(["lb-blue-2", "leader", "58.5", "57.3", "58.5", "52", "5.5"]);
    expect(rowOf(md, "lb-blue-3").slice(0, 3)).toEqual(["lb-blue-3", "idle follower", "56.8"]);
    const over = renderSoakResultsMarkdown({ ...soak, agents: [...soak.agents, agent("lb-blue-4", "idle follower", 61.5, 60)] }, "x");
    expect(over).toContain("idle follower 61.5 MB");
    expect(over).toContain("target: **missed** by 1.5 MB");
  });

  it("svg: one line per agent colored by role, the target line, well formed", () => {
    const svg = renderSoakSvg(soak);
    expect(svg.startsWith("<svg")).toBe(true);
    const lines = [...svg.matchAll(/<path d="M[^"]*L[^"]*" fill="none" stroke="(#[0-9a-f]{6})"/g)].map((m) => m[1]);
    expect(lines).toHaveLength(4);
    expect(new Set(lines).size).toBe(3);
    expect(lines[1]).toBe(lines[2]);
    expect(svg).toContain(">target 60 MB</text>");
    expect(svg).toContain("lb-blue-2 (leader)");
    expect(svg).not.toMatch(/NaN|undefined|Infinity/);
    const stack: string[] = [];
    for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)\b[^<>]*?(\/?)>/g)) {
      if (m[3]) continue;
      if (m[1]) expect(stack.pop()).toBe(m[2]);
      else stack.push(m[2]!);
    }
    expect(stack).toEqual([]);
    // Higher RSS is drawn higher: the y of a 52 MB point is above (smaller than) that of a 50 MB point.
    const d = /<path d="(M[^"]*)" fill="none"/.exec(svg)![1]!;
    const ys = [...d.matchAll(/[ML][\d.]+ ([\d.]+)/g)].map((m) => Number(m[1]));
    expect(ys[2]!).toBeLessThan(ys[0]!);
  });

  it("writes soak.json, soak.md and soak.svg", () => {
    const dir = mkdtempSync(join(tmpdir(), "halb-soak-report-"));
    try {
      writeSoakReport(soak, dir, "cmd");
      expect(JSON.parse(readFileSync(join(dir, "soak.json"), "utf8"))).toEqual(soak);
      expect(readFileSync(join(dir, "soak.md"), "utf8")).toBe(renderSoakResultsMarkdown(soak, "cmd"));
      expect(readFileSync(join(dir, "soak.svg"), "utf8")).toBe(renderSoakSvg(soak));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
