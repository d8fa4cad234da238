/**
 * Pure rendering of failover benchmark results: a markdown summary and a standalone SVG plot, plus a small
 * writer that puts `failover.json`, `failover.md` and `failover.svg` into a directory. No dependencies
 * beyond `node:fs` / `node:path` (only the writer touches the file system).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface FailoverSample {
  downtimeMs: number;
  failedRequests: number;
  apiRequests: number;
  assigns: number;
}

export type FailoverSystem = "fipd" | "keepalived-copied" | "keepalived-tuned";

export interface FailoverCase {
  system: FailoverSystem;
  scenario: string;
  actionDelayMs: number;
  samples: FailoverSample[];
  note?: string;
}

export interface FailoverResults {
  startedAt: string;
  host: string;
  cases: FailoverCase[];
}

export interface CaseSummary {
  median: number | null;
  min: number | null;
  max: number | null;
  n: number;
  medianApiRequests: number | null;
  medianAssigns: number | null;
  maxFailed: number | null;
}

/** Fixed order of the systems in tables, bars and legend. */
export const SYSTEMS: readonly FailoverSystem[] = ["fipd", "keepalived-copied", "keepalived-tuned"];

/** Fixed bar colors, one per system. */
export const SYSTEM_COLORS: Readonly<Record<FailoverSystem, string>> = {
  fipd: "#1f77b4",
  "keepalived-copied": "#ff7f0e",
  "keepalived-tuned": "#2ca02c",
};

/** Median of the values; the mean of the two middle ones for an even count; null when empty. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function summarize(c: FailoverCase): CaseSummary {
  const d = c.samples.map((s) => s.downtimeMs);
  if (d.length === 0) return { median: null, min: null, max: null, n: 0, medianApiRequests: null, medianAssigns: null, maxFailed: null };
  return {
    median: median(d),
    min: Math.min(...d),
    max: Math.max(...d),
    n: d.length,
    medianApiRequests: median(c.samples.map((s) => s.apiRequests)),
    medianAssigns: median(c.samples.map((s) => s.assigns)),
    maxFailed: Math.max(...c.samples.map((s) => s.failedRequests)),
  };
}

/** One row of the report: a (scenario, actionDelayMs) pair and the case of each system that ran it. */
export interface FailoverGroup {
  scenario: string;
  actionDelayMs: number;
  bySystem: Partial<Record<FailoverSystem, FailoverCase>>;
}

/**
 * Groups cases by (scenario, actionDelayMs) in order of first appearance. Should a system have two cases for
 * the same row, their samples are pooled (and notes joined), so no result is silently dropped.
 */
export function groupCases(r: FailoverResults): FailoverGroup[] {
  const groups = new Map<string, FailoverGroup>();
  for (const c of r.cases) {
    const key = JSON.stringify([c.scenario, c.actionDelayMs]);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { scenario: c.scenario, actionDelayMs: c.actionDelayMs, bySystem: {} }));
    const prev = g.bySystem[c.system];
    if (!prev) g.bySystem[c.system] = { ...c, samples: [...c.samples] };
    else {
      const notes = [prev.note, c.note].filter((n): n is string => !!n);
      g.bySystem[c.system] = { ...prev, samples: [...prev.samples, ...c.samples], ...(notes.length ? { note: notes.join("; ") } : {}) };
    }
  }
  return [...groups.values()];
}

/** A number for humans: integers as they are, otherwise at most one decimal. */
function fmt(n: number): string {
  if (Number.isInteger(n)) return String(n);
  return String(Number(n.toFixed(1)));
}

/** Table cell text: no pipes (they would split the cell) and no line breaks (they would end the row). */
function cell(s: string): string {
  return s
    .replace(/\|/g, "¦")
    .replace(/[\r\n]+/g, " ")
    .trim();
}

function row(cells: readonly string[]): string {
  return `| ${cells.map(cell).join(" | ")} |`;
}

