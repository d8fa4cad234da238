/**
 * A rolling upgrade between two builds whose messages differ: the new build adds fields (at the top,
 * in `status`, in a heartbeat's `leader`) that the old build does not know. Every message goes over a
 * simulated wire (JSON out, JSON in) and through the transport's parse (agent/messages.ts), as in
 * production. The old nodes must ignore the new fields: no message dropped, no crash, and leadership
 * moves once, at the planned handover, as in the upgrade scenario of scenarios.test.ts.
 */
import { describe, expect, it } from "vitest";
import type { Member } from "../../agent/config.js";
import type { ElectionEvent, PeerMessage } from "../../agent/election/types.js";
import { parsePeerMessage } from "../../agent/messages.js";
import { rollingOrder } from "../../components/rolling-order.js";
import { checkReachableMajority, checkSafety } from "../../testbed/sim/invariants.js";
import { DEFAULT_TIMING } from "../../testbed/sim/scenario.js";
import { World, type SimNode } from "../../testbed/sim/world.js";

const OLD = "0ld0ld0ld0ld0ld0";
const NEW = "0e00e00e00e00e00";

/** What the new build puts on the wire: today's message plus fields the old build has never seen. */
function newShape(m: PeerMessage): object {
  const o: Record<string, unknown> = { ...m, epoch: 7, caps: ["fast-release"] };
  if ("status" in m) o.status = { ...m.status, zone: "ams3", load: { cpu: 0.2 } };
  if (m.kind === "heartbeat" && m.leader) o.leader = { ...m.leader, lagMs: 3 };
  return o;
}

/** The simulator with every delivered message passed through the wire and the transport's parse. */
class WireWorld extends World {
  readonly drops: string[] = [];
  parsed = 0;
  override stepNode(n: SimNode, ev: ElectionEvent): void {
    if (ev.type !== "message") return super.stepNode(n, ev);
    const m = ev.message;
    // Statuses carry the sender's build (stamped as the controller does); a release goes by its sender's.
    const build = "status" in m ? m.status.build : this.nodes.get(m.from)?.build;
    const body: unknown = JSON.parse(JSON.stringify(build === NEW ? newShape(m) : m));
    const parsed = parsePeerMessage(body, m.from);
    if (!parsed.ok) {
      this.drops.push(`${m.kind} from ${m.from}: ${parsed.reason} ${parsed.problems.join("; ")}`);
      return;
    }
    this.parsed++;
    super.stepNode(n, { ...ev, message: parsed.message });
  }
}

const lb = (id: string): Member => ({ id, address: "sim", port: 1, role: "lb", color: "blue", priority: 100 });
const members: Member[] = [lb("b1"), lb("b2"), lb("b3"), { id: "w", address: "sim", port: 1, role: "witness", priority: 100 }];

function roll(initialLeader: string): { leaders: string[]; w: WireWorld } {
  const w = new WireWorld({
    seed: 11,
    members,
    activeColor: "blue",
    timing: DEFAULT_TIMING,
    actualDrift: 0,
    network: { loss: 0, minDelayMs: 0.2, maxDelayMs: 0.2, duplicate: 0 },
    traceLimit: 200,
    afterStep: checkSafety,
    onStartAsserting: checkReachableMajority,
  });
  for (const m of members) w.addNode(m).rate = 1;
  for (const m of members) w.nodes.get(m.id)!.build = OLD;
  for (const m of members) w.start(m.id);
  const leader = () => w.leaseHolders().map((n) => n.id)[0] ?? null;
  w.runUntil(2_000);
  if (initialLeader !== "b1") w.handover("b1", initialLeader);
  w.runUntil(w.now + 50);
  expect(leader()).toBe(initialLeader);
  const leaders: string[] = [initialLeader];
  const sample = (ms: number) => {
    for (const end = w.now + ms; w.now < end;) {
      w.runUntil(w.now + 5);
      const l = leader();
      if (l && l !== leaders[leaders.length - 1]) leaders.push(l);
    }
  };
  const restart = (id: string) => {
    w.crash(id);
    w.nodes.get(id)!.build = NEW;
    w.start(id);
    sample(5_000);
  };
  const order = rollingOrder(
    members.filter((m) => m.role === "lb").map((m) => ({ name: m.id, color: m.color })),
    "blue",
  ).map((n) => n.name);
  // As the stack rolls: the followers first, then the leader after a handover to a new-build node.
  for (const id of order) if (leader() !== id) restart(id);
  for (const id of order) {
    if (w.nodes.get(id)!.build === NEW) continue;
    if (leader() === id) w.handover(id, undefined, NEW);
    sample(100);
    restart(id);
  }
  restart("w");
  return { leaders, w };
}

describe("rolling upgrade between builds whose messages differ", () => {
  for (const first of ["b1", "b2", "b3"]) {
    it(`old and new builds read each other (extra fields ignored): one leader change, the planned handover (leader ${first} first)`, () => {
      const { leaders, w } = roll(first);
      expect(w.drops).toEqual([]);
      expect(w.parsed).toBeGreaterThan(1_000);
      expect(leaders, w.trace.map((t) => `${t.at.toFixed(1)} ${t.text}`).join("\n")).toHaveLength(2);
      // Every node runs the new build at the end, and one of them leads.
      expect([...w.nodes.values()].every((n) => n.alive && n.build === NEW)).toBe(true);
      expect(w.leaseHolders()).toHaveLength(1);
    });
  }
});
