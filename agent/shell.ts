/**
 * The one shell: steps the pure election core with one event and carries out its output. The
 * production controller (agent/controller.ts) and the simulator (testbed/sim/world.ts) both call
 * `stepAndCarryOut`, so the code that is simulated over thousands of seeds is the code that ships.
 * What differs between them (disk, network, timers, the IP keeper's API client, metrics) comes in
 * through the ports below.
 *
 * Order matters, and is the point of having one home for it:
 *  1. persist: the term and vote reach stable storage before any message of the same output leaves,
 *     so no vote or candidacy is ever sent that a crash could make this node forget. A save that
 *     throws propagates before anything is sent: the caller must end the process (fail-stop).
 *  2. stamp and send: each status carries whether the Reserved IP is on this droplet and the build.
 *  3. start or stop the IP keeper, and the role bookkeeping (logs, metrics).
 *  4. check that the keeper asserts exactly when the core says it may (A1 on what is carried out,
 *     not only on the core's own view); a mismatch throws, and the caller ends the process.
 *  5. schedule the next wake.
 */
import type { DurableState, ElectionEffect, ElectionEvent, ElectionNode, ElectionOutput, NodeId, PeerMessage } from "./election/types.js";

/** Stable storage for the term and vote. `save` returns only once the state is durable; it throws otherwise. */
export interface DurablePort {
  save(state: DurableState): void;
}

export interface SendPort {
  send(to: NodeId, message: PeerMessage): void;
}

/** What the shell needs of the IP keeper (agent/ip-keeper.ts; the simulator runs the same class). */
export interface KeeperPort {
  start(term: number): void;
  stop(reason: string): void;
  /** Whether the keeper is currently pulling the Reserved IP to this droplet. */
  isAsserting(): boolean;
  /** Whether the Reserved IP is on this droplet, as last observed (null: not known yet). */
  holdsReservedIp(): boolean | null;
}

/** Logs and metrics; all optional. */
export interface ShellHooks {
  startAsserting?(term: number): void;
  stopAsserting?(term: number, reason: string): void;
  roleChanged?(effect: Extract<ElectionEffect, { type: "role-changed" }>): void;
  echoIgnored?(effect: Extract<ElectionEffect, { type: "echo-ignored" }>): void;
}

export interface ShellPorts {
  /** Absent: the state lives in memory only (unit tests). */
  durable?: DurablePort | null;
  transport: SendPort;
  /** Absent on a witness, which never asserts the IP. */
  keeper?: KeeperPort | null;
  /** The running bundle's build id, stamped on every status sent. */
  build?: string;
  hooks?: ShellHooks;
  /** Arrange for a tick at local time `wakeAt` (may be Infinity). */
  schedule(wakeAt: number): void;
  /**
   * Skip the keeper check of step 4. Only the simulator sets it, under a planted keeper bug, so that
   * its own invariant (A1 on the keeper's state) is what catches the bug.
   */
  skipKeeperCheck?: boolean;
}

/** A broken assertion in the shell: the process must stop (see Controller's `fatal`). */
export class ShellAssertionError extends Error {
  constructor(
    readonly invariant: string,
    message: string,
  ) {
    super(`${invariant}: ${message}`);
    this.name = "ShellAssertionError";
  }
}

/** Step the core with `event` and carry out its output. Throws (core, durable write, assertion): fail-stop. */
export function stepAndCarryOut(node: ElectionNode, event: ElectionEvent, ports: ShellPorts): ElectionOutput {
  const out = node.step(event);
  carryOut(out, ports, () => node.snapshot(event.now).asserting);
  return out;
}

/** Carry out one election output, in the order above. `coreAsserting` is the core's view after the step. */
export function carryOut(out: ElectionOutput, ports: ShellPorts, coreAsserting: () => boolean): void {
  // 1. Durable first; a throw here leaves before any message does.
  for (const eff of out.effects) if (eff.type === "persist") ports.durable?.save(eff.state);

  // 2. Stamp and send.
  const holds = ports.keeper?.holdsReservedIp() === true;
  for (const { to, message } of out.send) {
    if ("status" in message && message.status) {
      message.status.holdsReservedIp = holds;
      if (ports.build) message.status.build = ports.build;
    }
    ports.transport.send(to, message);
  }

  // 3. The keeper and the bookkeeping, in the core's order.
  for (const eff of out.effects) {
    switch (eff.type) {
      case "start-asserting":
        ports.hooks?.startAsserting?.(eff.term);
        ports.keeper?.start(eff.term);
        break;
      case "stop-asserting":
        ports.hooks?.stopAsserting?.(eff.term, eff.reason);
        ports.keeper?.stop(eff.reason);
        break;
      case "role-changed":
        ports.hooks?.roleChanged?.(eff);
        break;
      case "echo-ignored":
        ports.hooks?.echoIgnored?.(eff);
        break;
      case "persist":
        break; // done first
    }
  }

  // 4. A1 on what is carried out: the keeper asserts exactly when the core holds a lease and says so.
  if (ports.keeper && !ports.skipKeeperCheck) {
    const want = coreAsserting();
    const is = ports.keeper.isAsserting();
    if (is !== want) {
      throw new ShellAssertionError(
        "A1",
        `the IP keeper ${is ? "asserts" : "does not assert"} the reserved IP but the election core says it ${want ? "should" : "must not"}`,
      );
    }
  }

  // 5. The next wake.
  ports.schedule(out.wakeAt);
}
