/**
 * The controller: the imperative shell around the pure election core.
 *
 * It owns every side effect the core must not have: the clock and the single wake-up timer, the
 * peer transport, the local health checks, the IP keeper (API + metadata), config reloads, the
 * control socket and metrics. Every input becomes an `ElectionEvent`; every output is carried out
 * here. Nothing in this file decides who leads.
 */
import { createElectionNode } from "./election/index.js";
import { majorityOf } from "./election/quorum.js";
import { isEligible } from "./election/rank.js";
import type { ElectionConfig, ElectionEffect, ElectionEvent, ElectionNode, ElectionSnapshot, PeerMessage } from "./election/types.js";
import { publicKeysOf, type AgentConfig, type Member } from "./config.js";
import type { Logger } from "./log.js";
import type { FipdMetrics } from "./metrics.js";
import { nextBoot, type DurableStore } from "./durable-state.js";
import { IpKeeper, type MetadataReader, type ReservedIpApi } from "./ip-keeper.js";
import { membershipRefusal } from "./membership.js";
import { stepAndCarryOut } from "./shell.js";

/** What the controller needs from the outside world; production and tests supply their own. */
export interface ControllerDeps {
  log: Logger;
  metrics: FipdMetrics;
  now(): number;
  /** `boot`: this start's boot counter, on disk already; the transport's boot id (agent/transport.ts). */
  startTransport(cfg: AgentConfig, onMessage: (from: string, msg: PeerMessage) => void, boot: number): Promise<TransportLike>;
  /** LB nodes only: starts the local HAProxy checks; calls back on every verdict change. */
  startHealth?(cfg: AgentConfig, onChange: (healthy: boolean, detail: string) => void): HealthLike;
  /** LB nodes only. */
  metadata?: MetadataReader;
  api?: ReservedIpApi;
  dropletId?: number;
  /** The running bundle's build id (first 16 hex digits of its SHA-256), told to peers. */
  build?: string;
  /** Stable storage for the election's term and vote and the boot counter (absent: memory only, as in unit tests). */
  durable?: DurableStore;
  /**
   * Fail-stop: an exception in the core, a failed durable write or a broken assertion. Production
   * writes one `crit` line and exits with status 70 (systemd restarts the unit); tests record it.
   */
  fatal(message: string, fields: Record<string, unknown>): void;
  /**
   * Re-read config, token and keys from disk (SIGHUP). Throws ConfigError/SecretFileError on bad
   * input. Nothing takes effect until `commit`, which the controller calls once it accepts the config.
   */
  reload?(): Promise<{ config: AgentConfig; commit(): void }>;
  /** Told when this node starts (true) and stops (false) asserting the reserved IP: the ACME orders run only meanwhile. */
  onAsserting?(asserting: boolean): void;
}

export interface TransportLike {
  send(to: string, msg: PeerMessage): void;
  updateMembers(members: Array<{ id: string; address: string; port: number; publicKey: string; previousPublicKey?: string }>): void;
  close(): Promise<void> | void;
}
export interface HealthLike {
  stop(): void;
}

/** How often the peer gauges (loss, reachability, switch and fallback state) are recomputed: a loss ratio needs a window of heartbeats. */
export const PEER_GAUGE_WINDOW_MS = 5_000;

export const electionConfigOf = (c: AgentConfig): ElectionConfig => ({
  nodeId: c.nodeId,
  membershipVersion: c.membershipVersion,
  members: c.members,
  activeColor: c.activeColor,
  timing: c.failover,
});

/** A member's public keys as the transport takes them. */
export const keysOf = (k: { publicKey: string; previousPublicKey?: string }) => ({
  publicKey: k.publicKey,
  ...(k.previousPublicKey ? { previousPublicKey: k.previousPublicKey } : {}),
});
const peersOf = (c: AgentConfig) =>
  c.members.filter((m) => m.id !== c.nodeId).map((m) => ({ id: m.id, address: m.address, port: m.port, ...keysOf(publicKeysOf(c, m.id)) }));

