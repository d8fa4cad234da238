/**
 * `npm run bench:failover [-- --reps-kill 10 --reps 5 --delays 0,2000 --systems fipd,keepalived-copied,keepalived-tuned]`
 *
 * Client-visible downtime of a failover, in the network test bed of the end-to-end tests (real
 * HAProxy, the router's 1:1 NAT, the emulator's API with its action delay), for fipd and for
 * keepalived as users set it up (bench/keepalived.ts). The client opens a new connection every
 * 50 ms on a fixed schedule with a 1 s timeout; downtime = the longest run of failed requests × 50 ms.
 * Also counts API requests and assigns per failover. Needs root. Not part of CI.
 *
 * Writes bench/results/failover.{json,md,svg}.
 */
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { buildId } from "../agent/build-id.js";
import { rollingOrder } from "../components/rolling-order.js";
import { BUNDLE, NetBed, RESERVED_IP, downtime, sh } from "../testbed/netbed/bed.js";
import { KeepalivedCluster, type KeepalivedFlavor } from "./keepalived.js";
import { writeFailoverReport, type FailoverCase, type FailoverResults, type FailoverSample, type FailoverSystem } from "./report.js";

const { values } = parseArgs({
  options: {
    "reps-kill": { type: "string", default: "10" },
    reps: { type: "string", default: "5" },
    delays: { type: "string", default: "0,2000" },
    systems: { type: "string", default: "fipd,keepalived-copied,keepalived-tuned" },
    scenarios: { type: "string", default: "kill9,linkcut,haproxy,graceful,bluegreen,rolling" },
    out: { type: "string", default: resolve(__dirname, "results") },
  },
});

type Scenario = "kill9" | "linkcut" | "haproxy" | "graceful" | "bluegreen" | "rolling";
const SCENARIO_NAMES: Record<Scenario, string> = {
  kill9: "holder killed (-9)",
  linkcut: "holder's links cut",
  haproxy: "HAProxy stopped on holder",
  graceful: "graceful handover (SIGTERM)",
  bluegreen: "blue-green switch",
  rolling: "rolling upgrade of every agent",
};