function table(header: readonly string[], rows: readonly (readonly string[])[], align?: readonly ("l" | "r")[]): string {
  const sep = header.map((_, i) => ((align?.[i] ?? "l") === "r" ? "---:" : "---"));
  return [row(header), `|${sep.map((s) => ` ${s} `).join("|")}|`, ...rows.map(row)].join("\n");
}

function downtimeCell(c: FailoverCase | undefined): string {
  if (!c) return "n/a";
  const s = summarize(c);
  if (s.median === null) return "no samples";
  return `${fmt(s.median)} (${fmt(s.min!)}–${fmt(s.max!)}) ms`;
}

/** fipd median divided by the other system's median, 2 decimals; "n/a" if either is missing, "—" if the divisor is 0. */
function ratioCell(fipd: FailoverCase | undefined, other: FailoverCase | undefined): string {
  if (!fipd || !other) return "n/a";
  const a = summarize(fipd).median;
  const b = summarize(other).median;
  if (a === null || b === null) return "n/a";
  if (b === 0) return "—";
  return (a / b).toFixed(2);
}

function optional(n: number | null | undefined): string {
  return n === null || n === undefined ? "n/a" : fmt(n);
}

export function renderFailoverMarkdown(r: FailoverResults): string {
  const groups = groupCases(r);
  const out: string[] = [];
  out.push("# Failover benchmark", "");
  out.push(`Started at ${r.startedAt} on host ${r.host}.`, "");

  out.push("## Downtime per failover", "");
  out.push("Median (min–max) over the runs of each case; the last two columns are ratios of medians (below 1: fipd is faster).", "");
  out.push(
    table(
      ["scenario", "action delay", ...SYSTEMS, "fipd / copied", "fipd / tuned"],
      groups.map((g) => [
        g.scenario,
        `${fmt(g.actionDelayMs)} ms`,
        ...SYSTEMS.map((s) => downtimeCell(g.bySystem[s])),
        ratioCell(g.bySystem.fipd, g.bySystem["keepalived-copied"]),
        ratioCell(g.bySystem.fipd, g.bySystem["keepalived-tuned"]),
      ]),
      ["l", "r", "r", "r", "r", "r", "r"],
    ),
    "",
  );

  out.push("## API usage per failover", "");
  out.push(
    "Median DigitalOcean API requests and Reserved IP assigns per failover, the largest number of failed client requests in one run, and the number of runs.",
    "",
  );
  const header = ["scenario", "action delay"];
  for (const s of SYSTEMS) header.push(`${s} API requests`, `${s} assigns`, `${s} failed (max)`, `${s} runs`);
  out.push(
    table(
      header,
      groups.map((g) => {
        const cells = [g.scenario, `${fmt(g.actionDelayMs)} ms`];
        for (const s of SYSTEMS) {
          const c = g.bySystem[s];
          const sum = c ? summarize(c) : undefined;
          cells.push(optional(sum?.medianApiRequests), optional(sum?.medianAssigns), optional(sum?.maxFailed), c ? String(sum!.n) : "n/a");
        }
        return cells;
      }),
      header.map((_, i) => (i === 0 ? "l" : "r")),
    ),
    "",
  );

  const notes = groups.flatMap((g) =>
    SYSTEMS.flatMap((s) => (g.bySystem[s]?.note ? [`- ${cell(`${g.scenario}, ${fmt(g.actionDelayMs)} ms, ${s}: ${g.bySystem[s]!.note!}`)}`] : [])),
  );
  if (notes.length) out.push("## Notes", "", ...notes, "");
  return out.join("\n");
}