export interface StatusReport {
  node: string;
  role: string;
  term: number;
  leader: string | null;
  asserting: boolean;
  leaseValidForMs: number | null;
  healthy: boolean;
  maintenance: boolean;
  colorInForce: string;
  requestedColor: string;
  pendingSwitch: string | null;
  /** Non-null while the tier serves from a color fallback (failover.colorFallback): which color, for how long, why. */
  colorFallback: { color: string; requested: string; forMs: number; reason: string } | null;
  membershipVersion: number;
  jointOldMembers: string[] | null;
  majorityReachable: boolean;
  members: Array<{
    id: string;
    role: string;
    color: string | null;
    self: boolean;
    reachable: boolean;
    lastHeardMsAgo: number | null;
    healthy: boolean | null;
    eligible: boolean | null;
    holdsReservedIp: boolean | null;
    /** The bundle the member runs (from its messages), e.g. to follow a rolling upgrade. */
    build: string | null;
    rttMs: number | null;
  }>;
  reservedIp: { address: string | null; onThisDroplet: boolean | null; holder: string | null; holderIsLeader: boolean } | null;
  ipKeeper: ReturnType<IpKeeper["snapshot"]> | null;
  shuttingDown: boolean;
  uptimeS: number;
  /** The bundle this agent runs (first 16 hex digits of its SHA-256), or null if unknown. */
  build: string | null;
}

export class Controller {
  private node!: ElectionNode;
  private transport!: TransportLike;
  private health: HealthLike | null = null;
  private keeper: IpKeeper | null = null;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private healthy = false;
  private lastRole = "";
  private lastLeader: string | null = null;
  private readonly startedAt: number;
  private shuttingDown = false;
  private readonly rtt = new Map<string, number>();
  private readonly heard = new Map<string, number>();
  private lossWindowStart: number;
  private closed = false;
  /** When an ignored echo was last logged, per problem (`onEchoIgnored`). */
  private readonly echoWarnedAt = new Map<string, number>();

  constructor(
    private cfg: AgentConfig,
    private readonly d: ControllerDeps,
  ) {
    this.startedAt = d.now();
    this.lossWindowStart = this.startedAt;
  }

  get config(): AgentConfig {
    return this.cfg;
  }

  private get self(): Member {
    return this.cfg.members.find((m) => m.id === this.cfg.nodeId)!;
  }

  async start(): Promise<void> {
    const now = this.d.now();
    const durable = this.d.durable?.load() ?? null;
    if (durable) this.d.log.info("resuming from the persisted election state", { term: durable.term, votedFor: durable.votedFor });
    this.node = createElectionNode(electionConfigOf(this.cfg), now, { durable });
    // The boot counter reaches the disk before the transport exists, so before any datagram leaves; a
    // failed write ends the start (fail-stop). Memory only (unit tests): the wall clock's floor.
    let boot: number;
    try {
      boot = this.d.durable ? this.d.durable.beginBoot() : nextBoot(null, Date.now());
    } catch (e) {
      this.failStop(e, "start");
      return;
    }
    this.transport = await this.d.startTransport(this.cfg, (from, msg) => this.onPeerMessage(from, msg), boot);
    if (this.self.role === "lb") {
      if (!this.d.metadata || !this.d.api || this.d.dropletId === undefined || !this.cfg.reservedIp) {
        throw new Error("an LB node needs the metadata service, the API client, its droplet ID and the reserved IP");
      }
      this.keeper = new IpKeeper({
        reservedIp: this.cfg.reservedIp,
        dropletId: this.d.dropletId,
        metadata: this.d.metadata,
        api: this.d.api,
        log: this.d.log.child({ part: "ip" }),
        checkIntervalMs: this.cfg.metadata.checkIntervalMs,
        verifyIntervalMs: this.cfg.api.verifyIntervalMs,
        assignDeadlineMs: this.cfg.api.assignDeadlineMs,
        now: this.d.now,
        onHolderChange: (onSelf) => {
          this.d.metrics.reservedIpOnSelf.set(onSelf ? 1 : 0);
          this.d.log.info(onSelf ? "reserved IP is now on this droplet" : "reserved IP is not on this droplet", { ip: this.cfg.reservedIp });
        },
        onAssign: (outcome) => this.d.metrics.assigns.inc({ outcome }),
        onMetadataDisagreement: () => this.d.metrics.metadataDisagreements.inc(),
      });
      this.keeper.watch();
      this.health =
        this.d.startHealth?.(this.cfg, (healthy, detail) => {
          this.healthy = healthy;
          this.d.metrics.healthUp.set(healthy ? 1 : 0);
          this.d.log.info(healthy ? "local HAProxy is healthy" : "local HAProxy is unhealthy", { detail });
          this.feed({ type: "health", now: this.d.now(), healthy });
        }) ?? null;
    }
    if (this.cfg.maintenance) this.feed({ type: "maintenance", now: this.d.now(), on: true });
    this.feed({ type: "tick", now: this.d.now() });
    this.d.log.info("fipd started", { role: this.self.role, color: this.self.color ?? null, members: this.cfg.members.map((m) => m.id), boot });
  }

