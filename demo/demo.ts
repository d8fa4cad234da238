/**
 * `npm run demo`: a simulated datacenter on this machine, no root and no cloud needed.
 *
 * Starts the DigitalOcean API + metadata emulator, three load-balancer agents (blue) and a witness
 * as real fipd processes, shows who leads and who holds the Reserved IP, kills the leader with
 * SIGKILL, and reports how long the takeover took. Cleans up on exit or Ctrl-C.
 *
 *   npm run demo -- [--action-delay-ms 2000] [--rounds 2]
 *   npm run demo -- --web [--port 8080] [--action-delay-ms 2000]   the cluster live in a browser (demo/web.ts)
 */
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { buildAgentBundle } from "../agent/build.js";
import { BUNDLE, LocalCluster, RESERVED_IP } from "../testbed/harness/local-cluster.js";
import { startWebDemo, type WebDemo } from "./web.js";

const { values } = parseArgs({
  options: {
    "action-delay-ms": { type: "string", default: "1000" },
    rounds: { type: "string", default: "2" },
    web: { type: "boolean", default: false },
    port: { type: "string", default: "0" },
  },
});
const actionDelayMs = Number(values["action-delay-ms"]);
const rounds = Number(values.rounds);
if (!Number.isInteger(actionDelayMs) || actionDelayMs < 0) throw new Error(`--action-delay-ms must be a whole number ≥ 0, got ${values["action-delay-ms"]}`);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10) throw new Error(`--rounds must be 1-10, got ${values.rounds}`);
const port = Number(values.port);
if (!/^\d+$/.test(values.port) || port > 65535) throw new Error(`--port must be 0-65535 (0: a free port), got ${values.port}`);

const t0 = Date.now();
const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(3).padStart(7)} s]`;
const say = (msg: string) => console.log(`${stamp()} ${msg}`);

let cluster: LocalCluster | null = null;
let web: WebDemo | null = null;
let cleaning = false;
async function cleanup(code: number) {
  if (cleaning) return;
  cleaning = true;
  if (cluster || web) {
    say("cleaning up: stopping agents and the emulator");
    await cluster?.close().catch(() => undefined);
    await web?.close().catch(() => undefined);
  }
  process.exit(code);
}
process.on("SIGINT", () => void cleanup(130));
process.on("SIGTERM", () => void cleanup(143));

async function main() {
  if (!existsSync(BUNDLE) || process.env.FIPD_REBUILD !== "0") {
    const b = await buildAgentBundle();
    say(`built the agent bundle ${b.path} (${(b.bytes / 1024).toFixed(0)} KiB)`);
  }
  if (values.web) {
    web = await startWebDemo({ port, actionDelayMs, say });
    say(`open ${web.url} in a browser (Ctrl-C stops the demo)`);
    return; // runs until SIGINT or SIGTERM
  }
  cluster = await LocalCluster.start({ lbs: ["blue", "blue", "blue"], witness: true, actionDelayMs });
  say(`emulated DigitalOcean API at ${cluster.emulator.apiUrl} (assign actions take ${actionDelayMs} ms)`);
  say(`reserved IP ${RESERVED_IP}; voters: ${[...cluster.nodes.keys()].join(", ")} (majority 3 of 4)`);
  cluster.startAll();

  // Watch: print every change of leader or holder as it happens.
  let shownLeader: string | null = null;
  let shownHolder: string | null = null;
  const watchOnce = async () => {
    if (!cluster) return;
    const holder = cluster.holder();
    if (holder !== shownHolder) {
      shownHolder = holder;
      say(`reserved IP ${RESERVED_IP} is now on ${holder ?? "no droplet"}`);
    }
    const leader = await cluster.leader();
    if (leader && leader !== shownLeader) {
      shownLeader = leader;
      const st = await cluster.status(leader);
      say(`leader: ${leader} (term ${st?.term ?? "?"})`);
    }
  };
  // A status request that fails (a node being killed) is simply shown at the next tick.
  const watch = setInterval(() => void watchOnce().catch(() => undefined), 20);

  const c = cluster;
  /** The serving leader: the one the agents agree on, holding the IP. */
  const serving = async () => {
    const l = await c.leader();
    return l && c.holder() === l ? l : null;
  };
  await c.waitFor("a leader holding the IP", serving, 30_000);

  for (let round = 1; round <= rounds; round++) {
    await new Promise((r) => setTimeout(r, 2_000));
    // On a busy machine an election may be under way: take the leader once it serves again.
    const victim = await c.waitFor("a leader holding the IP", serving, 30_000);
    say(`--- round ${round}: kill -9 the leader ${victim} ---`);
    const killedAt = performance.now();
    await c.stopNode(victim, "SIGKILL");
    const elected = await c.waitFor(
      "a new leader",
      async () => {
        const l = await c.leader();
        return l && l !== victim ? l : null;
      },
      30_000,
      5,
    );
    const electedMs = performance.now() - killedAt;
    // Leadership may move again before the IP does (a busy machine): wait for whichever leader holds it.
    const successor = await c.waitFor(
      "the IP on the new leader",
      async () => {
        const l = await serving();
        return l && l !== victim ? l : null;
      },
      60_000,
      5,
    );
    const movedMs = performance.now() - killedAt;
    say(
      `takeover: ${elected} leads ${electedMs.toFixed(0)} ms after the kill${elected === successor ? "" : `, then ${successor}`}; ` +
        `the IP is on ${successor} after ${movedMs.toFixed(0)} ms (of which ${actionDelayMs} ms is the emulated API action)`,
    );
    const log = c.emulator.requestLog();
    say(`API so far: ${log.length} requests, ${log.filter((r) => r.method === "POST").length} assigns`);
    say(`restarting ${victim}: it rejoins as a follower and does not take the IP back (stickiness)`);
    c.startNode(victim);
    await c.waitFor(
      `${victim} following`,
      async () => {
        const st = await c.status(victim);
        return st?.role === "follower" && st.leader !== null;
      },
      30_000,
    );
  }
  clearInterval(watch);
  // The leader learns that its assign completed at its next poll of the action (it polls sparingly,
  // the API is rate limited), a little after the emulator moved the IP: wait for it, boundedly.
  const finalLeader = await c.waitFor("a leader holding the IP", serving, 30_000);
  await c
    .waitFor("the leader to see the IP on its droplet", async () => (await c.status(finalLeader))?.reservedIp?.holderIsLeader === true, 10_000)
    .catch(() => undefined);
  const st = await c.status(finalLeader);
  if (st) {
    say("final status of the leader (fipd status):");
    const { formatStatus } = await import("../agent/status-format.js");
    process.stdout.write(formatStatus(st).replace(/^/gm, "    "));
  }
  await cleanup(0);
}

main().catch((e) => {
  console.error(`demo failed: ${(e as Error).message}`);
  void cleanup(1);
});
