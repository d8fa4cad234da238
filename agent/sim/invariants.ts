/**
 * Safety invariants, checked after every single step of every node.
 *
 *  S1  at any instant at most one node holds a valid leader lease (by its own clock): no split brain;
 *  S2  at most one leader per term (checked in World.stepNode as leaders appear);
 *  S3  a node with a valid lease is eligible: a member, an LB, healthy, not in maintenance, and of
 *      the color it believes in force;
 *  A1  a node that was told to assert the IP (start-asserting) still holds a valid lease whenever it
 *      takes a step: it stops asserting, at the latest, at the step where its lease runs out.
 *
 * Liveness (L1) and the color rule (C1) are checked at the end of a run, after a calm period.
 */
import { InvariantViolation, type SimNode, type World } from "./world.js";

export function checkSafety(world: World, stepped: SimNode): void {
  const holders = world.leaseHolders();
  if (holders.length > 1) {
    throw new InvariantViolation("S1", `${holders.length} nodes hold a valid lease at once: ${holders.map((h) => `${h.id} (term ${h.election!.probe(world.local(h)).term})`).join(", ")}`);
  }
  for (const h of holders) {
    const p = h.election!.probe(world.local(h));
    if (!p.member || !p.eligible) throw new InvariantViolation("S3", `${h.id} holds a lease but is not eligible (member ${p.member}, healthy ${h.healthy}, maintenance ${h.maintenance})`);
    if (p.color !== p.colorInForce) throw new InvariantViolation("S3", `${h.id} (${p.color}) holds a lease while it believes ${p.colorInForce} is in force`);
  }
  if (stepped.alive && stepped.election && stepped.asserting) {
    const p = stepped.election.probe(world.local(stepped));
    if (!p.leaseValid) throw new InvariantViolation("A1", `${stepped.id} still asserts the IP after its step, without a valid lease (role ${p.role})`);
  }
}
