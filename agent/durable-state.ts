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
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import type { DurableState } from "./election/types.js";

export interface DurableStore {
  load(): DurableState | null;
  /** Returns once the state is on disk; throws DurableStateError otherwise. */
  save(state: DurableState): void;
}

export class DurableStateError extends Error {}

export function parseDurableState(text: string, file: string): DurableState {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new DurableStateError(`${file}: not JSON (${(e as Error).message})`);
  }
  const o = v as { term?: unknown; votedFor?: unknown };
  if (typeof o !== "object" || o === null || !Number.isSafeInteger(o.term) || (o.term as number) < 0) {
    throw new DurableStateError(`${file}: "term" must be a non-negative integer`);
  }
  if (o.votedFor !== null && typeof o.votedFor !== "string") throw new DurableStateError(`${file}: "votedFor" must be a node id or null`);
  return { term: o.term as number, votedFor: o.votedFor as string | null };
}

export function fileDurableStore(file: string, onError: (message: string) => void): DurableStore {
  return {
    load() {
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return null; // first boot
        onError(`cannot read ${file}: ${(e as Error).message}; starting from term 0`);
        return null;
      }
      try {
        return parseDurableState(text, file);
      } catch (e) {
        onError(`${(e as Error).message}; starting from term 0`);
        return null;
      }
    },
    save(state) {
      const dir = dirname(file);
      const tmp = `${file}.tmp`;
      try {
        mkdirSync(dir, { recursive: true, mode: 0o750 });
        const fd = openSync(tmp, "w", 0o640);
        try {
          writeSync(fd, JSON.stringify(state) + "\n");
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
        // Thrown, not reported: the vote of this step must not leave, and the agent stops (fail-stop).
        throw new DurableStateError(`cannot write the election state ${file}: ${(e as Error).message}`);
      }
    },
  };
}