  /**
   * Step the core with one event and carry out what it says, through the one shell (agent/shell.ts)
   * that the simulator runs too. Anything that throws here (the core, a durable write, an assertion)
   * ends the process: running on with half-updated state is what lets a node assert the IP without a
   * lease, or vote twice in a term. systemd restarts it, and the boot quiet period makes that safe.
   */
  feed(ev: ElectionEvent): void {
    if (this.closed) return;
    try {
      stepAndCarryOut(this.node, ev, {
        durable: this.d.durable,
        transport: this.transport,
        keeper: this.keeper,
        build: this.d.build,
        schedule: (wakeAt) => this.schedule(wakeAt),
        hooks: {
          startAsserting: (term) => {
            this.d.log.info("leading: asserting the reserved IP", { term });
            this.d.metrics.asserting.set(1);
            this.d.onAsserting?.(true);
          },
          stopAsserting: (term, reason) => {
            this.d.log.info("no longer asserting the reserved IP", { term, reason });
            this.d.metrics.asserting.set(0);
            this.d.onAsserting?.(false);
          },
          roleChanged: (eff) => this.onRoleChanged(eff.role, eff.term, eff.leader, eff.reason),
          echoIgnored: (eff) => this.onEchoIgnored(eff),
        },
      });
    } catch (e) {
      this.failStop(e, ev.type);
    }
  }

