/**
 * The IP keeper: while this node leads, make sure the Reserved IP is on this droplet.
 *
 * The DigitalOcean API is shared and rate limited (250 requests a minute per token), so the keeper
 * looks at the free, local metadata service often and at the API rarely:
 *  - on gaining leadership: one metadata read; if the IP is not here, one assign (the client follows
 *    the action and confirms it);
 *  - then every `checkIntervalMs`: metadata only; if the IP went elsewhere (a partition healed, a
 *    human moved it), assign again;
 *  - every `verifyIntervalMs`: one API read, in case metadata lags or lies.
 * Followers also read metadata (free) so that every node can report who holds the IP.
 *
 * If metadata keeps saying "not here" after an assign the API confirmed (seen: metadata and API
 * disagree), re-assigning on every check only burns the shared rate limit: the keeper re-assigns
 * with backoff (5 s, doubling to 60 s), says so in one log line per episode and counts it
 * (`onMetadataDisagreement`).
 *
 * Losing the lease aborts an in-flight assignment at once: a node that is no longer sure it leads
 * must not keep pulling the IP towards itself.
 */
import { apiWaitMs } from "./api-wait.js";
import type { Logger } from "./log.js";

export interface MetadataReader {
  reservedIpv4(): Promise<{ active: boolean; ipAddress: string | null }>;
}

export interface ReservedIpApi {
  getReservedIp(ip: string): Promise<{ dropletId: number | null; locked: boolean }>;
  assign(ip: string, dropletId: number, opts: { deadlineMs: number; signal?: AbortSignal; unserved?: boolean }): Promise<unknown>;
}

export interface IpKeeperOptions {
  reservedIp: string;
  dropletId: number;
  metadata: MetadataReader;
  api: ReservedIpApi;
  log: Logger;
  checkIntervalMs: number;
  verifyIntervalMs: number;
  assignDeadlineMs: number;
  /** Called whenever this droplet's view of "the IP is on me" changes. */
  onHolderChange?: (onSelf: boolean) => void;
  onAssign?: (outcome: "success" | "already" | "error" | "aborted", ms: number, error?: string) => void;
  /** Metadata said "not here" after an assign the API confirmed (once per deferred re-assign). */
  onMetadataDisagreement?: () => void;
  now?: () => number;
  /** Timers for the keeper's waits; the simulator passes its own, driven by simulated time. */
  timers?: KeeperTimers;
}

export interface KeeperTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: KeeperTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Re-assigns while metadata disagrees with a confirmed assign: 5 s after it, doubling to 60 s. */
export const DISAGREEMENT_FIRST_MS = 5_000;
export const DISAGREEMENT_MAX_MS = 60_000;

export interface IpKeeperState {
  asserting: boolean;
  term: number | null;
  onSelf: boolean | null;
  lastMetadataCheckAt: number | null;
  lastApiVerifyAt: number | null;
  assignInFlight: boolean;
  lastAssign: { outcome: string; ms: number; at: number; error?: string } | null;
  lastError: string | null;
}

