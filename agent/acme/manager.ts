/**
 * Orders and renews the ACME certificates, on the leader only.
 *
 * Only the node that leads holds the Reserved IP, where the CA's validation requests arrive, so
 * only it orders: `setLeading(true)` when the controller starts asserting the IP, false when it
 * stops (its lease ended, it handed over, it shuts down). Then, every `checkIntervalMs`, it looks for
 * a certificate that is missing (HAProxy serves the stack's placeholder) or due (a third of its
 * lifetime left, `renewAtRemainingFraction`), and runs one ACME child for it (dist/fipd-acme.cjs,
 * agent/acme/child.ts): one at a time, since each costs ~30 MB.
 *
 * The child reports challenges; each token goes into the store (the responder serves it) and to
 * `onToken` (the peers get it, so a failover mid-validation still answers) before the child is told
 * to ask the CA to validate. The issued chain goes to the store, which checks it and writes it; the
 * install unit and the peers take it from there.
 *
 * Bounds: the child has per-request and per-step timeouts and is killed at `orderDeadlineMs`. A
 * failure waits `retryInitialMs` doubling to `retryMaxMs`, with jitter (so two certificates, or a
 * new leader and an old one, do not retry in step), and never less than the CA's Retry-After: after
 * `rateLimited`, no new order until it passes. When leadership ends the child is stopped at once;
 * the next leader starts again (its tokens and the chain reach it through the peers).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { AcmeConfig } from "../config.js";
import type { Logger } from "../log.js";
import { printable } from "../schema.js";
import { lineSplitter, MAX_OUTPUT_LINE_BYTES, parseLine, ChildLineSchema, type ChildLine, type OrderRequest } from "./protocol.js";
import type { AcmeStore, IssuedChain } from "./store.js";

/** Key, EAB and CA files are small; anything larger is not one. */
const MAX_KEY_FILE_BYTES = 64 * 1024;
/** How long a challenge token is served: an order's validation takes seconds to minutes. */
export const TOKEN_TTL_MS = 30 * 60_000;
/** The last bytes of the child's stderr kept for a failure's reason. */
const STDERR_TAIL_BYTES = 2048;

export type FailureKind = "rate_limited" | "unreachable" | "validation" | "deadline" | "rejected_chain" | "keys" | "child" | "other";

export interface AcmeCertificateStatus {
  name: string;
  state: "placeholder" | "valid" | "renewing" | "failing";
  notAfter: string | null;
  renewalDueAt: string | null;
  step: string | null;
  lastError: string | null;
  nextTryAt: string | null;
  /** The status line `fipd status` prints. */
  line: string;
}

export interface AcmeManagerDeps {
  config: AcmeConfig;
  store: AcmeStore;
  log: Logger;
  /** Wall-clock time (certificate validity is wall-clock). */
  nowMs(): number;
  /** The child's bundle (dist/fipd-acme.cjs beside fipd.cjs). */
  childPath: string;
  /** Node to run it with (default process.execPath). */
  nodePath?: string;
  /** Each challenge as fipd publishes it: the acmeshare hook sends it to the peers. */
  onToken?(token: string, keyAuthorization: string, expiresAtMs: number): void;
  /** Each failed order: metrics. */
  onFailure?(name: string, kind: FailureKind): void;
  /** Jitter source in [0, 1) (tests pin it). */
  random?(): number;
}

interface CertState {
  failures: number;
  nextTryAtMs: number;
  lastError: string | null;
  lastErrorAtMs: number | null;
  /** When this node first saw it missing: the renewal of a placeholder is due from then. */
  missingSinceMs: number;
}

interface Running {
  name: string;
  proc: ChildProcess;
  step: string;
  deadline: NodeJS.Timeout;
  done: boolean;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** Classifies a failure for the metric's `reason` label (few values, so few series). */
export function failureKind(reason: string, rateLimited: boolean): FailureKind {
  if (rateLimited) return "rate_limited";
  if (/ECONNREFUSED|ETIMEDOUT|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ECONNABORTED|timeout|socket hang up|certificate|directory/i.test(reason))
    return "unreachable";
  if (
    /\((unauthorized|connection|dns|incorrectResponse|caa|rejectedIdentifier|invalidContact|unsupportedContact|malformed)\)|invalid|Non-200 status code|acme-challenge/i.test(
      reason,
    )
  )
    return "validation";
  return "other";
}

export class AcmeManager {
  readonly #d: AcmeManagerDeps;
  #cfg: AcmeConfig;
  #leading = false;
  #timer: NodeJS.Timeout | null = null;
  #running: Running | null = null;
  #closed = false;
  readonly #state = new Map<string, CertState>();

