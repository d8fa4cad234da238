/**
 * One simulated run per seed: a random cluster, random network conditions and a random schedule of
 * faults (crashes, partitions, health flaps, maintenance, handovers, color switches and membership
 * changes rolled out node by node), then a calm period in which the cluster must settle.
 */
import * as v from "valibot";
import { FailoverTimingSchema, type Color, type FailoverTiming, type Member } from "../../agent/config.js";
import type { PlantedBugs } from "../../agent/election/node.js";
import { bootQuietMs, majorityOf } from "../../agent/election/quorum.js";
import { checkReachableMajority, checkSafety } from "./invariants.js";
import { Rng } from "./rng.js";
import { InvariantViolation, World, type TraceLine } from "./world.js";

/** The agent's own defaults (agent/config.ts), so the simulator proves the timing that ships. */
export const DEFAULT_TIMING: FailoverTiming = v.parse(FailoverTimingSchema, {});

export interface SeedOptions {
  /** Simulated milliseconds of faults (default 57 s), then `calmMs` of calm (default 3 s): 60 s runs. */
  faultMs?: number;
  calmMs?: number;
  bugs?: PlantedBugs;
  timing?: Partial<FailoverTiming>;
  /** Actual clock drift of nodes (default: the configured bound). */
  actualDrift?: number;
  traceLimit?: number;
  /** Which fault kinds to use (default all). */
  faults?: Partial<Record<FaultKind, boolean>>;
}

export type FaultKind = "crash" | "partition" | "oneWay" | "health" | "maintenance" | "handover" | "colorSwitch" | "membership" | "loss" | "futureEcho";

export interface SeedResult {
  seed: number;
  ok: boolean;
  violation?: { invariant: string; detail: string; atMs: number };
  steps: number;
  leaderChanges: number;
  /** Time from the start of the calm period to a stable leader. */
  settleMs: number | null;
  description: string;
  trace: TraceLine[];
}

const ALL_FAULTS: FaultKind[] = ["crash", "partition", "oneWay", "health", "maintenance", "handover", "colorSwitch", "membership", "loss", "futureEcho"];

