/**
 * The election's durable state (term and vote) in a small JSON file, as Raft keeps currentTerm and
 * votedFor: a restarted agent never votes twice in a term nor stands in a term it has seen, so no two
 * processes ever lead the same term. Written atomically (temp file, fsync, rename, fsync of the
 * directory) before any message of the same step leaves, once per election at most.
 *
 * The file holds no secret. Losing it is not a safety problem on its own (leases and the boot quiet
 * period keep two leases from overlapping); it only weakens the one-leader-per-term guarantee, so a
 * damaged file is reported and ignored rather than keeping the node down. A failed write is another
 * matter: the vote it records would leave unrecorded, so `save` throws and the agent stops.
 *
 * The same file holds the boot counter (`boot`), the peer transport's boot id (agent/transport.ts):
 * each start takes the next value and writes it before the transport exists, so before any datagram
 * leaves. Peers refuse a boot id lower than one they have seen (replay protection), so it must never
 * go down, whatever the wall clock does: the next value is always the stored one + 1. The wall clock
 * is only a floor (`nextBoot`), which keeps the counter above the boot ids older builds sent (unix
 * seconds) across an upgrade and a rollback. A failed write ends the start (fail-stop): running on
 * with a boot id that a crash could make this node reuse would let a replay through.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import type { DurableState } from "./election/types.js";

export interface DurableStore {
  load(): DurableState | null;
  /** Returns once the state is on disk; throws DurableStateError otherwise. */
  save(state: DurableState): void;
  /**
   * Takes this start's boot counter: the next value (`nextBoot`), written to disk (fsync) before it
   * returns. Throws DurableStateError if it cannot be written: the start must end (fail-stop).
   */
  beginBoot(): number;
}

export class DurableStateError extends Error {}

/**
 * The highest boot counter: the transport puts it in the high 32 bits of its 64-bit boot id, as
 * older builds put their boot time in unix seconds (good until 2106).
 */
export const MAX_BOOT = 0xffff_ffff;

/**
 * The boot counter of a start, after `previous` (the stored counter; for a file an older build wrote,
 * its modification time in seconds; null if there is neither). Always above `previous`, so a clock
 * stepped back cannot lower it. Never below the wall clock's seconds + 1: older builds sent their
 * boot time in unix seconds as the boot id (high 32 bits), and peers still running one remember the
 * last such id of this node, so the first counter of an upgrade must be above it, and so must the
 * first after a rollback and a new upgrade (an older build drops the field when it saves the state).
 */
export function nextBoot(previous: number | null, wallClockMs: number): number {
  return Math.max((previous ?? 0) + 1, Math.floor(wallClockMs / 1000) + 1);
}

export function parseDurableState(text: string, file: string): DurableState {
  return parseDurableFile(text, file).state;
}

/** The whole file: the election's state and the boot counter (null: written by an older build). */
export function parseDurableFile(text: string, file: string): { state: DurableState; boot: number | null } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new DurableStateError(`${file}: not JSON (${(e as Error).message})`);
  }
  const o = v as { term?: unknown; votedFor?: unknown; boot?: unknown };
  if (typeof o !== "object" || o === null || !Number.isSafeInteger(o.term) || (o.term as number) < 0) {
    throw new DurableStateError(`${file}: "term" must be a non-negative integer`);
  }
  if (o.votedFor !== null && typeof o.votedFor !== "string") throw new DurableStateError(`${file}: "votedFor" must be a node id or null`);
  if (o.boot !== undefined && (!Number.isSafeInteger(o.boot) || (o.boot as number) < 1 || (o.boot as number) > MAX_BOOT)) {
    throw new DurableStateError(`${file}: "boot" must be an integer from 1 to ${MAX_BOOT}, or absent`);
  }
  return { state: { term: o.term as number, votedFor: o.votedFor as string | null }, boot: (o.boot as number | undefined) ?? null };
}

interface FileContents {
  state: DurableState | null;
  boot: number | null;
  /** The file's modification time in unix seconds (null: no file). */
  writtenAtS: number | null;
}

/** `nowMs`: the wall clock, for the floor of the boot counter (tests step it). */
export function fileDurableStore(file: string, onError: (message: string) => void, opts: { nowMs?: () => number } = {}): DurableStore {
  const nowMs = opts.nowMs ?? Date.now;
  /** What the file holds, as this store last read or wrote it (`boot` is kept across `save`). */
  let known: FileContents | null = null;

  const read = (): FileContents => {
    let text: string;
    let writtenAtS: number | null = null;
    try {
      text = readFileSync(file, "utf8");
      writtenAtS = Math.floor(statSync(file).mtimeMs / 1000);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { state: null, boot: null, writtenAtS }; // first boot
      onError(`cannot read ${file}: ${(e as Error).message}; starting from term 0`);
      return { state: null, boot: null, writtenAtS };
    }
    try {
      return { ...parseDurableFile(text, file), writtenAtS };
    } catch (e) {
      onError(`${(e as Error).message}; starting from term 0`);
      return { state: null, boot: null, writtenAtS };
    }
  };

  const write = (contents: DurableState & { boot?: number }, what: string) => {
    const dir = dirname(file);
    const tmp = `${file}.tmp`;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o750 });
      const fd = openSync(tmp, "w", 0o640);
      try {
        writeSync(fd, JSON.stringify(contents) + "\n");
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, file);
      const dfd = openSync(dir, "r");
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    } catch (e) {
      // Thrown, not reported: what it records must not leave unrecorded, and the agent stops (fail-stop).
      throw new DurableStateError(`cannot write the ${what} ${file}: ${(e as Error).message}`);
    }
  };

  return {
    load() {
      known = read();
      return known.state;
    },
    save(state) {
      const boot = known?.boot ?? null;
      write(boot === null ? state : { ...state, boot }, "election state");
      known = { state, boot, writtenAtS: known?.writtenAtS ?? null };
    },
    beginBoot() {
      // A file without the field was written by an older build; its time stands in for the counter.
      const r = known ?? read();
      const boot = nextBoot(r.boot ?? r.writtenAtS, nowMs());
      if (boot > MAX_BOOT) {
        throw new DurableStateError(`${file}: the boot counter would pass ${MAX_BOOT} (the wall clock is past 2106, or "boot" was edited)`);
      }
      const state = r.state ?? { term: 0, votedFor: null };
      write({ ...state, boot }, "boot counter to the election state");
      known = { state, boot, writtenAtS: r.writtenAtS };
      return boot;
    },
  };
}
