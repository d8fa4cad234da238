/**
 * Views of a running cluster shared by the loopback harness (local-cluster.ts) and the network test
 * bed (netbed/bed.ts): who holds the IP (the emulator's truth), which leader the nodes agree on, and
 * a bounded wait.
 */
import type { StatusReport } from "../../agent/controller.js";
import type { Emulator } from "../emulator/index.js";

export type Poll<T> = () => Promise<T | null | undefined | false> | T | null | undefined | false;

/** Poll `fn` until it returns something truthy, or fail after `timeoutMs` naming what and where the logs are. */
export async function waitFor<T>(what: string, fn: Poll<T>, timeoutMs: number, intervalMs: number, logsIn: string): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (agent logs in ${logsIn})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The node whose droplet holds the Reserved IP, given the emulator's answer. */
export function holderOf(nodes: Iterable<{ id: string; dropletId: number }>, dropletId: number | null): string | null {
  for (const n of nodes) if (n.dropletId === dropletId) return n.id;
  return null;
}

/** The one leader the running nodes report, or null (none, or more than one). */
export async function agreedLeader(ids: Iterable<string>, status: (id: string) => Promise<StatusReport | null>): Promise<string | null> {
  const views = await Promise.all([...ids].map(status));
  const leaders = views.filter((s): s is StatusReport => s !== null && s.role === "leader");
  return leaders.length === 1 ? leaders[0].node : null;
}

/** The views above as methods, for the loopback harness and the network test bed alike. */
export abstract class ClusterViews {
  abstract readonly nodes: Map<string, { id: string; dropletId: number }>;
  abstract readonly emulator: Emulator;
  abstract readonly dir: string;
  abstract readonly reservedIp: string;
  abstract status(id: string): Promise<StatusReport | null>;

  /** The node whose droplet holds the Reserved IP, per the emulator (ground truth). */
  holder(): string | null {
    return holderOf(this.nodes.values(), this.emulator.reservedIpHolder(this.reservedIp));
  }

  /** The leader that running nodes agree on (by its key in `nodes`), or null. */
  async leader(): Promise<string | null> {
    const l = await agreedLeader(this.nodes.keys(), (id) => this.status(id));
    return l === null ? null : this.nodeKey(l);
  }

  /** The key in `nodes` of the node whose agent runs as `nodeId` (the same, unless a bed names them apart). */
  protected nodeKey(nodeId: string): string {
    return nodeId;
  }

  waitFor<T>(what: string, fn: Poll<T>, timeoutMs = 20_000, intervalMs = 25): Promise<T> {
    return waitFor(what, fn, timeoutMs, intervalMs, this.dir);
  }
}