/** What the benchmark needs from a system under test. */
interface Driver {
  system: FailoverSystem;
  /** Start everything and wait until one droplet holds the IP and answers. */
  up(): Promise<void>;
  supports(s: Scenario): boolean;
  /** Break the holder (or switch color); returns the droplet that held the IP. */
  act(s: Scenario, holder: string): Promise<void>;
  /** Put the broken droplet back and wait until the system is stable again. */
  restore(s: Scenario, victim: string): Promise<void>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Wait until every droplet of the system is ready (`ready`), one of `candidates` holds the IP, has
 * held it for `quietMs` with no assign in progress, and answers through it. The next repetition then
 * starts from a whole, settled system: at a 2000 ms action delay, a keepalived MASTER that preempted
 * back after the restore has an assign in flight that would otherwise land during the next run.
 */
async function stableHolder(bed: NetBed, candidates: string[], ready: () => Promise<boolean>, quietMs = 1_500, timeoutMs = 60_000): Promise<string> {
  let last: string | null = null;
  let since = Date.now();
  return bed.waitFor(
    "every droplet ready and a stable holder that answers",
    async () => {
      if (!(await ready())) return null;
      const h = bed.emulator.reservedIpLocked(RESERVED_IP) ? null : bed.holder();
      if (h !== last) {
        last = h;
        since = Date.now();
      }
      if (!h || !candidates.includes(h) || Date.now() - since < quietMs) return null;
      return (await bed.curl(RESERVED_IP)) === h ? h : null;
    },
    timeoutMs,
    100,
  );
}

function cutLinks(bed: NetBed, id: string, up: boolean): void {
  const n = bed.node(id);
  for (const dev of ["eth0", "eth1"]) sh("ip", ["-n", n.ns, "link", "set", dev, up ? "up" : "down"]);
  if (up) sh("ip", ["-n", n.ns, "route", "replace", "default", "via", "203.0.113.1", "src", n.publicIp]);
}

const LBS = ["lb-blue-1", "lb-blue-2", "lb-green-1", "lb-green-2"];

function fipdDriver(bed: NetBed): Driver {
  const blues = ["lb-blue-1", "lb-blue-2"];
  // Every LB agent sees its HAProxy healthy (so a successor is eligible) and runs.
  const ready = async () => (await Promise.all(LBS.map((id) => bed.status(id)))).every((s) => s?.healthy === true);
  let stopping: Promise<unknown> = Promise.resolve();
  let upgrades = 0;
  return {
    system: "fipd",
    async up() {
      for (const id of LBS) await bed.installHaproxy(id);
      for (const id of bed.nodes.keys()) await bed.startAgent(id);
      await stableHolder(bed, blues, ready);
    },
    supports: () => true,
    async act(s, holder) {
      if (s === "kill9") {
        await bed.stopAgent(holder, "SIGKILL");
        await bed.stopHaproxy(holder);
      } else if (s === "linkcut") cutLinks(bed, holder, false);
      else if (s === "haproxy") await bed.stopHaproxy(holder);
      else if (s === "graceful")
        stopping = bed.stopAgent(holder, "SIGTERM"); // returns when the agent has exited
      else if (s === "bluegreen") {
        bed.activeColor = bed.activeColor === "blue" ? "green" : "blue";
        for (const id of bed.nodes.keys()) await bed.applyConfig(id);
      } else if (s === "rolling") {
        // What a bundle upgrade does (components/scripts.ts rollingRestartScript, then
        // leaderRestartScript), droplet by droplet in the stack's order, to a new build (the bundle
        // plus a comment, so its hash differs).
        const next = join(bed.dir, `fipd-upgrade-${++upgrades}.cjs`);
        writeFileSync(next, readFileSync(BUNDLE, "utf8") + `\n// bench upgrade ${upgrades}\n`);
        const build = buildId(createHash("sha256").update(readFileSync(next)).digest("hex"));
        const nodes = [...bed.nodes.values()].map((n) => ({ name: n.id, color: n.color, role: n.role }));
        const restart = async (id: string) => {
          await bed.stopAgent(id, "SIGTERM");
          await bed.startAgent(id, next);
          await bed.waitFor(
            `${id} back and the cluster healthy`,
            async () => (await bed.fipd(id, ["status", "--wait-healthy", "--timeout", "2"])).code === 0,
            60_000,
            100,
          );
        };
        const order = rollingOrder(nodes, bed.activeColor).map((n) => n.name);
        // First pass (rollingRestartScript): every agent but the leader.
        for (const id of order) if ((await bed.status(id))?.role !== "leader") await restart(id);
        // Second pass (leaderRestartScript): whoever still runs the old build, after a handover.
        for (const id of order) {
          const st = await bed.status(id);
          if (st?.build === build) continue;
          if (st?.role === "leader") await bed.fipd(id, ["handover", "--prefer-build", build]);
          await restart(id);
        }
      }
    },
    async restore(s, victim) {
      await stopping;
      if (s === "linkcut") cutLinks(bed, victim, true);
      if (s === "bluegreen") {
        bed.activeColor = "blue";
        for (const id of bed.nodes.keys()) await bed.applyConfig(id);
      }
      for (const id of LBS) if (!bed.haproxyPid(id)) await bed.installHaproxy(id);
      for (const id of bed.nodes.keys()) if (!bed.node(id).agent) await bed.startAgent(id);
      await stableHolder(bed, blues, ready);
    },
    close: async () => undefined,
  };
}

function keepalivedDriver(bed: NetBed, flavor: KeepalivedFlavor): Driver {
  const pair = ["lb-blue-1", "lb-blue-2"];
  const ka = new KeepalivedCluster(bed, flavor, pair);
  const ready = async () => pair.every((id) => bed.haproxyPid(id) !== null && ka.running(id));
  return {
    system: flavor === "copied" ? "keepalived-copied" : "keepalived-tuned",
    async up() {
      for (const id of pair) await bed.installHaproxy(id);
      for (const id of pair) ka.start(id);
      await stableHolder(bed, pair, ready);
    },
    supports: (s) => s !== "bluegreen" && s !== "rolling",
    async act(s, holder) {
      if (s === "kill9") {
        await ka.stop(holder, "SIGKILL");
        await bed.stopHaproxy(holder);
      } else if (s === "linkcut") cutLinks(bed, holder, false);
      else if (s === "haproxy") await bed.stopHaproxy(holder);
      else if (s === "graceful") await ka.stop(holder, "SIGTERM");
    },
    async restore(s, victim) {
      if (s === "linkcut") cutLinks(bed, victim, true);
      for (const id of pair) if (!bed.haproxyPid(id)) await bed.installHaproxy(id);
      ka.start(victim);
      await sleep(flavor === "copied" ? 4_000 : 1_000); // preemption by the MASTER, if it was the victim
      await stableHolder(bed, pair, ready);
    },
    close: () => ka.close(),
  };
}

async function measure(bed: NetBed, d: Driver, s: Scenario): Promise<FailoverSample> {
  const holder = bed.holder()!;
  const client = bed.startClient(50, 1_000);
  await bed.waitFor("the client's first answers", () => client.results.filter((r) => r.ok).length >= 10, 10_000);
  const log0 = bed.emulator.requestLog().length;
  await d.act(s, holder);
  // Done when another droplet holds the IP and the client has had 1.5 s of answers since it moved.
  let movedAt: number | null = null;
  await bed
    .waitFor(
      "the failover",
      () => {
        const h = bed.holder();
        if (!h || h === holder) return false;
        movedAt ??= Date.now();
        const okTail = client.results.slice(-30);
        return Date.now() - movedAt >= 1_500 && okTail.length === 30 && okTail.every((r) => r.ok);
      },
      30_000,
      50,
    )
    .catch(() => undefined);
  const rs = await client.stop();
  const log = bed.emulator.requestLog().slice(log0);
  const dt = downtime(rs, 50);
  await d.restore(s, holder);
  return {
    downtimeMs: dt.downtimeMs,
    failedRequests: dt.failed,
    apiRequests: log.length,
    assigns: log.filter((r) => r.method === "POST" && r.path.endsWith("/actions")).length,
  };
}

async function main(): Promise<void> {
  const delays = values.delays.split(",").map(Number);
  const systems = values.systems.split(",") as FailoverSystem[];
  const scenarios = values.scenarios.split(",") as Scenario[];
  const results: FailoverResults = { startedAt: new Date().toISOString(), host: hostname(), cases: [] };
  for (const delay of delays) {
    for (const system of systems) {
      const bed = await NetBed.start({ lbs: ["blue", "blue", "green", "green"], witness: system === "fipd", actionDelayMs: delay });
      const d = system === "fipd" ? fipdDriver(bed) : keepalivedDriver(bed, system === "keepalived-copied" ? "copied" : "tuned");
      try {
        await d.up();
        for (const s of scenarios) {
          if (!d.supports(s)) continue;
          const reps = s === "kill9" ? Number(values["reps-kill"]) : Number(values.reps);
          const c: FailoverCase = { system, scenario: SCENARIO_NAMES[s], actionDelayMs: delay, samples: [] };
          for (let i = 0; i < reps; i++) {
            const sample = await measure(bed, d, s);
            c.samples.push(sample);
            console.log(
              `${system.padEnd(18)} delay ${String(delay).padStart(4)} ms  ${SCENARIO_NAMES[s].padEnd(28)} #${i + 1}: ${sample.downtimeMs} ms down, ${sample.failedRequests} failed, ${sample.apiRequests} API requests, ${sample.assigns} assigns`,
            );
          }
          results.cases.push(c);
        }
      } catch (e) {
        // Keep the bed's files (agent, HAProxy and keepalived logs, client records) for the post-mortem.
        const keep = resolve(__dirname, "..", ".tmp", "bench-failures", `${system}-${delay}-${Date.now()}`);
        mkdirSync(resolve(keep, ".."), { recursive: true });
        sh("cp", ["-r", bed.dir, keep]);
        console.error(`${system} at ${delay} ms: ${(e as Error).message}; files kept in ${keep}`);
        results.cases.push({ system, scenario: "error", actionDelayMs: delay, samples: [], note: (e as Error).message.slice(0, 200) });
      } finally {
        await d.close();
        await bed.close();
      }
    }
  }
  const files = writeFailoverReport(results, values.out);
  console.log(`wrote ${files.json}, ${files.md}, ${files.svg}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