/** A generic two-column (metric | value) table, e.g. for soak test results. */
export function renderSoakMarkdown(s: Record<string, number | string>): string {
  const rows = Object.entries(s).map(([k, v]) => [k, typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Number(v.toFixed(3)))) : v]);
  return `${table(["metric", "value"], rows, ["l", "r"])}\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// SVG

/** Escapes text for use in SVG character data and in double-quoted attributes. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/**
 * A nice axis for values up to `max`: a step of 1, 2 or 5 times a power of ten (at least 1 ms) and 3 to 5 steps,
 * so 4 to 6 ticks counting 0. The top is the smallest multiple of the step that is ≥ max.
 */
export function niceAxis(max: number): { top: number; step: number; ticks: number[] } {
  const m = Number.isFinite(max) && max > 5 ? max : 5;
  let step = 1;
  for (let exp = 1; ; exp *= 10) {
    const s = [1, 2, 5].map((k) => k * exp).find((c) => Math.ceil(m / c) <= 5);
    if (s !== undefined) {
      step = s;
      break;
    }
  }
  const n = Math.ceil(m / step);
  const ticks = Array.from({ length: n + 1 }, (_, i) => i * step);
  return { top: n * step, step, ticks };
}

const SVG_WIDTH = 900;
const LEFT = 240; // room for group labels
const RIGHT = 70; // room for the last median label
const TOP = 76; // title and legend
const BOTTOM = 44; // axis labels
const BAR = 14;
const BAR_GAP = 4;
const GROUP_GAP = 18;

/** Rounds a coordinate to 2 decimals, so that the SVG text stays short and stable. */
const px = (v: number) => Number(v.toFixed(2));

/** What every plot starts with, above its plot area of height `plotH` whose left edge is `left`. */
interface SvgFrameOptions {
  left: number;
  plotH: number;
  /** The document's <title> (a tooltip and what a file browser shows). */
  title: string;
  /** The bold heading and the grey line below it. */
  heading: string;
  subtitle: string;
}

/**
 * Opens a plot: the <svg> element sized for the plot area, its <title>, the heading and the subtitle. Returns the
 * lines written so far (the plot pushes its own to them, then `closeSvg`) and the y of the plot area's bottom.
 */
function svgFrame(f: SvgFrameOptions): { o: string[]; axisY: number } {
  const height = TOP + f.plotH + BOTTOM;
  const o = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${SVG_WIDTH}" height="${height}" viewBox="0 0 ${SVG_WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(f.title)}</title>`,
    `<text x="${f.left}" y="20" font-size="15" font-weight="bold">${escapeXml(f.heading)}</text>`,
    `<text x="${f.left}" y="38" fill="#555">${escapeXml(f.subtitle)}</text>`,
  ];
  return { o, axisY: TOP + f.plotH };
}

function closeSvg(o: string[]): string {
  o.push("</svg>");
  return `${o.join("\n")}\n`;
}

/** A horizontal grouped bar chart: `groups` groups of one bar per legend entry, values from 0 to `max`. */
interface BarChartOptions extends Omit<SvgFrameOptions, "left" | "plotH"> {
  groups: number;
  /** One swatch per bar of a group, in the order of the bars. */
  legend: readonly { label: string; color: string }[];
  max: number;
  tickLabel: (value: number) => string;
  /** What the value axis measures, below its tick labels. */
  axisCaption: string;
  /** Tick marks below the axis and the vertical axis line at 0. */
  axisMarks: boolean;
}

/**
 * Draws a bar chart's frame: svgFrame, the legend, the grid lines with their tick labels and the value axis.
 * Returns the x of a value and the y of a group's first bar and of a bar; the chart draws the group labels and
 * the bars itself.
 */
