/**
 * Structured logs: one JSON object per line on stdout, which journald stores with the unit. A field
 * named like a secret, or a string that looks like a DigitalOcean token, is redacted: a safety net
 * under the rule that secrets are never passed to the logger at all.
 *
 * Every line is rate-limited by its level and message (the constant text, not the fields): at most
 * LOG_BURST lines of one message per LOG_WINDOW_MS, then one summary line says how many were
 * suppressed. One error path once wrote 38,446 stack traces in 2 s; journald's own limit would then
 * drop everything else too, the line that explains the incident included. `crit` lines (the process
 * is about to end) are never suppressed.
 */
export type Level = "debug" | "info" | "warn" | "error" | "crit";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40, crit: 50 };
/** syslog priorities, so `journalctl -p warning` works on JSON lines too. */
const PRIORITY: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3, crit: 2 };
const SECRET_KEY = /token|secret|password|authorization|^key$|peerKey/i;
const TOKEN_TEXT = /\b(dop|doo|dor)_v1_[a-f0-9]{16,}\b/gi;

/** Lines of one message (level and text) written per window before the rest are counted instead. */
export const LOG_BURST = 10;
/** The rate limit's window; a summary of what it suppressed follows at its end. */
export const LOG_WINDOW_MS = 10_000;
/** At most this many messages are tracked at once; beyond, the oldest windows close early. */
const MAX_TRACKED_MESSAGES = 1_000;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** The process is about to end (fail-stop): never rate-limited. */
  crit(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** The process's logger: its children share the level and the rate limit. */
export interface RootLogger extends Logger {
  /** Applied on reload: every child follows at once. */
  setLevel(level: Level): void;
  /** Write the summaries of windows that have ended (also done on every line and by a timer). */
  flushSuppressed(): void;
}

function redact(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return value.replace(TOKEN_TEXT, "[redacted]");
  if (depth > 4 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? "[redacted]" : redact(v, depth + 1);
  return out;
}

interface Window {
  level: Level;
  msg: string;
  startMs: number;
  written: number;
  suppressed: number;
}

export function createLogger(o: {
  level: Level;
  nodeId: string;
  write?: (line: string) => void;
  base?: Record<string, unknown>;
  /** Monotonic milliseconds for the rate limit (tests pass a fake clock). */
  nowMs?: () => number;
  /** Wall-clock time for the `ts` field. */
  clock?: () => Date;
}): RootLogger {
  const write = o.write ?? ((line: string) => process.stdout.write(line + "\n"));
  const nowMs = o.nowMs ?? (() => performance.now());
  const clock = o.clock ?? (() => new Date());
  let level = o.level;
  const windows = new Map<string, Window>();
  let timer: NodeJS.Timeout | null = null;

  const line = (lvl: Level, msg: string, fields: Record<string, unknown> | undefined) =>
    write(JSON.stringify({ ts: clock().toISOString(), level: lvl, PRIORITY: PRIORITY[lvl], node: o.nodeId, msg: redact(msg), ...(redact(fields) as object) }));

  const close = (key: string, w: Window) => {
    windows.delete(key);
    if (w.suppressed > 0) {
      line(w.level, `suppressed ${w.suppressed} lines like this one in ${LOG_WINDOW_MS / 1000} s`, { suppressed: w.suppressed, like: w.msg });
    }
  };

  /** When the oldest open window ends: no line before then needs to look at the others. */
  let nextEndMs = Infinity;
  const flushSuppressed = () => {
    const now = nowMs();
    if (now < nextEndMs) return;
    nextEndMs = Infinity;
    for (const [key, w] of windows) {
      if (now - w.startMs >= LOG_WINDOW_MS) close(key, w);
      else nextEndMs = Math.min(nextEndMs, w.startMs + LOG_WINDOW_MS);
    }
    if (timer && ![...windows.values()].some((w) => w.suppressed > 0)) {
      clearInterval(timer);
      timer = null;
    }
  };

  const emit = (lvl: Level, msg: string, fields: Record<string, unknown> | undefined) => {
    if (ORDER[lvl] < ORDER[level]) return;
    flushSuppressed();
    if (lvl !== "crit") {
      const key = `${lvl} ${msg}`;
      let w = windows.get(key);
      if (!w) {
        if (windows.size >= MAX_TRACKED_MESSAGES) {
          const [oldKey, oldest] = windows.entries().next().value as [string, Window];
          close(oldKey, oldest);
        }
        w = { level: lvl, msg, startMs: nowMs(), written: 0, suppressed: 0 };
        windows.set(key, w);
        nextEndMs = Math.min(nextEndMs, w.startMs + LOG_WINDOW_MS);
      }
      if (w.written >= LOG_BURST) {
        w.suppressed++;
        // The summary must come even when the flood stops and nothing else is logged.
        timer ??= setInterval(flushSuppressed, LOG_WINDOW_MS).unref();
        return;
      }
      w.written++;
    }
    line(lvl, msg, fields);
  };

  const make = (base: Record<string, unknown> | undefined): Logger => {
    const at = (lvl: Level) => (msg: string, fields?: Record<string, unknown>) => emit(lvl, msg, base || fields ? { ...base, ...fields } : undefined);
    return {
      debug: at("debug"),
      info: at("info"),
      warn: at("warn"),
      error: at("error"),
      crit: at("crit"),
      child: (fields) => make({ ...base, ...fields }),
    };
  };

  return Object.assign(make(o.base), {
    setLevel(next: Level) {
      level = next;
    },
    flushSuppressed,
  });
}

/** A logger that drops everything (tests, tools). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, crit() {}, child: () => silentLogger };
