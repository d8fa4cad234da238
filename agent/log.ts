/**
 * Structured logs: one JSON object per line on stdout, which journald stores with the unit. A field
 * named like a secret, or a string that looks like a DigitalOcean token, is redacted: a safety net
 * under the rule that secrets are never passed to the logger at all.
 */
export type Level = "debug" | "info" | "warn" | "error" | "crit";
/** `crit` is the one line a fail-stop writes before the process exits; no configured level hides it. */
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40, crit: 50 };
/** syslog priorities, so `journalctl -p warning` works on JSON lines too. */
const PRIORITY: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3, crit: 2 };
const SECRET_KEY = /token|secret|password|authorization|^key$|peerKey/i;
const TOKEN_TEXT = /\b(dop|doo|dor)_v1_[a-f0-9]{16,}\b/gi;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  crit(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

function redact(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return value.replace(TOKEN_TEXT, "[redacted]");
  if (depth > 4 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? "[redacted]" : redact(v, depth + 1);
  return out;
}

export function createLogger(o: { level: Level; nodeId: string; write?: (line: string) => void; base?: Record<string, unknown> }): Logger {
  const write = o.write ?? ((line: string) => process.stdout.write(line + "\n"));
  const min = ORDER[o.level];
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < min) return;
    const record = {
      ts: new Date().toISOString(),
      level,
      PRIORITY: PRIORITY[level],
      node: o.nodeId,
      msg: redact(msg),
      ...(redact({ ...o.base, ...fields }) as object),
    };
    write(JSON.stringify(record));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    crit: (m, f) => emit("crit", m, f),
    child: (fields) => createLogger({ ...o, write, base: { ...o.base, ...fields } }),
  };
}

/** A logger that drops everything (tests, tools). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, crit() {}, child: () => silentLogger };