const sleep = (timers: KeeperTimers, ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = timers.setTimeout(done, ms);
    function done() {
      timers.clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

export class IpKeeper {
  private readonly now: () => number;
  private readonly timers: KeeperTimers;
  private readonly state: IpKeeperState = {
    asserting: false,
    term: null,
    onSelf: null,
    lastMetadataCheckAt: null,
    lastApiVerifyAt: null,
    assignInFlight: false,
    lastAssign: null,
    lastError: null,
  };
  /** Aborts everything tied to the current leadership (assign, waits). */
  private leadership: AbortController | null = null;
  /** Aborts the follower-side metadata watch loop on close. */
  private readonly lifetime = new AbortController();
  private failures = 0;
  /** The last assign succeeded and metadata has not said "here" since. */
  private assignedUnconfirmed = false;
  /** In a disagreement episode: re-assigns done in it, and when the next one may go. */
  private disagreement: { reassigns: number; nextAt: number; since: number; logged: boolean } | null = null;

  constructor(private readonly o: IpKeeperOptions) {
    this.now = o.now ?? (() => performance.now());
    this.timers = o.timers ?? realTimers;
  }

  /** Whether this keeper is pulling the IP to its droplet now (the shell checks it against the core). */
  isAsserting(): boolean {
    return this.state.asserting;
  }

  /** Whether the IP is on this droplet, as last read (null: not known yet); stamped on statuses. */
  holdsReservedIp(): boolean | null {
    return this.state.onSelf;
  }

  snapshot(): IpKeeperState {
    return { ...this.state, lastAssign: this.state.lastAssign && { ...this.state.lastAssign } };
  }

  /** Run the follower-side watch: metadata only, so `holdsReservedIp` is known on every node. */
  watch(): void {
    void this.watchLoop();
  }

  start(term: number): void {
    if (this.state.asserting && this.state.term === term) return;
    this.stop("new term");
    this.state.asserting = true;
    this.state.term = term;
    this.failures = 0;
    this.assignedUnconfirmed = false;
    this.disagreement = null;
    this.leadership = new AbortController();
    void this.assertLoop(this.leadership.signal);
  }

  stop(reason: string): void {
    if (!this.leadership) return;
    this.o.log.info("stopped asserting the reserved IP", { reason, term: this.state.term });
    this.leadership.abort(new Error(`leadership ended: ${reason}`));
    this.leadership = null;
    this.state.asserting = false;
    this.state.term = null;
  }

  close(): void {
    this.stop("shutdown");
    this.lifetime.abort();
  }

  /** Re-read metadata now (used after a handover to learn when the IP has left). */
  async refresh(): Promise<boolean | null> {
    await this.checkMetadata();
    return this.state.onSelf;
  }

  private setOnSelf(v: boolean) {
    if (this.state.onSelf !== v) {
      this.state.onSelf = v;
      this.o.onHolderChange?.(v);
    }
  }

  private async checkMetadata(): Promise<void> {
    try {
      const r = await this.o.metadata.reservedIpv4();
      this.state.lastMetadataCheckAt = this.now();
      this.setOnSelf(r.active && r.ipAddress === this.o.reservedIp);
    } catch (e) {
      this.state.lastError = `metadata: ${(e as Error).message}`;
      this.o.log.warn("metadata check failed", { error: (e as Error).message });
    }
  }

  private async watchLoop(): Promise<void> {
    const signal = this.lifetime.signal;
    while (!signal.aborted) {
      // The assert loop reads metadata itself while leading; do not double the reads.
      if (!this.state.asserting) await this.checkMetadata();
      await sleep(this.timers, this.o.checkIntervalMs, signal);
    }
  }

  private async assertLoop(signal: AbortSignal): Promise<void> {
    let nextVerifyAt = this.now() + this.o.verifyIntervalMs;
    while (!signal.aborted) {
      await this.checkMetadata();
      if (signal.aborted) return;
      let needAssign = this.state.onSelf !== true;
      if (!needAssign) this.endDisagreement();
      else if (this.assignedUnconfirmed) needAssign = this.reassignDespiteApi();
      if (!needAssign && this.now() >= nextVerifyAt) {
        nextVerifyAt = this.now() + this.o.verifyIntervalMs;
        needAssign = !(await this.verifyThroughApi());
      }
      if (needAssign && !signal.aborted) {
        const ok = await this.assign(signal);
        if (!ok && !signal.aborted) {
          // The client already retried under its deadline; this is a longer pause so a broken
          // token or an API outage does not become a request storm.
          const pauseMs = apiWaitMs({ status: 0, attempt: this.failures, nowMs: Date.now(), unserved: this.state.onSelf !== true, random: Math.random() });
          await sleep(this.timers, pauseMs, signal);
          continue;
        }
      }
      await sleep(this.timers, this.o.checkIntervalMs, signal);
    }
  }

  /**
   * Metadata says "not here" although the last assign was confirmed by the API. Metadata may lag
   * the assign by a few seconds, so the first re-assign waits 5 s, then the waits double to 60 s.
   * True if a re-assign is due now.
   */
  private reassignDespiteApi(): boolean {
    const now = this.now();
    if (!this.disagreement) this.disagreement = { reassigns: 0, nextAt: now + DISAGREEMENT_FIRST_MS, since: now, logged: false };
    const d = this.disagreement;
    if (now < d.nextAt) return false;
    d.reassigns++;
    d.nextAt = now + Math.min(DISAGREEMENT_MAX_MS, DISAGREEMENT_FIRST_MS * 2 ** d.reassigns);
    this.o.onMetadataDisagreement?.();
    if (!d.logged) {
      d.logged = true;
      this.o.log.warn("metadata says the reserved IP is not on this droplet although the API assigned it here; re-assigning with backoff up to 60 s", {
        ip: this.o.reservedIp,
        sinceMs: Math.round(now - d.since),
      });
    }
    return true;
  }

  private endDisagreement(): void {
    this.assignedUnconfirmed = false;
    if (this.disagreement?.logged) {
      this.o.log.info("metadata agrees again: the reserved IP is on this droplet", {
        afterMs: Math.round(this.now() - this.disagreement.since),
        reassigns: this.disagreement.reassigns,
      });
    }
    this.disagreement = null;
  }

  /** True if the API agrees the IP is on this droplet. */
  private async verifyThroughApi(): Promise<boolean> {
    try {
      const ip = await this.o.api.getReservedIp(this.o.reservedIp);
      this.state.lastApiVerifyAt = this.now();
      const mine = ip.dropletId === this.o.dropletId;
      if (!mine) this.o.log.warn("API shows the reserved IP elsewhere although metadata said it is here", { holder: ip.dropletId });
      return mine;
    } catch (e) {
      this.state.lastError = `api: ${(e as Error).message}`;
      return true; // metadata said yes; an API hiccup is no reason to re-assign
    }
  }

  private async assign(signal: AbortSignal): Promise<boolean> {
    const started = this.now();
    this.state.assignInFlight = true;
    // Within a disagreement episode its one warning speaks for the re-assigns.
    const quiet = this.disagreement !== null;
    this.o.log[quiet ? "debug" : "info"]("assigning the reserved IP to this droplet", {
      ip: this.o.reservedIp,
      dropletId: this.o.dropletId,
      term: this.state.term,
    });
    try {
      const outcome = await this.o.api.assign(this.o.reservedIp, this.o.dropletId, {
        deadlineMs: this.o.assignDeadlineMs,
        signal,
        unserved: this.state.onSelf !== true,
      });
      const ms = Math.round(this.now() - started);
      const already = typeof outcome === "object" && outcome !== null && (outcome as { alreadyAssigned?: boolean }).alreadyAssigned === true;
      this.state.lastAssign = { outcome: already ? "already" : "success", ms, at: this.now() };
      this.o.onAssign?.(already ? "already" : "success", ms);
      this.o.log[quiet ? "debug" : "info"]("reserved IP is on this droplet", { ms, outcome: already ? "already" : "assigned" });
      this.failures = 0;
      this.state.lastError = null;
      this.assignedUnconfirmed = true;
      // While metadata disagrees, "on self" stays metadata's view (no flip and log per re-assign).
      if (!quiet) this.setOnSelf(true);
      return true;
    } catch (e) {
      const ms = Math.round(this.now() - started);
      const aborted = signal.aborted;
      const msg = (e as Error).message;
      this.state.lastAssign = { outcome: aborted ? "aborted" : "error", ms, at: this.now(), error: msg };
      this.o.onAssign?.(aborted ? "aborted" : "error", ms, msg);
      if (!aborted) {
        this.failures++;
        this.assignedUnconfirmed = false; // the API did not confirm this one: a plain retry, not a disagreement
        this.state.lastError = `assign: ${msg}`;
        this.o.log.error("assigning the reserved IP failed", { error: msg, ms, failures: this.failures });
      }
      return false;
    } finally {
      this.state.assignInFlight = false;
    }
  }
}