  constructor(d: AcmeManagerDeps) {
    this.#d = d;
    this.#cfg = d.config;
    // A child must not outlive fipd (a fail-stop exits at once): its stdin closes too, but be sure.
    process.once("exit", () => this.#running?.proc.kill("SIGKILL"));
  }

  get leading(): boolean {
    return this.#leading;
  }

  /** From the controller: true while this node asserts the Reserved IP. */
  setLeading(leading: boolean): void {
    if (this.#closed || leading === this.#leading) return;
    this.#leading = leading;
    if (leading) {
      this.#d.log.info("leading: checking the ACME certificates", { certificates: this.#cfg.certificates.map((c) => c.name) });
      this.#schedule(0);
    } else {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = null;
      if (this.#running) this.#stopChild("leadership ended");
    }
  }

  /** A reloaded config: new certificates and timings take effect at the next check. */
  updateConfig(cfg: AcmeConfig): void {
    this.#cfg = cfg;
    if (this.#leading) this.#schedule(0);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#running) this.#stopChild("fipd stops");
  }

  /** When `chain` is due for renewal: when renewAtRemainingFraction of its lifetime remains. */
  renewalDueMs(chain: IssuedChain): number {
    return chain.notAfterMs - this.#cfg.renewAtRemainingFraction * (chain.notAfterMs - chain.notBeforeMs);
  }

  #stateOf(name: string): CertState {
    let s = this.#state.get(name);
    if (!s) {
      s = { failures: 0, nextTryAtMs: 0, lastError: null, lastErrorAtMs: null, missingSinceMs: this.#d.nowMs() };
      this.#state.set(name, s);
    }
    return s;
  }

  /** Per certificate: expiry and when renewal is due (a placeholder: since it was first seen missing), for the metrics. */
  timestamps(): { name: string; expiryS: number | null; renewalDueS: number; lastErrorS: number | null }[] {
    return this.#cfg.certificates.map((c) => {
      const chain = this.#d.store.chain(c.name);
      const s = this.#stateOf(c.name);
      return {
        name: c.name,
        expiryS: chain ? Math.floor(chain.notAfterMs / 1000) : null,
        renewalDueS: Math.floor((chain ? this.renewalDueMs(chain) : s.missingSinceMs) / 1000),
        lastErrorS: s.lastErrorAtMs === null ? null : Math.floor(s.lastErrorAtMs / 1000),
      };
    });
  }

  status(): AcmeCertificateStatus[] {
    const now = this.#d.nowMs();
    return this.#cfg.certificates.map((c) => {
      const chain = this.#d.store.chain(c.name);
      const s = this.#stateOf(c.name);
      const running = this.#running?.name === c.name ? this.#running : null;
      const due = chain ? this.renewalDueMs(chain) : null;
      const state: AcmeCertificateStatus["state"] = running ? "renewing" : s.lastError ? "failing" : chain ? "valid" : "placeholder";
      const serving = chain ? `valid until ${iso(chain.notAfterMs)} (renewal due ${iso(due!)})` : "placeholder (no certificate issued yet)";
      const next = s.nextTryAtMs > now ? iso(s.nextTryAtMs) : null;
      let line: string;
      if (running) line = `renewing (${running.step}); serving: ${serving}`;
      else if (s.lastError)
        line = `failing: ${s.lastError}; ${this.#leading ? `next try at ${next ?? "the next check"}` : "retried by the leader"}; serving: ${serving}`;
      else line = serving;
      return {
        name: c.name,
        state,
        notAfter: chain ? iso(chain.notAfterMs) : null,
        renewalDueAt: due === null ? null : iso(due),
        step: running?.step ?? null,
        lastError: s.lastError,
        nextTryAt: next,
        line: `${c.name}: ${line}`,
      };
    });
  }