function barChartFrame(f: BarChartOptions): {
  o: string[];
  x: (value: number) => number;
  groupY: (gi: number) => { top: number; mid: number };
  barY: (gi: number, bi: number) => number;
} {
  const axis = niceAxis(f.max);
  const plotW = SVG_WIDTH - LEFT - RIGHT;
  const x = (v: number) => LEFT + (v / axis.top) * plotW;
  const groupH = f.legend.length * (BAR + BAR_GAP) - BAR_GAP + GROUP_GAP;
  const { o, axisY } = svgFrame({ ...f, left: LEFT, plotH: Math.max(1, f.groups) * groupH });

  // Legend: swatches are paths, so that every <rect> in the document is a bar.
  let lx = LEFT;
  for (const { label, color } of f.legend) {
    o.push(`<path d="M${lx} 50h12v12h-12z" fill="${color}"/>`);
    o.push(`<text x="${lx + 17}" y="60">${escapeXml(label)}</text>`);
    lx += 17 + label.length * 7 + 24;
  }

  // Grid lines and axis.
  for (const t of axis.ticks) {
    const tx = px(x(t));
    o.push(`<line x1="${tx}" y1="${TOP - 6}" x2="${tx}" y2="${axisY}" stroke="#e3e3e3" stroke-width="1"/>`);
    if (f.axisMarks) o.push(`<line x1="${tx}" y1="${axisY}" x2="${tx}" y2="${axisY + 5}" stroke="#333" stroke-width="1"/>`);
    o.push(`<text x="${tx}" y="${axisY + 18}" text-anchor="middle">${escapeXml(f.tickLabel(t))}</text>`);
  }
  o.push(`<line x1="${LEFT}" y1="${axisY}" x2="${px(x(axis.top))}" y2="${axisY}" stroke="#333" stroke-width="1"/>`);
  if (f.axisMarks) o.push(`<line x1="${LEFT}" y1="${TOP - 6}" x2="${LEFT}" y2="${axisY}" stroke="#333" stroke-width="1"/>`);
  o.push(`<text x="${px(LEFT + plotW / 2)}" y="${axisY + 36}" text-anchor="middle" fill="#555">${escapeXml(f.axisCaption)}</text>`);

  const groupY = (gi: number) => {
    const top = TOP + gi * groupH + GROUP_GAP / 2;
    return { top, mid: top + (groupH - GROUP_GAP) / 2 };
  };
  return { o, x, groupY, barY: (gi, bi) => groupY(gi).top + bi * (BAR + BAR_GAP) };
}

/** Horizontal grouped bars: one group per (scenario, actionDelayMs), one bar per system, whiskers min–max. */
export function renderFailoverSvg(r: FailoverResults): string {
  const groups = groupCases(r);
  const summaries = groups.map((g) => SYSTEMS.map((s) => (g.bySystem[s] ? summarize(g.bySystem[s]!) : undefined)));
  const { o, x, groupY, barY } = barChartFrame({
    title: `Failover downtime, ${r.startedAt}, ${r.host}`,
    heading: "Failover downtime (bar: median, whisker: min–max)",
    subtitle: `${r.startedAt} · ${r.host}`,
    groups: groups.length,
    legend: SYSTEMS.map((s) => ({ label: s, color: SYSTEM_COLORS[s] })),
    max: Math.max(0, ...summaries.flat().map((s) => s?.max ?? 0)),
    tickLabel: (t) => `${fmt(t)} ms`,
    axisCaption: "downtime",
    axisMarks: true,
  });

  groups.forEach((g, gi) => {
    const midY = groupY(gi).mid;
    o.push(`<text x="${LEFT - 8}" y="${px(midY - 2)}" text-anchor="end">${escapeXml(g.scenario)}</text>`);
    o.push(`<text x="${LEFT - 8}" y="${px(midY + 12)}" text-anchor="end" fill="#555">${escapeXml(`action delay ${fmt(g.actionDelayMs)} ms`)}</text>`);
    SYSTEMS.forEach((s, si) => {
      const sum = summaries[gi]![si];
      const by = barY(gi, si);
      const cy = px(by + BAR / 2);
      if (!sum) {
        // this system has no case here (e.g. keepalived and a blue-green switch)
        o.push(`<text x="${LEFT + 5}" y="${px(by + BAR - 3)}" fill="#aaa">${escapeXml(`${s}: n/a`)}</text>`);
        return;
      }
      if (sum.median === null) {
        o.push(`<text x="${LEFT + 4}" y="${px(by + BAR - 3)}" fill="#999">${escapeXml(`${s}: no samples`)}</text>`);
        return;
      }
      o.push(
        `<rect x="${LEFT}" y="${px(by)}" width="${px(x(sum.median) - LEFT)}" height="${BAR}" fill="${SYSTEM_COLORS[s]}"><title>${escapeXml(`${s}: median ${fmt(sum.median)} ms, min ${fmt(sum.min!)} ms, max ${fmt(sum.max!)} ms, n=${sum.n}`)}</title></rect>`,
      );
      const x1 = px(x(sum.min!));
      const x2 = px(x(sum.max!));
      o.push(`<line x1="${x1}" y1="${cy}" x2="${x2}" y2="${cy}" stroke="#222" stroke-width="1"/>`);
      o.push(`<line x1="${x1}" y1="${px(cy - 4)}" x2="${x1}" y2="${px(cy + 4)}" stroke="#222" stroke-width="1"/>`);
      o.push(`<line x1="${x2}" y1="${px(cy - 4)}" x2="${x2}" y2="${px(cy + 4)}" stroke="#222" stroke-width="1"/>`);
      const labelX = px(Math.max(x(sum.median), x(sum.max!)) + 5);
      o.push(`<text x="${labelX}" y="${px(by + BAR - 3)}">${escapeXml(`${fmt(sum.median)} ms`)}</text>`);
    });
  });

  return closeSvg(o);
}

