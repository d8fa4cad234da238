/**
 * Safety invariants, checked after every single step of every node.
 *
 *  S1  at any instant at most one node holds a valid leader lease (by its own clock): no split brain;
 *  S2  a node that cannot reach a majority of its member list never starts asserting the IP. The
 *      oracle is the network itself, not the node's bookkeeping: when a node starts asserting, a
 *      majority of its configured members (itself included) must have exchanged a message with it in
 *      both directions within the last election timeout + lease + 2 × the slowest link (the longest a
 *      vote or an ack it counted can be old);
 *  T1  at most one leader per term among live processes (checked in World.stepNode as leaders appear);
 *  S3  a node with a valid lease is eligible: a member, an LB, healthy, not in maintenance, and of
 *      the color it believes in force;
 *  A1  a node whose IP keeper asserts the IP still holds a valid lease whenever it takes a step: the
 *      keeper stops, at the latest, at the step where the lease runs out. Checked on the keeper's
 *      state (the shipped IpKeeper, driven by the shipped shell), not on the core's snapshot.
 *
 * Liveness (L1) and the color rule (C1) are checked at the end of a run, after a calm period.
 */
import { majorityOf } from "../../agent/election/quorum.js";
import { InvariantViolation, keeperAsserting, type SimNode, type World } from "./world.js";

export function checkReachableMajority(world: World, node: SimNode): void {
  const t = world.timing;
  const window = t.electionTimeoutMs + t.leaseMs + 2 * world.maxLinkDelayMs() + 1;
  const members = node.config.members.map((m) => m.id);
  const reached = members.filter(
    (id) => id === node.id || (world.now - world.lastDelivered(id, node.id) <= window && world.now - world.lastDelivered(node.id, id) <= window),
  );
  if (reached.length < majorityOf(members.length)) {
    throw new InvariantViolation(
      "S2",
      `${node.id} starts asserting but reached only {${reached.join(",")}} of {${members.join(",")}} in the last ${window.toFixed(0)} ms`,
    );
  }
}

export function checkSafety(world: World, stepped: SimNode): void {
  const holders = world.leaseHolders();
  if (holders.length > 1) {
    throw new InvariantViolation(
      "S1",
      `${holders.length} nodes hold a valid lease at once: ${holders.map((h) => `${h.id} (term ${h.election!.probe(world.local(h)).term})`).join(", ")}`,
    );
  }
  for (const h of holders) {
    const p = h.election!.probe(world.local(h));
    if (!p.member || !p.eligible)
      throw new InvariantViolation("S3", `${h.id} holds a lease but is not eligible (member ${p.member}, healthy ${h.healthy}, maintenance ${h.maintenance})`);
    if (p.color !== p.colorInForce) throw new InvariantViolation("S3", `${h.id} (${p.color}) holds a lease while it believes ${p.colorInForce} is in force`);
  }
  // On the IP keeper's own state (the production IpKeeper, driven by the shared shell), not on the
  // core's view: what matters is whether the node still pulls the IP to itself.
  if (stepped.alive && stepped.election && keeperAsserting(stepped)) {
    const p = stepped.election.probe(world.local(stepped));
    if (!p.leaseValid)
      throw new InvariantViolation("A1", `${stepped.id}'s IP keeper still asserts the IP after its step, without a valid lease (role ${p.role})`);
  }
}
