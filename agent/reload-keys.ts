/**
 * Which config keys a reload applies, and which need a restart: the one home of the rule, so a
 * reload never answers ok for a change it did not make. `fipd reload` (and the answer apply-config
 * gets) lists the keys waiting for a restart as `restartPending`, `fipd status` shows them, and the
 * stack's apply step restarts the agent while any are pending.
 *
 * A key not listed here needs a restart: a new key is safe by default.
 */
import type { AgentConfig } from "./config.js";

/**
 * Applied on reload, with where: the controller takes the members, the colors and the election
 * timing; run.ts re-reads the token and peer keys (from the new files), switches maintenance when
 * the file's value changes, sets the log level, restarts the health poller and re-binds the metrics
 * listener. `nodeId` and `reservedIp` are refused outright (the controller's reload says so).
 */
export const RELOAD_APPLIES = [
  "membershipVersion",
  "members",
  "activeColor",
  "failover",
  "maintenance",
  "peerAuth",
  "api.tokenFile",
  "logLevel",
  "health",
  "metrics",
] as const;

/** The dotted keys whose values differ (mappings compared key by key, lists and values whole). */
export function changedKeys(a: unknown, b: unknown, prefix = ""): string[] {
  const isMap = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);
  if (isMap(a) && isMap(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedKeys(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix || "(root)"];
}

/** The keys that differ between the config this process started with and `next`, and that only a restart applies. */
export function restartPendingKeys(started: AgentConfig, next: AgentConfig): string[] {
  return changedKeys(started, next).filter((k) => !RELOAD_APPLIES.some((p) => k === p || k.startsWith(`${p}.`)));
}
