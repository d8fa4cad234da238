/**
 * `npm run bench:soak [-- --minutes 10]`
 *
 * Steady state under a lossy, jittery network: 3 LBs + witness in the network test bed, every peer
 * datagram through a userspace relay (20 ms ± 20 ms one way: this kernel has no netem) and 1 %
 * random loss on each droplet's peer port (nftables `numgen`). Reports leader changes, assigns after
 * the first, API requests per hour, agent RSS and CPU. Needs root. Not part of CI.
 *
 * Writes bench/results/soak.{json,md}.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { PEER_PORT } from "../agent/ports.js";
import { HOST_IP, NetBed, RESERVED_IP, sh } from "../testbed/netbed/bed.js";
import { startUdpRelay, type UdpRelay } from "../testbed/relay.js";
import { renderSoakMarkdown } from "./report.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    loss: { type: "string", default: "1" },
    delay: { type: "string", default: "20" },
    jitter: { type: "string", default: "20" },
    out: { type: "string", default: resolve(__dirname, "results") },
  },
});

const CLK_TCK = 100;
function procStats(pid: number): { rssMb: number; cpuS: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { rssMb: rssKb / 1024, cpuS: (Number(f[11]) + Number(f[12])) / CLK_TCK };
}

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
    let peakRss = 0;
    let noLeaderSamples = 0;
    while (Date.now() - started < minutes * 60_000) {
      await new Promise((r) => setTimeout(r, 1_000));
      const l = await bed.leader();
      if (l === null) noLeaderSamples++;
      else if (l !== leader) {
        changes++;
        console.log(`${((Date.now() - started) / 1000).toFixed(0)} s: leader ${leader} → ${l}`);
        leader = l;
      }
      for (const pid of pids.values()) peakRss = Math.max(peakRss, procStats(pid).rssMb);
    }
    const elapsedH = (Date.now() - started) / 3_600_000;
    const log = bed.emulator.requestLog().slice(log0);
    const cpu = [...pids].map(([id, pid]) => (procStats(pid).cpuS - cpu0.get(id)!) / (elapsedH * 3600));
    const result = {
      startedAt: new Date(started).toISOString(),
      host: hostname(),
      minutes,
      "network (one way)": `${values.delay} ± ${values.jitter} ms, ${lossPct} % loss`,
      "leader changes": changes,
      "seconds with no agreed leader (1 s samples)": noLeaderSamples,
      "assigns after the first": log.filter((r) => r.method === "POST").length,
      "API requests per hour (cluster)": Math.round(log.length / elapsedH),
      "agent RSS, peak (MB)": Math.round(peakRss * 10) / 10,
      "agent CPU, mean (% of one core)": Math.round((cpu.reduce((a, b) => a + b, 0) / cpu.length) * 1000) / 10,
      "Reserved IP answers at the end": String((await bed.curl(RESERVED_IP)) === leader),
    };
    mkdirSync(values.out, { recursive: true });
    writeFileSync(join(values.out, "soak.json"), JSON.stringify(result, null, 2) + "\n");
    writeFileSync(join(values.out, "soak.md"), `# Soak: \`npm run bench:soak -- --minutes ${minutes}\`\n\n${renderSoakMarkdown(result)}\n`);
    console.log(renderSoakMarkdown(result));
  } finally {
    for (const r of relays) await r.close();
    await bed.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