export function runSeed(seed: number, o: SeedOptions = {}): SeedResult {
  const rng = new Rng(seed);
  const timing: FailoverTiming = { ...DEFAULT_TIMING, ...o.timing };
  const faultMs = o.faultMs ?? 57_000;
  const calmMs = o.calmMs ?? 3_000;
  const enabled = (k: FaultKind) => o.faults?.[k] ?? true;

  // ---- cluster shape
  const blue = rng.int(1, 4);
  const green = rng.chance(0.5) ? rng.int(1, 2) : 0;
  let witness = rng.chance(0.7) || blue + green === 2;
  if ((blue + green) % 2 === 1 && rng.chance(0.5)) witness = false;
  const lbs: Member[] = [];
  for (let i = 1; i <= blue; i++) lbs.push({ id: `b${i}`, address: "sim", port: 1, role: "lb", color: "blue", priority: rng.chance(0.2) ? 150 : 100 });
  for (let i = 1; i <= green; i++) lbs.push({ id: `g${i}`, address: "sim", port: 1, role: "lb", color: "green", priority: 100 });
  const members: Member[] = [...lbs];
  if (witness) members.push({ id: "w", address: "sim", port: 1, role: "witness", priority: 100 });

  const lossy = enabled("loss") && rng.chance(0.6);
  const network = {
    loss: lossy ? rng.float(0, 0.3) : 0,
    minDelayMs: rng.float(0.05, 2),
    maxDelayMs: 0,
    duplicate: lossy ? rng.float(0, 0.05) : 0,
  };
  network.maxDelayMs = network.minDelayMs + (rng.chance(0.5) ? rng.float(0, 5) : rng.float(0, 40));

  const world = new World({
    seed: rng.int(0, 2 ** 31),
    members,
    activeColor: "blue",
    timing,
    actualDrift: o.actualDrift ?? timing.maxClockDrift,
    network,
    bugs: o.bugs,
    traceLimit: o.traceLimit ?? 0,
    afterStep: checkSafety,
    onStartAsserting: checkReachableMajority,
  });
  for (const m of members) world.addNode(m);
  // A spare node for membership changes: joins later.
  const spare: Member = { id: "b9", address: "sim", port: 1, role: "lb", color: "blue", priority: 100 };
  world.addNode(spare);

  const desc: string[] = [
    `${blue} blue, ${green} green${witness ? ", witness" : ""}; loss ${(network.loss * 100).toFixed(1)} %, delay ${network.minDelayMs.toFixed(1)}–${network.maxDelayMs.toFixed(1)} ms`,
  ];
  for (const m of members) world.at(rng.float(0, 200), `start ${m.id}`, () => world.start(m.id));

  // ---- fault schedule
  const fr = rng.fork();
  // Denser schedules for longer runs: about one fault per 600 ms–3 s of simulated time.
  const nFaults = fr.int(2, 10) * Math.max(1, Math.round(faultMs / 6000));
  const ids = () => [...world.nodes.values()].filter((n) => world.members.some((m) => m.id === n.id)).map((n) => n.id);
  for (let i = 0; i < nFaults; i++) {
    const t = fr.float(300, faultMs - 200);
    const kinds = ALL_FAULTS.filter((k) => enabled(k) && k !== "loss" && k !== "futureEcho");
    const kind = fr.pick(kinds);
    switch (kind) {
      case "loss":
        break; // not scheduled: loss is a network condition chosen once, up front (filtered out above)
      case "futureEcho":
        break; // scheduled below, from a stream of its own (filtered out above)
      case "crash": {
        const down = fr.chance(0.3) ? fr.float(0, 150) : fr.float(150, 2000);
        const pickLeader = fr.chance(0.6);
        const fallback = fr.next();
        world.at(t, "crash", () => {
          const leader = world.leaseHolders()[0]?.id;
          const live = ids();
          const victim = pickLeader && leader ? leader : live[Math.floor(fallback * live.length)];
          world.crash(victim);
          world.at(Math.min(world.now + down, faultMs), `restart ${victim}`, () => world.start(victim));
        });
        desc.push(`crash @${t.toFixed(0)} for ${down.toFixed(0)} ms`);
        break;
      }
      case "partition": {
        const len = fr.float(100, 2500);
        const r = fr.next();
        const split = fr.fork();
        world.at(t, "partition", () => {
          const all = ids();
          const leader = world.leaseHolders()[0]?.id;
          // Often isolate the leader with a minority; sometimes a random split.
          const a = all.filter((id) => (r < 0.5 && leader ? id === leader || split.chance(0.3) : split.chance(0.5)));
          const b = all.filter((id) => !a.includes(id));
          world.partition([a, b]);
          world.at(Math.min(world.now + len, faultMs), "heal", () => world.heal());
        });
        desc.push(`partition @${t.toFixed(0)} for ${len.toFixed(0)} ms`);
        break;
      }
      case "oneWay": {
        // A one-way cut: a side hears the other but cannot be heard (or the reverse), e.g. a
        // firewall rule or an asymmetric route. Often the leader is on the cut side.
        const len = fr.float(100, 2500);
        const r = fr.next();
        const outbound = fr.chance(0.5);
        const split = fr.fork();
        world.at(t, "one-way cut", () => {
          const all = ids();
          const leader = world.leaseHolders()[0]?.id;
          const a = all.filter((id) => (r < 0.5 && leader ? id === leader : split.chance(0.4)));
          const b = all.filter((id) => !a.includes(id));
          if (outbound) world.cutOneWay(a, b);
          else world.cutOneWay(b, a);
          world.at(Math.min(world.now + len, faultMs), "heal", () => world.heal());
        });
        desc.push(`one-way cut @${t.toFixed(0)} for ${len.toFixed(0)} ms`);
        break;
      }
      case "health": {
        const len = fr.float(50, 1500);
        const pickLeader = fr.chance(0.6);
        const f = fr.next();
        world.at(t, "unhealthy", () => {
          const lb = lbs.map((m) => m.id);
          const leader = world.leaseHolders()[0]?.id;
          const victim = pickLeader && leader ? leader : lb[Math.floor(f * lb.length)];
          world.setHealth(victim, false);
          world.at(Math.min(world.now + len, faultMs), `healthy ${victim}`, () => world.setHealth(victim, true));
        });
        desc.push(`unhealthy @${t.toFixed(0)} for ${len.toFixed(0)} ms`);
        break;
      }
      case "maintenance": {
        const len = fr.float(100, 1500);
        const f = fr.next();
        world.at(t, "maintenance", () => {
          const leader = world.leaseHolders()[0]?.id;
          const victim = leader ?? lbs[Math.floor(f * lbs.length)].id;
          world.setMaintenance(victim, true);
          world.at(Math.min(world.now + len, faultMs), `maintenance off ${victim}`, () => world.setMaintenance(victim, false));
        });
        desc.push(`maintenance @${t.toFixed(0)}`);
        break;
      }
      case "handover": {
        world.at(t, "handover", () => {
          const leader = world.leaseHolders()[0]?.id;
          if (leader) world.handover(leader);
        });
        desc.push(`handover @${t.toFixed(0)}`);
        break;
      }
      case "colorSwitch": {
        if (green === 0) break;
        const spread = fr.float(0, 500);
        const order = fr.fork();
        world.at(t, "color switch", () => {
          world.activeColor = world.activeColor === "blue" ? "green" : "blue";
          for (const id of ids()) world.at(world.now + order.float(0, spread), `reload ${id}`, () => world.reload(id));
        });
        desc.push(`switch color @${t.toFixed(0)}`);
        break;
      }
      case "membership": {
        const spread = fr.float(0, 800);
        const order = fr.fork();
        world.at(t, "membership change", () => {
          const inCluster = world.members.some((m) => m.id === spare.id);
          world.configVersion++;
          if (inCluster) {
            world.members = world.members.filter((m) => m.id !== spare.id);
          } else {
            world.members = [...world.members, spare];
          }
          // New nodes start with the new config first (as a deploy does), then the others reload.
          if (!inCluster) world.start(spare.id);
          for (const id of ids()) if (id !== spare.id) world.at(world.now + order.float(0, spread), `reload ${id}`, () => world.reload(id));
          if (inCluster) {
            // As the stack does: the removed node gets the new list too, and its droplet is deleted
            // only once the new list is committed (no node reports joint consensus any more).
            world.at(world.now + order.float(0, spread), `reload ${spare.id}`, () => world.reload(spare.id));
            const version = world.configVersion;
            const deleteWhenCommitted = () => {
              if (world.configVersion !== version || world.members.some((m) => m.id === spare.id)) return;
              const joint = [...world.nodes.values()].some((n) => n.alive && n.election?.snapshot(world.local(n)).jointOldMembers);
              if (!joint && world.leaseHolders().length === 1) world.crash(spare.id);
              else world.at(world.now + 50, `delete ${spare.id} when committed`, deleteWhenCommitted);
            };
            world.at(world.now + spread + 50, `delete ${spare.id} when committed`, deleteWhenCommitted);
          }
        });
        desc.push(`membership change @${t.toFixed(0)}`);
        break;
      }
    }
  }

  // ---- misbehaving peers: for a while, a minority of nodes echo send times from the future in their
  // acknowledgements and votes (a bug, or a compromised node with a valid key). A leader that counted
  // them would stretch its lease past what a majority granted; often the leader is then cut off, so
  // that the others elect a new one while that lease would still run (S1). Drawn from a stream of
  // its own, so that adding this fault kind left every other fault's schedule as it was for each seed.
  if (enabled("futureEcho")) {
    const er = new Rng(seed).fork();
    const windows = er.chance(0.5) ? er.int(1, 3) : 0;
    for (let i = 0; i < windows; i++) {
      const t = er.float(300, faultMs - 200);
      const len = er.float(200, 5_000);
      const aheadMs = er.float(timing.leaseMs, 20 * timing.leaseMs);
      // One liar, or as many as make a majority with the leader's own send time (a minority of the list).
      const enough = er.chance(0.7);
      const cutAfterMs = er.chance(0.5) ? er.float(50, 500) : null;
      const cutMs = er.float(500, 2_500);
      const pick = er.fork();
      world.at(t, "future echoes", () => {
        const leader = world.leaseHolders()[0]?.id;
        const others = ids().filter((id) => id !== leader);
        const liars = new Set<string>();
        const count = enough ? majorityOf(world.members.length) - 1 : 1;
        for (let j = 0; j < 4 * count && liars.size < count && others.length > 0; j++) liars.add(pick.pick(others));
        for (const id of liars) world.echoFuture(id, aheadMs);
        world.at(Math.min(world.now + len, faultMs), "truthful echoes", () => liars.forEach((id) => world.echoFuture(id, null)));
        if (leader && cutAfterMs !== null && world.now + cutAfterMs < faultMs) {
          world.at(world.now + cutAfterMs, "cut off the leader", () => {
            world.partition([[leader], ids().filter((id) => id !== leader)]);
            world.at(Math.min(world.now + cutMs, faultMs), "heal", () => world.heal());
          });
        }
      });
      desc.push(`future echoes @${t.toFixed(0)} for ${len.toFixed(0)} ms${cutAfterMs !== null ? ", then the leader cut off" : ""}`);
    }
  }

  // ---- calm: heal, restart, all healthy, no maintenance, configs converged
  world.at(faultMs, "calm", () => {
    world.heal();
    world.network = { ...world.network, loss: 0, duplicate: 0 };
    for (const n of world.nodes.values()) {
      const member = world.members.some((m) => m.id === n.id);
      // A removed node whose droplet is not deleted yet (the list is not committed) keeps voting.
      if (!member && !n.alive) continue;
      if (n.member.role === "lb" && !n.healthy) world.setHealth(n.id, true);
      if (n.maintenance) world.setMaintenance(n.id, false);
      if (!n.alive) world.start(n.id);
      else if (n.config.membershipVersion !== world.configVersion || n.config.activeColor !== world.activeColor) world.reload(n.id);
    }
  });

  let leaderChanges = 0;
  let settleMs: number | null = null;
  try {
    world.runUntil(faultMs);
    // Settle bound: a restarted node's quiet period, a lease, a few election rounds, slow links.
    const bound =
      bootQuietMs(timing.leaseMs, timing.maxClockDrift) +
      timing.leaseMs +
      4 * timing.electionTimeoutMs +
      members.length * timing.candidateBackoffMs * 2 +
      6 * network.maxDelayMs +
      200;
    let last: string | null = null;
    let stableSince: number | null = null;
    const sampleEvery = 10;
    for (let t = faultMs; t <= faultMs + calmMs; t += sampleEvery) {
      world.runUntil(t);
      const h = world.leaseHolders()[0]?.id ?? null;
      if (h !== last) {
        if (h !== null) leaderChanges++;
        last = h;
        stableSince = h === null ? null : t;
      }
    }
    if (last === null || stableSince === null) throw new InvariantViolation("L1", `no leader ${calmMs} ms into a calm period (bound ${bound.toFixed(0)} ms)`);
    settleMs = stableSince - faultMs;
    if (settleMs > bound) throw new InvariantViolation("L1", `the cluster took ${settleMs} ms to settle on a leader after calm (bound ${bound.toFixed(0)} ms)`);
    const leader = world.nodes.get(last)!;
    const wanted: Color = world.activeColor;
    if (leader.member.color !== wanted) {
      throw new InvariantViolation("C1", `after calm the leader ${leader.id} is ${leader.member.color}, but ${wanted} is requested and healthy`);
    }
    return { seed, ok: true, steps: world.steps, leaderChanges, settleMs, description: desc.join("; "), trace: world.trace };
  } catch (e) {
    if (!(e instanceof InvariantViolation)) throw e;
    return {
      seed,
      ok: false,
      violation: { invariant: e.invariant, detail: e.detail, atMs: Math.round(world.now) },
      steps: world.steps,
      leaderChanges,
      settleMs,
      description: desc.join("; "),
      trace: world.trace,
    };
  }
}