/** Writes failover.json (pretty), failover.md and failover.svg into dir, creating it if needed. */
export function writeFailoverReport(r: FailoverResults, dir: string): { json: string; md: string; svg: string } {
  mkdirSync(dir, { recursive: true });
  const paths = { json: join(dir, "failover.json"), md: join(dir, "failover.md"), svg: join(dir, "failover.svg") };
  writeFileSync(paths.json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(paths.md, renderFailoverMarkdown(r));
  writeFileSync(paths.svg, renderFailoverSvg(r));
  return paths;
}

/** What bench/reload.ts writes to reload.json (the part the plot reads). */
export interface ReloadResults {
  when: string;
  host: string;
  rate: number;
  results: { case: string; kind: "reload" | "failover"; clients: { mode: string; total: number; failed: number }[] }[];
}

const RELOAD_MODE_COLORS: Record<string, string> = { new: "#1f77b4", keepalive: "#ff7f0e" };

/** Horizontal grouped bars: one group per case, one bar per client (failed requests of the total). */
export function renderReloadSvg(r: ReloadResults): string {
  const modes = [...new Set(r.results.flatMap((c) => c.clients.map((x) => x.mode)))];
  const { o, x, groupY, barY } = barChartFrame({
    title: `Failed requests per reload, ${r.when}, ${r.host}`,
    heading: `Failed requests during reloads and a failover (${r.rate} requests/s per client)`,
    subtitle: `${r.when} · ${r.host}`,
    groups: r.results.length,
    legend: modes.map((m) => ({ label: m === "new" ? "new connection per request" : m, color: RELOAD_MODE_COLORS[m] ?? "#777" })),
    max: Math.max(0, ...r.results.flatMap((c) => c.clients.map((x) => x.failed))),
    tickLabel: fmt,
    axisCaption: "failed requests",
    axisMarks: false,
  });
  r.results.forEach((c, gi) => {
    o.push(`<text x="${LEFT - 8}" y="${px(groupY(gi).mid + 4)}" text-anchor="end">${escapeXml(c.case.replace(/ \(.*\)$/, ""))}</text>`);
    modes.forEach((m, mi) => {
      const cl = c.clients.find((x) => x.mode === m);
      if (!cl) return;
      const y = barY(gi, mi);
      o.push(`<rect x="${LEFT}" y="${px(y)}" width="${px(x(cl.failed) - LEFT)}" height="${BAR}" fill="${RELOAD_MODE_COLORS[m] ?? "#777"}"/>`);
      o.push(`<text x="${px(x(cl.failed) + 4)}" y="${px(y + BAR - 3)}">${escapeXml(`${cl.failed} / ${cl.total}`)}</text>`);
    });
  });
  return closeSvg(o);
}

// ---------------------------------------------------------------------------------------------------------------
// Soak

/** One agent of the soak: its resident memory (VmRSS) and CPU, read from /proc. */
export interface SoakAgent {
  id: string;
  /** "leader" if it led at any 1 s sample, else "idle follower" (an LB) or "witness". */
  role: "leader" | "idle follower" | "witness";
  /** The kernel's high-water mark of VmRSS (VmHWM) at the end: the peak since the agent started, start-up included. */
  hwmMb: number;
  /** The largest 1 s sample of VmRSS during the soak. */
  peakSampledMb: number;
  finalRssMb: number;
  cpuPct: number;
  /** VmRSS every `seriesStepS` seconds from the soak's start (MB), for the plot. */
  rssMb: number[];
}

/** What bench/soak.ts writes to soak.json. */
export interface SoakResults {
  startedAt: string;
  host: string;
  /** The Node.js that ran the agents (process.version) and a note on the droplets' one. */
  node: string;
  /** The flags the agents ran with: the unit's ExecStart (testbed/harness/node-flags.ts). */
  nodeFlags: string[];
  minutes: number;
  rssTargetMb: number;
  seriesStepS: number;
  /** The cluster-wide figures: one metric | value table. */
  summary: Record<string, number | string>;
  agents: SoakAgent[];
}

/** The peak of an agent that the target is judged on: the larger of its high-water mark and its samples. */
export function soakPeakMb(a: SoakAgent): number {
  return Math.max(a.hwmMb, a.peakSampledMb);
}

/** The largest peak of the agents of one role; null if no agent had it. */
export function soakPeakOfRole(r: SoakResults, role: SoakAgent["role"]): number | null {
  const peaks = r.agents.filter((a) => a.role === role).map(soakPeakMb);
  return peaks.length ? Math.max(...peaks) : null;
}

const SOAK_ROLES: readonly SoakAgent["role"][] = ["leader", "idle follower", "witness"];

export function renderSoakResultsMarkdown(r: SoakResults, command: string): string {
  const out: string[] = [`# Soak: \`${command}\``, ""];
  out.push(
    `Started at ${r.startedAt} on host ${r.host}, ${r.minutes} minutes. Node.js ${r.node}; agent flags (the unit's ExecStart): \`${r.nodeFlags.join(" ")}\`.`,
    "",
  );
  out.push(renderSoakMarkdown(r.summary).trimEnd(), "");
  out.push("## Agent memory and CPU", "");
  const verdicts = SOAK_ROLES.flatMap((role) => {
    const p = soakPeakOfRole(r, role);
    return p === null ? [] : [`${role} ${fmt(p)} MB`];
  });
  const worst = Math.max(...r.agents.map(soakPeakMb));
  out.push(
    `Peak resident memory per role: ${verdicts.join(", ")}, against the ${fmt(r.rssTargetMb)} MB target: ${worst <= r.rssTargetMb ? "met" : `**missed** by ${fmt(worst - r.rssTargetMb)} MB`}. The peak is the larger of the kernel's high-water mark (VmHWM, start-up included) and the largest 1 s sample of VmRSS during the soak.`,
    "",
  );
  out.push(
    table(
      ["agent", "role", "peak RSS (MB)", "VmHWM (MB)", "largest 1 s sample (MB)", "RSS at the end (MB)", "CPU, mean (% of one core)"],
      r.agents.map((a) => [a.id, a.role, fmt(soakPeakMb(a)), fmt(a.hwmMb), fmt(a.peakSampledMb), fmt(a.finalRssMb), fmt(a.cpuPct)]),
      ["l", "l", "r", "r", "r", "r", "r"],
    ),
    "",
  );
  return out.join("\n");
}

const SOAK_ROLE_COLORS: Readonly<Record<SoakAgent["role"], string>> = { leader: "#d62728", "idle follower": "#1f77b4", witness: "#2ca02c" };
const SOAK_DASHES = ["", "6 3", "2 2", "8 2 2 2"];

/** RSS over time, one line per agent (colored by role), and the target as a dashed line. */
export function renderSoakSvg(r: SoakResults): string {
  const plotW = SVG_WIDTH - 70 - 100; // room on the right for the target's label
  const left = 70;
  const plotH = 260;
  const { o, axisY } = svgFrame({
    left,
    plotH,
    title: `Agent RSS during the soak, ${r.startedAt}, ${r.host}`,
    heading: `Agent resident memory during the soak (VmRSS every ${fmt(r.seriesStepS)} s)`,
    subtitle: `${r.startedAt} · ${r.host} · Node.js ${r.node}`,
  });
  const maxLen = Math.max(1, ...r.agents.map((a) => a.rssMb.length));
  const xAxis = niceAxis((maxLen - 1) * r.seriesStepS);
  const yAxis = niceAxis(Math.max(r.rssTargetMb * 1.2, ...r.agents.flatMap((a) => [...a.rssMb, soakPeakMb(a)])));
  const x = (s: number) => left + (s / xAxis.top) * plotW;
  const y = (mb: number) => axisY - (mb / yAxis.top) * plotH;
  let lx = left;
  r.agents.forEach((a, i) => {
    o.push(
      `<path d="M${lx} 56h18" stroke="${SOAK_ROLE_COLORS[a.role]}" stroke-width="2"${SOAK_DASHES[i % SOAK_DASHES.length] ? ` stroke-dasharray="${SOAK_DASHES[i % SOAK_DASHES.length]}"` : ""}/>`,
    );
    const label = `${a.id} (${a.role})`;
    o.push(`<text x="${lx + 23}" y="60">${escapeXml(label)}</text>`);
    lx += 23 + label.length * 7 + 18;
  });
  for (const t of yAxis.ticks) {
    const ty = px(y(t));
    o.push(`<line x1="${left}" y1="${ty}" x2="${left + plotW}" y2="${ty}" stroke="#e3e3e3" stroke-width="1"/>`);
    o.push(`<text x="${left - 6}" y="${px(ty + 4)}" text-anchor="end">${escapeXml(`${fmt(t)} MB`)}</text>`);
  }
  for (const t of xAxis.ticks) {
    const tx = px(x(t));
    o.push(`<line x1="${tx}" y1="${axisY}" x2="${tx}" y2="${axisY + 5}" stroke="#333" stroke-width="1"/>`);
    o.push(`<text x="${tx}" y="${axisY + 18}" text-anchor="middle">${escapeXml(`${fmt(t / 60)} min`)}</text>`);
  }
  o.push(`<line x1="${left}" y1="${axisY}" x2="${left + plotW}" y2="${axisY}" stroke="#333" stroke-width="1"/>`);
  o.push(`<line x1="${left}" y1="${TOP}" x2="${left}" y2="${axisY}" stroke="#333" stroke-width="1"/>`);
  const ty = px(y(r.rssTargetMb));
  o.push(`<line x1="${left}" y1="${ty}" x2="${left + plotW}" y2="${ty}" stroke="#000" stroke-width="1" stroke-dasharray="4 4"/>`);
  o.push(`<text x="${left + plotW + 4}" y="${px(ty + 4)}">${escapeXml(`target ${fmt(r.rssTargetMb)} MB`)}</text>`);
  r.agents.forEach((a, i) => {
    if (a.rssMb.length === 0) return;
    const d = a.rssMb.map((mb, k) => `${k === 0 ? "M" : "L"}${px(x(k * r.seriesStepS))} ${px(y(mb))}`).join("");
    const dash = SOAK_DASHES[i % SOAK_DASHES.length];
    o.push(
      `<path d="${d}" fill="none" stroke="${SOAK_ROLE_COLORS[a.role]}" stroke-width="1.5"${dash ? ` stroke-dasharray="${dash}"` : ""}><title>${escapeXml(`${a.id} (${a.role}): peak ${fmt(soakPeakMb(a))} MB`)}</title></path>`,
    );
  });
  o.push(`<text x="${px(left + plotW / 2)}" y="${axisY + 36}" text-anchor="middle" fill="#555">time into the soak</text>`);
  return closeSvg(o);
}

/** Writes soak.json (pretty), soak.md and soak.svg into dir, creating it if needed. */
export function writeSoakReport(r: SoakResults, dir: string, command: string): { json: string; md: string; svg: string } {
  mkdirSync(dir, { recursive: true });
  const paths = { json: join(dir, "soak.json"), md: join(dir, "soak.md"), svg: join(dir, "soak.svg") };
  writeFileSync(paths.json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(paths.md, renderSoakResultsMarkdown(r, command));
  writeFileSync(paths.svg, renderSoakSvg(r));
  return paths;
}
