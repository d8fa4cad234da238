/** Human-readable `fipd status`, and the verdict `--wait-healthy` waits for. */
import type { StatusReport } from "./controller.js";
import type { PeerKeyStatus } from "./key-retirement.js";
import { printable } from "./schema.js";
import { redact } from "./secrets.js";

/**
 * An error kept by the agent, as status prints it: one printable line, redacted like the logs. The
 * agent already redacts the token it knows; this net catches what looks like one (an old agent).
 */
const shown = (error: string) => printable(redact(error));

export function isClusterHealthy(s: AgentStatus): { ok: true; note?: string } | { ok: false; why: string } {
  const strict = isClusterHealthyOnOneWire(s);
  if (strict.ok) return strict;
  return acrossWireChange(s) ?? strict;
}

function isClusterHealthyOnOneWire(s: StatusReport): { ok: true } | { ok: false; why: string } {
  if (s.shuttingDown) return { ok: false, why: "this agent is shutting down" };
  if (!s.majorityReachable) return { ok: false, why: "this node cannot reach a majority of the members" };
  if (!s.leader) return { ok: false, why: "no leader" };
  const leader = s.members.find((m) => m.id === s.leader);
  if (!leader || leader.color !== s.colorInForce) return { ok: false, why: `leader ${s.leader} is not of the color in force (${s.colorInForce})` };
  if (s.pendingSwitch) return { ok: false, why: `switch to ${s.requestedColor} pending: ${s.pendingSwitch}` };
  if (s.reservedIp && !s.reservedIp.holderIsLeader) {
    return {
      ok: false,
      why: s.reservedIp.holder
        ? `the reserved IP is on ${s.reservedIp.holder}, not on the leader ${s.leader}`
        : "no member reports holding the reserved IP yet",
    };
  }
  return { ok: true };
}

/**
 * A rolling upgrade across a wire change (the shared-key builds speak version 1, this one 2): the
 * members not restarted yet cannot be heard, so this node cannot see the cluster as a whole. The
 * wait passes when every member is accounted for — reachable, or heard on the older wire
 * (transport.ts olderWire) — and the members on this wire cannot elect a leader of the color in
 * force (no majority here, or no eligible member of that color here): then the older side keeps
 * the cluster, or the IP stays where it is (or, with the color fallback, goes to this side's other
 * color) until a member of the color in force joins this side. Where this side can elect a leader
 * of the color in force, the usual checks apply. Once no member speaks the older wire, they all
 * apply again, so the roll's last restart and the final check still wait for a healthy cluster.
 */
function acrossWireChange(s: AgentStatus): { ok: true; note: string } | null {
  const older = s.olderWire ?? [];
  if (!older.length || s.shuttingDown) return null;
  if (s.members.some((m) => !m.self && !m.reachable && !older.includes(m.id))) return null;
  // A leader of the color in force can be elected here: wait for it, as usual. A fallback leader of
  // the other color (its side cannot hear the color in force) does not count: it hands back to the
  // color in force once that joins this wire, at its own restart later in the roll.
  if (s.majorityReachable && s.members.some((m) => m.eligible === true && m.color === s.colorInForce && (m.self || m.reachable))) return null;
  return {
    ok: true,
    note: `rolling upgrade across the wire change: ${older.join(", ")} still run${older.length === 1 ? "s" : ""} a build on the older wire format, which this build does not hear; every member is accounted for, and the members on this wire cannot elect a leader of the color in force yet`,
  };
}

/**
 * What the agent's `status` answers: the controller's report, the config keys that wait for a
 * restart (agent/reload-keys.ts), and the transport's peer keys (agent/key-retirement.ts; null
 * before the transport runs, absent from an older agent).
 */
export type AgentStatus = StatusReport & {
  restartPending?: string[];
  peerKeys?: PeerKeyStatus | null;
  /** Members heard only on an older build's wire format (agent/transport.ts olderWire); absent from an older agent. */
  olderWire?: string[];
  acme?: { line: string }[] | null;
};