  /** Stop everything this process does, then hand over to `fatal`, which ends it. */
  private failStop(e: unknown, event: string): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    // Stop pulling the IP at once: nothing after this point may act on the broken state.
    this.keeper?.close();
    this.health?.stop();
    const err = e instanceof Error ? e : new Error(String(e));
    this.d.fatal(`fipd stops: ${err.message}`, { event, error: err.name, stack: err.stack });
  }

  private onRoleChanged(role: string, term: number, leader: string | null, reason: string): void {
    if (role !== this.lastRole) {
      if (this.lastRole) this.d.metrics.role.set({ role: this.lastRole }, 0);
      this.d.metrics.role.set({ role }, 1);
      this.lastRole = role;
    }
    this.d.metrics.term.set(term);
    this.d.metrics.isLeader.set(role === "leader" ? 1 : 0);
    if (leader !== this.lastLeader) {
      this.d.metrics.leaderChanges.inc();
      this.lastLeader = leader;
    }
    this.d.log.info("role changed", { role, term, leader, reason });
  }

  /**
   * A peer's acknowledgement or vote echoed a send time this node never sent; the core ignored it.
   * Counted with the transport's dropped packets; logged at most once per problem every 10 s, so a
   * misbehaving peer does not flood the journal.
   */
  private onEchoIgnored(eff: Extract<ElectionEffect, { type: "echo-ignored" }>): void {
    const reason = `echo-${eff.problem}`;
    this.d.metrics.peerDropped.inc({ reason });
    const now = this.d.now();
    if ((this.echoWarnedAt.get(reason) ?? -Infinity) + 10_000 <= now) {
      this.echoWarnedAt.set(reason, now);
      this.d.log.warn("ignored a peer message that echoes a send time this node never sent", { from: eff.from, kind: eff.kind, reason: eff.reason });
    }
  }

  private schedule(wakeAt: number): void {
    if (this.closed) return;
    if (this.timer && wakeAt >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = wakeAt;
    const delay = Math.max(0, Math.min(wakeAt - this.d.now(), 60_000));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.feed({ type: "tick", now: this.d.now() });
      if (!this.closed) this.updatePeerGauges(); // not after a fail-stop: the state may be half-updated
    }, delay);
  }

  private onPeerMessage(from: string, msg: PeerMessage): void {
    const now = this.d.now();
    this.heard.set(from, (this.heard.get(from) ?? 0) + (msg.kind === "heartbeat" ? 1 : 0));
    if (msg.kind === "heartbeat-ack") this.rtt.set(from, now - msg.echoSentAt);
    this.feed({ type: "message", now, message: msg });
  }

  /** Every few seconds: RTT, loss (heartbeats received vs expected), reachability, switch state. */
  private updatePeerGauges(): void {
    const now = this.d.now();
    const windowMs = now - this.lossWindowStart;
    if (windowMs < PEER_GAUGE_WINDOW_MS) return;
    const expected = windowMs / this.cfg.failover.heartbeatIntervalMs;
    const snap = this.node.snapshot(now);
    for (const m of snap.members) {
      if (m.id === this.cfg.nodeId) continue;
      const got = this.heard.get(m.id) ?? 0;
      this.d.metrics.peerLoss.set({ peer: m.id }, Math.max(0, Math.min(1, 1 - got / expected)));
      this.d.metrics.peerReachable.set({ peer: m.id }, m.reachable ? 1 : 0);
      const r = this.rtt.get(m.id);
      if (r !== undefined) this.d.metrics.peerRtt.set({ peer: m.id }, r / 1000);
      const member = this.cfg.members.find((x) => x.id === m.id);
      if (member?.role === "witness") this.d.metrics.witnessReachable.set(m.reachable ? 1 : 0);
    }
    this.d.metrics.colorSwitchPending.reset();
    if (snap.pendingSwitchReason) this.d.metrics.colorSwitchPending.set({ requested: snap.requestedColor }, 1);
    this.d.metrics.colorFallback.reset();
    if (snap.colorFallback) this.d.metrics.colorFallback.set({ color: snap.colorFallback.color, requested: snap.colorFallback.requested }, 1);
    const holder = this.status().reservedIp?.holderIsLeader;
    if (holder !== undefined) this.d.metrics.reservedIpHolderIsLeader.set(holder ? 1 : 0);
    this.heard.clear();
    this.lossWindowStart = now;
  }

  snapshot(): ElectionSnapshot {
    return this.node.snapshot(this.d.now());
  }

  status(): StatusReport {
    const now = this.d.now();
    const s = this.node.snapshot(now);
    const keeper = this.keeper?.snapshot() ?? null;
    const members = this.cfg.members.map((m) => {
      const seen = s.members.find((x) => x.id === m.id);
      const self = m.id === this.cfg.nodeId;
      return {
        id: m.id,
        role: m.role,
        color: m.color ?? null,
        self,
        reachable: self ? true : (seen?.reachable ?? false),
        lastHeardMsAgo: self ? 0 : seen?.lastHeardAt != null ? Math.round(now - seen.lastHeardAt) : null,
        healthy: self ? (m.role === "lb" ? this.healthy : null) : (seen?.status?.healthy ?? null),
        eligible: self ? isEligible(m, this.healthy, s.maintenance) : (seen?.status?.eligible ?? null),
        holdsReservedIp: self ? (keeper?.onSelf ?? null) : (seen?.status?.holdsReservedIp ?? null),
        build: self ? (this.d.build ?? null) : (seen?.status?.build ?? null),
        rttMs: self ? null : this.rtt.has(m.id) ? Math.round(this.rtt.get(m.id)! * 10) / 10 : null,
      };
    });
    const holder = members.find((m) => m.holdsReservedIp === true && (m.self || m.reachable))?.id ?? null;
    const reachable = members.filter((m) => m.reachable).length;
    return {
      node: this.cfg.nodeId,
      role: s.role,
      term: s.term,
      leader: s.leader,
      asserting: s.asserting,
      leaseValidForMs: s.leaseValidUntil !== null ? Math.max(0, Math.round(s.leaseValidUntil - now)) : null,
      healthy: this.self.role === "lb" ? this.healthy : true,
      maintenance: s.maintenance,
      colorInForce: s.colorInForce,
      requestedColor: s.requestedColor,
      pendingSwitch: s.pendingSwitchReason,
      colorFallback: s.colorFallback
        ? { color: s.colorFallback.color, requested: s.colorFallback.requested, forMs: Math.round(now - s.colorFallback.since), reason: s.colorFallback.reason }
        : null,
      membershipVersion: s.membershipVersion,
      jointOldMembers: s.jointOldMembers,
      majorityReachable: reachable >= majorityOf(this.cfg.members.length),
      members,
      reservedIp: this.cfg.reservedIp
        ? { address: this.cfg.reservedIp, onThisDroplet: keeper?.onSelf ?? null, holder, holderIsLeader: holder !== null && holder === s.leader }
        : null,
      ipKeeper: keeper,
      shuttingDown: this.shuttingDown,
      uptimeS: Math.round((now - this.startedAt) / 1000),
      build: this.d.build ?? null,
    };
  }

  handover(to: string | undefined, reason: string, preferBuild?: string): void {
    this.feed({ type: "handover", now: this.d.now(), to, preferBuild, reason });
  }

  setMaintenance(on: boolean): void {
    this.feed({ type: "maintenance", now: this.d.now(), on });
  }

  /** SIGHUP: new config, token and keys; the IP is not dropped. A bad file changes nothing. */
  async reload(): Promise<{ ok: true } | { ok: false; error: string }> {
    if (!this.d.reload) return { ok: false, error: "reload is not supported in this mode" };
    try {
      const { config: next, commit } = await this.d.reload();
      if (next.nodeId !== this.cfg.nodeId) throw new Error(`nodeId changed from ${this.cfg.nodeId} to ${next.nodeId}; restart fipd to change identity`);
      if (next.reservedIp !== this.cfg.reservedIp)
        throw new Error(`reservedIp changed from ${this.cfg.reservedIp} to ${next.reservedIp}; restart fipd to serve another address`);
      const refused = membershipRefusal(
        { version: next.membershipVersion, memberIds: next.members.map((m) => m.id) },
        { version: this.cfg.membershipVersion, memberIds: this.cfg.members.map((m) => m.id) },
        "this agent's running",
      );
      if (refused) throw new Error(refused);
      commit();
      this.cfg = next;
      this.transport.updateMembers(peersOf(next));
      this.feed({ type: "config", now: this.d.now(), config: electionConfigOf(next) });
      this.d.metrics.configReloads.inc({ result: "success" });
      this.d.log.info("configuration reloaded", { membershipVersion: next.membershipVersion, activeColor: next.activeColor });
      return { ok: true };
    } catch (e) {
      this.d.metrics.configReloads.inc({ result: "error" });
      this.d.log.error("configuration reload failed; keeping the running configuration", { error: (e as Error).message });
      return { ok: false, error: (e as Error).message };
    }
  }

  /**
   * SIGTERM: leave cleanly. Become ineligible, hand over if leading, and keep HAProxy serving and
   * the transport running until another droplet holds the IP (or `deadlineMs` passes), so clients
   * see no gap.
   */
  async shutdown(reason: string, deadlineMs = 10_000): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const wasLeading = this.node.snapshot(this.d.now()).role === "leader";
    this.d.log.info("shutting down", { reason, leading: wasLeading });
    this.feed({ type: "maintenance", now: this.d.now(), on: true });
    this.feed({ type: "handover", now: this.d.now(), reason });
    if (this.keeper && (wasLeading || this.keeper.snapshot().onSelf)) {
      const until = this.d.now() + deadlineMs;
      while (this.d.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
        const st = this.status();
        const onSelf = await this.keeper.refresh();
        if (onSelf === false && st.leader && st.leader !== this.cfg.nodeId) break;
      }
      const moved = this.keeper.snapshot().onSelf === false;
      this.d.log[moved ? "info" : "warn"](moved ? "handover complete: the reserved IP has left this droplet" : "handover deadline passed; leaving anyway", {
        deadlineMs,
      });
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.keeper?.close();
    this.health?.stop();
    await this.transport?.close();
  }
}
