/**
 * `npm run bench:soak [-- --minutes 10]`
 *
 * Steady state under a lossy, jittery network: 3 LBs + witness in the network test bed, every peer
 * datagram through a userspace relay (20 ms ± 20 ms one way: this kernel has no netem) and 1 %
 * random loss on each droplet's peer port (nftables `numgen`). Reports leader changes, assigns after
 * the first, API requests per hour, and each agent's resident memory and CPU by role (leader, idle
 * follower, witness) against the 60 MB target, with the Node.js that ran them. The agents run with the
 * unit's own node flags (testbed/harness/node-flags.ts). Needs root. Not part of CI.
 *
 * Writes bench/results/soak.{json,md,svg}.
 */
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { PEER_PORT } from "../agent/ports.js";
import { NODE_VERSION } from "../components/cloud-init.js";
import { agentNodeFlags } from "../testbed/harness/node-flags.js";
import { HOST_IP, NetBed, RESERVED_IP, sh } from "../testbed/netbed/bed.js";
import { startUdpRelay, type UdpRelay } from "../testbed/relay.js";
import { renderSoakResultsMarkdown, writeSoakReport, type SoakAgent, type SoakResults } from "./report.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    loss: { type: "string", default: "1" },
    delay: { type: "string", default: "20" },
    jitter: { type: "string", default: "20" },
    out: { type: "string", default: resolve(__dirname, "results") },
  },
});

/** The agent's resident memory target (issue 13 item 16), for idle followers and the leader alike. */
const RSS_TARGET_MB = 60;
/** The plot's step: one VmRSS value every this many seconds (the peak uses every 1 s sample). */
const SERIES_STEP_S = 5;
const CLK_TCK = 100;

function statusKb(status: string, field: string, pid: number): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
  if (!m) throw new Error(`/proc/${pid}/status has no ${field} line (is the agent still running?)`);
  return Number(m[1]);
}

function procStats(pid: number): { rssMb: number; hwmMb: number; cpuS: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { rssMb: statusKb(status, "VmRSS", pid) / 1024, hwmMb: statusKb(status, "VmHWM", pid) / 1024, cpuS: (Number(f[11]) + Number(f[12])) / CLK_TCK };
}

const round1 = (n: number) => Math.round(n * 10) / 10;

async function main(): Promise<void> {
  const minutes = Number(values.minutes);
  const lossPct = Number(values.loss);
  const bed = await NetBed.start({ lbs: ["blue", "blue", "blue"], witness: true });
  const relays: UdpRelay[] = [];
  try {
    // One relay per node, on the host: every peer sends to the relay, which forwards to the node's
    // public address after the delay. Peers are authenticated by key and id, not address.
    const relayPort = new Map<string, number>();
    for (const n of bed.nodes.values()) {
      const r = await startUdpRelay({
        listenAddress: HOST_IP,
        listenPort: 0,
        targetAddress: n.publicIp,
        targetPort: PEER_PORT,
        delayMs: Number(values.delay),
        jitterMs: Number(values.jitter),
      });
      relays.push(r);
      relayPort.set(n.nodeId, r.port);
    }
    // The planned config, with every peer reached through its relay.
    const planned = bed.agentConfig.bind(bed);
    bed.agentConfig = (n) => {
      const cfg = planned(n);
      return { ...cfg, members: cfg.members.map((m) => ({ ...m, address: HOST_IP, port: relayPort.get(m.id)! })) };
    };
    for (const n of bed.nodes.values()) {
      sh(
        "ip",
        ["netns", "exec", n.ns, "nft", "-f", "-"],
        `table ip halb_loss {\n  chain in { type filter hook input priority 0; policy accept; udp dport ${PEER_PORT} numgen random mod 1000 < ${Math.round(lossPct * 10)} drop; }\n}\n`,
      );
      if (n.role === "lb") await bed.installHaproxy(n.id);
    }
    for (const id of bed.nodes.keys()) await bed.startAgent(id);
    const first = await bed.waitForStableLeader(60_000);
    console.log(`leader ${first}; soaking for ${minutes} min (loss ${lossPct} %, delay ${values.delay} ± ${values.jitter} ms)`);
    const log0 = bed.emulator.requestLog().length;
    const pids = new Map([...bed.nodes.values()].map((n) => [n.id, n.agent!.pid!]));
    // `ip netns exec` execs the agent, so the child's PID is the agent's.
    const cpu0 = new Map([...pids].map(([id, pid]) => [id, procStats(pid).cpuS]));
    const started = Date.now();
    let leader: string | null = first;
    let changes = 0;
    let noLeaderSamples = 0;
    const led = new Set<string>([first]);
    const peakSampled = new Map<string, number>();
    const series = new Map<string, number[]>([...pids.keys()].map((id) => [id, []]));
    for (let tick = 1; Date.now() - started < minutes * 60_000; tick++) {
      await new Promise((r) => setTimeout(r, 1_000));
      const l = await bed.leader();
      if (l === null) noLeaderSamples++;
      else {
        led.add(l);
        if (l !== leader) {
          changes++;
          console.log(`${((Date.now() - started) / 1000).toFixed(0)} s: leader ${leader} → ${l}`);
          leader = l;
        }
      }
      for (const [id, pid] of pids) {
        const { rssMb } = procStats(pid);
        peakSampled.set(id, Math.max(peakSampled.get(id) ?? 0, rssMb));
        if (tick % SERIES_STEP_S === 0) series.get(id)!.push(round1(rssMb));
      }
    }
    const elapsedS = (Date.now() - started) / 1000;
    const elapsedH = elapsedS / 3600;
    const log = bed.emulator.requestLog().slice(log0);
    const agents: SoakAgent[] = [...pids].map(([id, pid]) => {
      const end = procStats(pid);
      const role = led.has(id) ? "leader" : bed.node(id).role === "witness" ? "witness" : "idle follower";
      return {
        id,
        role,
        hwmMb: round1(end.hwmMb),
        peakSampledMb: round1(peakSampled.get(id)!),
        finalRssMb: round1(end.rssMb),
        cpuPct: round1(((end.cpuS - cpu0.get(id)!) / elapsedS) * 100),
        rssMb: series.get(id)!,
      };
    });
    const order: SoakAgent["role"][] = ["leader", "idle follower", "witness"];
    agents.sort((a, b) => order.indexOf(a.role) - order.indexOf(b.role) || a.id.localeCompare(b.id));
    const result: SoakResults = {
      startedAt: new Date(started).toISOString(),
      host: hostname(),
      node: `${process.version} (this machine; the droplets run Node.js ${NODE_VERSION}, components/cloud-init.ts)`,
      nodeFlags: agentNodeFlags(),
      minutes,
      rssTargetMb: RSS_TARGET_MB,
      seriesStepS: SERIES_STEP_S,
      summary: {
        "network (one way)": `${values.delay} ± ${values.jitter} ms, ${lossPct} % loss`,
        "leader changes": changes,
        "seconds with no agreed leader (1 s samples)": noLeaderSamples,
        "assigns after the first": log.filter((r) => r.method === "POST").length,
        "API requests per hour (cluster)": Math.round(log.length / elapsedH),
        "Reserved IP answers at the end": String((await bed.curl(RESERVED_IP)) === leader),
      },
      agents,
    };
    const command = `npm run bench:soak -- --minutes ${minutes}`;
    const files = writeSoakReport(result, values.out, command);
    console.log(renderSoakResultsMarkdown(result, command));
    console.log(`wrote ${files.json}, ${files.md}, ${files.svg}`);
  } finally {
    for (const r of relays) await r.close();
    await bed.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