/**
 * The peer key line of `fipd status`, also printed by the deploy's final check: while previous
 * identities are accepted (a key roll), who has not yet signed with its new one; once retired, when.
 * The ids shown are this node's own identity's (each member has its own). Null when there is no roll
 * to speak of (one key, none retired).
 */
export function formatPeerKeys(k: PeerKeyStatus): string | null {
  if (k.previous !== null) {
    const who = k.waitingFor.length ? `waiting for ${k.waitingFor.join(", ")}` : "waiting for a packet from every member";
    return `previous peer key ${k.previous} still accepted: ${who} to sign with its new identity (this node's is ${k.current})`;
  }
  if (k.retired)
    return `previous peer key ${k.retired.keyId} retired at ${k.retired.at}: every member signs with its new identity (this node's is ${k.current})`;
  return null;
}

export function formatStatus(s: AgentStatus): string {
  const lines: string[] = [];
  lines.push(`node ${s.node}: ${s.role}, term ${s.term}, leader ${s.leader ?? "none"}${s.leaseValidForMs !== null ? `, lease ${s.leaseValidForMs} ms` : ""}`);
  lines.push(`health ${s.healthy ? "up" : "DOWN"}${s.maintenance ? ", MAINTENANCE" : ""}${s.shuttingDown ? ", shutting down" : ""}`);
  lines.push(
    `color in force ${s.colorInForce}${s.requestedColor !== s.colorInForce ? `, requested ${s.requestedColor}` : ""}${s.pendingSwitch ? ` (PENDING: ${s.pendingSwitch})` : ""}`,
  );
  if (s.colorFallback) {
    const f = s.colorFallback;
    lines.push(`FALLBACK: serving from ${f.color} instead of ${f.requested} for ${Math.round(f.forMs / 1000)} s: ${f.reason}`);
  }
  if (s.reservedIp) {
    lines.push(
      `reserved IP ${s.reservedIp.address}: on ${s.reservedIp.holder ?? "unknown"}${s.reservedIp.holderIsLeader ? " (the leader)" : s.leader ? " (NOT the leader)" : ""}`,
    );
  }
  lines.push(`members (membership v${s.membershipVersion}${s.jointOldMembers ? `, joint with [${s.jointOldMembers.join(", ")}]` : ""}):`);
  for (const m of s.members) {
    const bits = [
      m.role === "witness" ? "witness" : m.color,
      m.self ? "self" : m.reachable ? `reachable${m.rttMs !== null ? ` rtt ${m.rttMs} ms` : ""}` : "UNREACHABLE",
      m.healthy === null ? null : m.healthy ? "healthy" : "unhealthy",
      m.holdsReservedIp ? "holds IP" : null,
      m.id === s.leader ? "LEADER" : null,
      m.build ? `build ${m.build}` : null,
    ].filter(Boolean);
    lines.push(`  ${m.id.padEnd(16)} ${bits.join(", ")}`);
  }
  if (s.ipKeeper?.lastAssign) {
    const a = s.ipKeeper.lastAssign;
    lines.push(`last assign: ${a.outcome} in ${a.ms} ms${a.error ? `: ${shown(a.error)}` : ""}`);
  }
  if (s.ipKeeper?.lastError) lines.push(`last error: ${shown(s.ipKeeper.lastError)}`);
  const keys = s.peerKeys ? formatPeerKeys(s.peerKeys) : null;
  if (keys) lines.push(keys);
  if (s.olderWire?.length)
    lines.push(
      `OLDER WIRE: ${s.olderWire.join(", ")} run${s.olderWire.length === 1 ? "s" : ""} a build whose datagrams this build cannot read; not heard until upgraded`,
    );
  // One line per ACME certificate (agent/acme/manager.ts): placeholder, valid until, renewing, failing and why.
  for (const a of s.acme ?? []) lines.push(`acme ${shown(a.line)}`);
  if (s.restartPending?.length) lines.push(`RESTART PENDING for ${s.restartPending.join(", ")}: a reload cannot apply them (systemctl restart fipd)`);
  return lines.join("\n") + "\n";
}