  #schedule(delayMs: number): void {
    if (this.#closed || !this.#leading) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        this.#check();
      },
      Math.max(0, Math.min(delayMs, this.#cfg.checkIntervalMs)),
    );
  }

  /** Starts a child for the first certificate that is missing or due and not waiting out a failure. */
  #check(): void {
    if (this.#closed || !this.#leading) return;
    const now = this.#d.nowMs();
    let soonest = this.#cfg.checkIntervalMs;
    if (!this.#running) {
      for (const c of this.#cfg.certificates) {
        const s = this.#stateOf(c.name);
        const chain = this.#d.store.chain(c.name);
        const dueAt = chain ? this.renewalDueMs(chain) : now;
        const at = Math.max(dueAt, s.nextTryAtMs);
        if (at > now) {
          soonest = Math.min(soonest, at - now);
          continue;
        }
        this.#start(c.name);
        break;
      }
    }
    this.#schedule(soonest);
  }

  #readFile(path: string): string {
    const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error(`${path} is not a regular file`);
      if (st.size > MAX_KEY_FILE_BYTES) throw new Error(`${path} holds ${st.size} bytes, more than the ${MAX_KEY_FILE_BYTES} a key or CA file has`);
      return readFileSync(fd, "utf8");
    } finally {
      closeSync(fd);
    }
  }

  #orderFor(name: string): OrderRequest {
    const c = this.#cfg.certificates.find((x) => x.name === name)!;
    const dir = this.#cfg.keyDir;
    const read = (path: string, what: string) => {
      try {
        return this.#readFile(path);
      } catch (e) {
        // The message names the file and the errno; never the contents.
        throw new Error(`cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    };
    return {
      kind: "order",
      directoryUrl: c.directoryUrl,
      ...(c.directoryCaFile ? { directoryCaPem: read(c.directoryCaFile, "directory CA file") } : {}),
      email: c.email,
      ...(c.eabKid ? { eab: { kid: c.eabKid, hmacKey: read(join(dir, `${name}.eab`), "EAB key").trim() } } : {}),
      accountKeyPem: read(join(dir, `${name}.account.key`), "account key"),
      certificateKeyPem: read(join(dir, `${name}.key`), "certificate key"),
      domains: c.domains,
      requestTimeoutMs: this.#cfg.requestTimeoutMs,
      stepTimeoutMs: this.#cfg.stepTimeoutMs,
    };
  }

  #start(name: string): void {
    let order: OrderRequest;
    try {
      order = this.#orderFor(name);
    } catch (e) {
      this.#failed(name, (e as Error).message, { kind: "keys" });
      return;
    }
    const log = this.#d.log.child({ part: "acme", certificate: name });
    log.info("ordering a certificate", { domains: order.domains, directoryUrl: order.directoryUrl });
    const proc = spawn(this.#d.nodePath ?? process.execPath, [this.#d.childPath], { stdio: ["pipe", "pipe", "pipe"] });
    const run: Running = {
      name,
      proc,
      step: "starting",
      done: false,
      deadline: setTimeout(
        () =>
          this.#endRun(run, {
            kind: "deadline",
            reason: `the order took longer than acme.orderDeadlineMs (${this.#cfg.orderDeadlineMs} ms), at step ${run.step}`,
          }),
        this.#cfg.orderDeadlineMs,
      ),
    };
    this.#running = run;
    let stderr = "";
    proc.stderr!.on("data", (b: Buffer) => (stderr = (stderr + b.toString()).slice(-STDERR_TAIL_BYTES)));
    proc.stdin!.on("error", () => undefined); // the child may exit before reading all of it: its exit says why
    proc.on("error", (e) => this.#endRun(run, { kind: "child", reason: `cannot start the ACME child ${this.#d.childPath}: ${e.message}` }));
    proc.stdout!.on(
      "data",
      lineSplitter(
        MAX_OUTPUT_LINE_BYTES,
        (line) => this.#onLine(run, line, log),
        (bytes) => this.#endRun(run, { kind: "child", reason: `the ACME child wrote a line of ${bytes} bytes, more than ${MAX_OUTPUT_LINE_BYTES}` }),
      ),
    );
    proc.on("exit", (code, signal) => {
      const tail = printable(stderr.trim().split("\n").slice(-3).join(" | "), 300);
      this.#endRun(run, { kind: "child", reason: `the ACME child exited (${signal ?? `code ${code}`}) without a result${tail ? `: ${tail}` : ""}` });
    });
    proc.stdin!.write(JSON.stringify(order) + "\n");
  }

  #onLine(run: Running, line: string, log: Logger): void {
    if (run.done) return;
    let msg: ChildLine;
    try {
      msg = parseLine(ChildLineSchema, line, MAX_OUTPUT_LINE_BYTES, "ACME child output");
    } catch (e) {
      return this.#endRun(run, { kind: "child", reason: (e as Error).message });
    }
    switch (msg.kind) {
      case "step":
        run.step = msg.step;
        log.debug("order step", { step: msg.step });
        return;
      case "challenge": {
        const expiresAtMs = this.#d.nowMs() + TOKEN_TTL_MS;
        this.#d.store.putToken(msg.token, msg.keyAuthorization, expiresAtMs);
        this.#d.onToken?.(msg.token, msg.keyAuthorization, expiresAtMs);
        log.info("challenge published", { domain: msg.domain, token: msg.token });
        run.proc.stdin!.write(JSON.stringify({ kind: "published", token: msg.token }) + "\n");
        return;
      }
      case "issued": {
        const r = this.#d.store.offer(run.name, msg.pem, "acme");
        if (r.accepted) {
          const chain = this.#d.store.chain(run.name)!;
          log.info("certificate issued", { notAfter: iso(chain.notAfterMs), sha256: chain.sha256 });
          this.#endRun(run, null);
        } else this.#endRun(run, { kind: "rejected_chain", reason: `the CA's chain was refused: ${r.reason}` });
        return;
      }
      case "error":
        return this.#endRun(run, {
          kind: failureKind(msg.reason, !!msg.rateLimited),
          reason: msg.reason,
          retryAfterS: msg.retryAfterS,
          rateLimited: msg.rateLimited,
        });
    }
  }

  /** The one end of a run: success (null) or a failure; stops the child if it still runs. */
  #endRun(run: Running, failure: { kind: FailureKind; reason: string; retryAfterS?: number; rateLimited?: boolean } | null): void {
    if (run.done) return;
    run.done = true;
    clearTimeout(run.deadline);
    if (this.#running === run) this.#running = null;
    if (run.proc.exitCode === null && run.proc.signalCode === null) {
      run.proc.stdin!.end();
      run.proc.kill(failure ? "SIGKILL" : "SIGTERM");
    }
    if (failure) this.#failed(run.name, failure.reason, failure);
    else {
      const s = this.#stateOf(run.name);
      Object.assign(s, { failures: 0, nextTryAtMs: 0, lastError: null });
    }
    this.#schedule(0);
  }

  #stopChild(why: string): void {
    const run = this.#running!;
    run.done = true;
    clearTimeout(run.deadline);
    this.#running = null;
    run.proc.stdin!.end();
    run.proc.kill("SIGTERM");
    this.#d.log.info("ACME order stopped", { certificate: run.name, step: run.step, why });
  }

  #failed(name: string, reason: string, f: { kind: FailureKind; retryAfterS?: number; rateLimited?: boolean }): void {
    const s = this.#stateOf(name);
    const now = this.#d.nowMs();
    s.failures++;
    const base = Math.min(this.#cfg.retryMaxMs, this.#cfg.retryInitialMs * 2 ** Math.min(s.failures - 1, 30));
    // Equal jitter: half fixed, half random, so retries spread but never come early.
    let waitMs = Math.round(base / 2 + ((this.#d.random ?? Math.random)() * base) / 2);
    if (f.retryAfterS !== undefined) waitMs = Math.max(waitMs, f.retryAfterS * 1000);
    s.nextTryAtMs = now + waitMs;
    s.lastError = printable(reason, 400);
    s.lastErrorAtMs = now;
    this.#d.onFailure?.(name, f.kind);
    this.#d.log.warn("ACME order failed", {
      certificate: name,
      reason: s.lastError,
      kind: f.kind,
      failures: s.failures,
      nextTryAt: iso(s.nextTryAtMs),
      ...(f.rateLimited ? { rateLimited: true, retryAfterS: f.retryAfterS ?? null } : {}),
    });
  }
}
