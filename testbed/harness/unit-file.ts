/**
 * Reads the agent's systemd unit (components/assets/fipd.service) the way systemd does, for the tests
 * that check it and for the sandbox that runs the agent under its restrictions (unit-sandbox.ts):
 * sections of `Key=value` lines, `#`/`;` comments, a key given twice accumulates (SystemCallFilter=),
 * an empty assignment resets the list. Line continuations are not supported: the unit uses none, and
 * a trailing backslash fails loudly rather than being misread.
 */
import { readFileSync } from "node:fs";
import { UNIT_FILE } from "./node-flags.js";

export type UnitFile = Map<string, Map<string, string[]>>;

export function parseUnit(text: string, where = "unit file"): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | null = null;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) return;
    const at = `${where}:${i + 1}`;
    if (line.endsWith("\\")) throw new Error(`${at}: line continuations are not supported: ${line}`);
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header) {
      section = unit.get(header[1]) ?? new Map<string, string[]>();
      unit.set(header[1], section);
      return;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (!kv) throw new Error(`${at}: expected "Key=value" or "[Section]", got: ${line}`);
    if (!section) throw new Error(`${at}: ${kv[1]}= before any [Section]`);
    const value = kv[2].trim();
    if (value === "") section.set(kv[1], []);
    else section.set(kv[1], [...(section.get(kv[1]) ?? []), value]);
  });
  return unit;
}

export function readUnit(path = UNIT_FILE): UnitFile {
  return parseUnit(readFileSync(path, "utf8"), path);
}

/** The values of a key (all its assignments since the last empty one), or [] if unset. */
export function unitValues(unit: UnitFile, section: string, key: string): string[] {
  return unit.get(section)?.get(key) ?? [];
}

/** The last value of a key, as systemd reads single-valued settings, or undefined if unset. */
export function unitValue(unit: UnitFile, section: string, key: string): string | undefined {
  const v = unitValues(unit, section, key);
  return v.length ? v[v.length - 1] : undefined;
}

const TIME_UNITS_MS: Record<string, number> = {
  us: 0.001,
  usec: 0.001,
  ms: 1,
  msec: 1,
  s: 1_000,
  sec: 1_000,
  second: 1_000,
  seconds: 1_000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
};

/** A systemd time span ("1s", "30s", "1min 30s", "5", "infinity"), in milliseconds; a bare number is seconds. */
export function parseTimeSpanMs(value: string): number {
  const v = value.trim();
  if (v === "infinity") return Infinity;
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1_000;
  let total = 0;
  let rest = v;
  while (rest.length) {
    const m = /^(\d+(?:\.\d+)?)\s*([a-z]+)\s*/.exec(rest);
    const unitMs = m ? TIME_UNITS_MS[m[2]] : undefined;
    if (!m || unitMs === undefined) throw new Error(`"${value}" is not a systemd time span (expected e.g. 1s, 500ms, 1min 30s)`);
    total += Number(m[1]) * unitMs;
    rest = rest.slice(m[0].length);
  }
  return total;
}

/** A systemd size ("192M", "1G", "4096"), in bytes; suffixes are powers of 1024 as systemd reads them. */
export function parseBytes(value: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)$/.exec(value.trim());
  if (!m) throw new Error(`"${value}" is not a systemd size (expected e.g. 192M, 1G, or bytes)`);
  return Math.round(Number(m[1]) * 1024 ** "_KMGT".indexOf(m[2] || "_"));
}
