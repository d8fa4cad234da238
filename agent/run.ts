/**
 * `fipd run`: build the production dependencies from the config file and start the controller.
 * Refuses to start (exit 2) on a bad config, a missing or too-open token or key file.
 */
import { fileDurableStore } from "./durable-state.js";
import { ConfigError, publicKeysOf, type AgentConfig } from "./config.js";
import { loadAgentConfigFile } from "./config-file.js";
import { Controller, keysOf, type ControllerDeps } from "./controller.js";
import { createLogger, type Logger } from "./log.js";
import { restartPendingKeys } from "./reload-keys.js";
import { createMetrics, startMetricsServer } from "./metrics.js";
import { readIdentityKeys, readSecretFile, redactDeep, redactErrors } from "./secrets.js";
import { createPeerTransport } from "./transport.js";
import { createHealthChecker, type HealthChecker } from "./health.js";
import { createMetadataClient } from "./metadata.js";
import { createReservedIpClient } from "./do-client.js";
import { buildId } from "./build-id.js";
import { createControlServer } from "./control.js";
import { lbPeers, memberIdentities, startAcme, type AcmeRuntime } from "./acme/runtime.js";
import { ACME_TOKEN_SENDS, broadcastToken, receiveToken, type ChallengeToken } from "./acme/tokens.js";
import { identityExchangeAuth, startChainExchange } from "./acme/exchange.js";
import type { SideMessage } from "./messages.js";
import { createHash } from "node:crypto";
import { readFileSync, realpathSync, statSync } from "node:fs";
import { dirname } from "node:path";

/**
 * This process's build id: the hash of the script node runs (the deployed bundle, through the
 * fipd.cjs symlink), the same digits the stack puts in the bundle's file name. Null when unreadable.
 */
export function runningBuild(script = process.argv[1]): string | null {
  try {
    return buildId(
      createHash("sha256")
        .update(readFileSync(realpathSync(script)))
        .digest("hex"),
    );
  } catch {
    return null;
  }
}

/** Between the sends of one ACME challenge token. */
const ACME_TOKEN_REPEAT_MS = 400;

interface Secrets {
  token: string | null;
  keys: ReturnType<typeof readIdentityKeys>;
}

function readSecrets(cfg: AgentConfig): Secrets {
  const self = cfg.members.find((m) => m.id === cfg.nodeId)!;
  return {
    keys: readIdentityKeys(cfg),
    token: self.role === "lb" ? readSecretFile(cfg.api.tokenFile, "token") : null,
  };
}

/**
 * How the files fipd loads at start look (inode, size, modification and change times; for the
 * config's directory too, since apply-config installs by rename). apply-config asks a running agent
 * to reload; an agent still starting has no control socket yet, so it is told nothing, though it
 * may have read the old files. Once its socket is up, fipd compares and reloads if anything changed.
 */
function fileStamps(paths: readonly string[]): string {
  return paths
    .map((p) => {
      try {
        const st = statSync(p);
        return `${p} ${st.ino} ${st.size} ${st.mtimeMs} ${st.ctimeMs}`;
      } catch {
        return `${p} absent`;
      }
    })
    .join("\n");
}

/** The secret files `readSecrets` reads for `cfg`. */
const secretPaths = (cfg: AgentConfig): string[] => [
  ...(cfg.members.find((m) => m.id === cfg.nodeId)?.role === "lb" ? [cfg.api.tokenFile] : []),
  cfg.peerAuth.keyFile,
  ...(cfg.peerAuth.previousKeyFile ? [cfg.peerAuth.previousKeyFile] : []),
];

/** The droplet ID from config or the metadata service; retried, because at boot the network may lag. */
async function resolveDropletId(cfg: AgentConfig, metadata: ReturnType<typeof createMetadataClient>, log: Logger): Promise<number> {
  if (cfg.dropletId !== undefined) return cfg.dropletId;
  for (let attempt = 1; ; attempt++) {
    try {
      return await metadata.dropletId();
    } catch (e) {
      if (attempt >= 30) throw new Error(`cannot read the droplet ID from the metadata service at ${cfg.metadata.baseUrl}: ${(e as Error).message}`);
      log.warn("metadata service not answering yet; retrying", { attempt, error: (e as Error).message });
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

export async function runAgent(configPath: string): Promise<number> {
  let cfg: AgentConfig;
  let secrets: Secrets;
  // Taken before the reads: a change while they run shows as a difference later (and costs one reload at most).
  const configFiles = [dirname(configPath), configPath];
  let stampsAtLoad = fileStamps(configFiles);
  try {
    cfg = loadAgentConfigFile(configPath);
    stampsAtLoad += "\n" + fileStamps(secretPaths(cfg));
    secrets = readSecrets(cfg);
  } catch (e) {
    process.stderr.write(`fipd: refusing to start: ${(e as Error).message}\n`);
    return 2;
  }
  const log = createLogger({ level: cfg.logLevel, nodeId: cfg.nodeId });
  // The directory in force (a reload may move it); read at scrape time, once the controller exists.
  const metrics = createMetrics({ certificateDir: () => controller.config.metrics.certificateDir, acme: () => acme?.manager.timestamps() ?? [] });
  /** Automatic HTTPS (agent/acme): LBs with an `acme` section; started before the controller, which tells it when this node leads. */
  let acme: AcmeRuntime | null = null;
  const self = cfg.members.find((m) => m.id === cfg.nodeId)!;
  let token = secrets.token;
  let keys = secrets.keys;

  const metadata = createMetadataClient({ baseUrl: cfg.metadata.baseUrl, timeoutMs: cfg.metadata.requestTimeoutMs });
  const unredactedApi = createReservedIpClient({
    baseUrl: cfg.api.baseUrl,
    getToken: () => {
      if (!token) throw new Error("no API token loaded");
      return token;
    },
    requestTimeoutMs: cfg.api.requestTimeoutMs,
    onRequest: (info) => {
      metrics.apiRequests.inc({ method: info.method, route: info.route, status: String(info.status) });
      metrics.apiLatency.observe({ route: info.route }, info.ms / 1000);
      if (info.status === 429) metrics.apiRateLimited.inc();
    },
  });
  // An error that quotes a request (fetch quotes a bad header whole) must not carry the token into
  // logs or `fipd status`: every error out of the API client is redacted here, where the token is known.
  const api = redactErrors(unredactedApi, () => [token]);

  let transportRef: Awaited<ReturnType<typeof createPeerTransport>> | null = null;
  let health: HealthChecker | null = null;
  let healthOnChange: ((healthy: boolean, detail: string) => void) | null = null;
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | null = null;
  const deps: ControllerDeps = {
    log,
    metrics,
    now: () => performance.now(),
    build: runningBuild() ?? undefined,
    onAsserting: (asserting) => acme?.manager.setLeading(asserting),
    durable: fileDurableStore(cfg.stateFile, (message) => log.error("election state file", { error: message })),
    fatal: (message, fields) => {
      // EX_SOFTWARE. One line, then out: systemd restarts the unit, and the boot quiet period keeps
      // the restarted process from backing anyone its predecessor may have promised.
      log.crit(message, fields);
      process.exit(70);
    },
    startTransport: async (c, onMessage, boot) => {
      transportRef = await createPeerTransport({
        boot,
        selfId: c.nodeId,
        listenAddress: c.listen.address,
        listenPort: c.listen.port,
        members: c.members.filter((m) => m.id !== c.nodeId).map((m) => ({ id: m.id, address: m.address, port: m.port, ...keysOf(publicKeysOf(c, m.id)) })),
        keys,
        onMessage: (from, msg) => onMessage(from, msg),
        onSideMessage: (from, msg) => onSideMessage(from, msg),
        log: log.child({ part: "transport" }),
        metrics,
      });
      return transportRef;
    },
    reload: () => {
      const next = loadAgentConfigFile(configPath);
      const s = readSecrets(next);
      return Promise.resolve({
        config: next,
        // The new token and keys take effect only once the controller accepts the config too.
        commit: () => {
          token = s.token;
          keys = s.keys;
          transportRef?.updateKeys(keys);
        },
      });
    },
  };
  if (self.role === "lb") {
    let dropletId: number;
    try {
      dropletId = await resolveDropletId(cfg, metadata, log);
    } catch (e) {
      log.error("refusing to start", { error: (e as Error).message });
      return 2;
    }
    Object.assign(deps, {
      metadata,
      api,
      dropletId,
      startHealth: (c: AgentConfig, onChange: (healthy: boolean, detail: string) => void) => {
        healthOnChange = onChange;
        health = createHealthChecker({ ...c.health, onChange });
        health.start();
        // The controller stops whichever poller runs by then (a reload may have replaced it).
        return { stop: () => health?.stop() };
      },
    });
  }

  const controller = new Controller(cfg, deps);
  const closers: Array<() => Promise<void> | void> = [];

  /**
   * ACME challenge tokens between LBs (agent/acme/tokens.ts): the leader sends each one to every LB
   * peer, so a failover in the middle of a validation still answers the CA. A datagram may be lost,
   * so each goes ACME_TOKEN_SENDS times, spread over about a second (putToken is idempotent).
   */
  const tokenRepeats = new Set<NodeJS.Timeout>();
  const sendToken = (t: ChallengeToken) => {
    for (let i = 0; i < ACME_TOKEN_SENDS; i++) {
      const timer = setTimeout(() => {
        tokenRepeats.delete(timer);
        const c = controller.config;
        broadcastToken(
          (to, msg) => transportRef?.send(to, msg),
          lbPeers(c).map((m) => m.id),
          t,
          c.nodeId,
        );
      }, i * ACME_TOKEN_REPEAT_MS);
      timer.unref();
      tokenRepeats.add(timer);
    }
  };
  closers.push(() => tokenRepeats.forEach((t) => clearTimeout(t)));
  function onSideMessage(from: string, msg: SideMessage): void {
    // Only an LB orders, so only an LB's token is taken: a witness key, on the public internet, cannot plant one.
    const sender = controller.config.members.find((m) => m.id === from);
    if (!acme || sender?.role !== "lb") {
      log.warn("dropped an ACME token", { from, reason: acme ? "the sender is not a load balancer" : "this node has no acme section" });
      return;
    }
    const r = receiveToken(acme.store, msg, Date.now());
    if (!r.accepted) log.warn("dropped an ACME token", { from, reason: r.reason });
  }

  /**
   * The metrics listener moved to `next`: the new address is bound before the old one is let go,
   * except where the two share a port (127.0.0.1 to 0.0.0.0, which the stack does), which only one
   * socket may hold. If the new one cannot be bound, the old one is bound again. Null, or the reason.
   */
  const rebindMetrics = async (prev: AgentConfig["metrics"], next: AgentConfig["metrics"]): Promise<string | null> => {
    const old = metricsServer;
    if (!next.enabled) {
      metricsServer = null;
      await old?.close();
      return null;
    }
    const bind = () => startMetricsServer(metrics, { address: next.address, port: next.port });
    try {
      metricsServer = await bind();
      await old?.close();
      return null;
    } catch (e) {
      if (!old || (e as NodeJS.ErrnoException).code !== "EADDRINUSE" || prev.port !== next.port) {
        return `cannot listen on ${next.address}:${next.port} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
      }
    }
    await old.close();
    try {
      metricsServer = await bind();
      return null;
    } catch (e) {
      metricsServer = await startMetricsServer(metrics, { address: prev.address, port: prev.port }).catch(() => null);
      return `cannot listen on ${next.address}:${next.port} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})${metricsServer ? "" : "; the previous address could not be bound again either"}`;
    }
  };

  /** Keys changed since start that only a restart applies (reload-keys.ts); `fipd status` shows them. */
  let restartPending: string[] = [];
  /**
   * SIGHUP and `fipd reload`: the controller takes the config (or refuses it, changing nothing);
   * then what lives here follows: log level, maintenance, health poller, metrics listener. The
   * answer lists the keys that wait for a restart.
   */
  let reloading: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<{ ok: true; restartPending: string[] } | { ok: false; error: string }> => {
    const run = reloading.then(async () => {
      const prev = controller.config;
      const r = await controller.reload();
      if (!r.ok) return r;
      const next = controller.config;
      log.setLevel(next.logLevel);
      if (next.maintenance !== prev.maintenance) controller.setMaintenance(next.maintenance);
      if (health && healthOnChange && JSON.stringify(next.health) !== JSON.stringify(prev.health)) {
        health.stop();
        health = createHealthChecker({ ...next.health, onChange: healthOnChange });
        health.start();
      }
      if (acme && next.acme) acme.updateConfig(next.acme);
      restartPending = restartPendingKeys(cfg, next);
      if (restartPending.length) log.warn("configuration reloaded; some changes wait for a restart", { restartPending });
      if (JSON.stringify(next.metrics) !== JSON.stringify(prev.metrics)) {
        const failed = await rebindMetrics(prev.metrics, next.metrics);
        if (failed) {
          log.error("metrics listener not moved", { error: failed });
          return { ok: false as const, error: `metrics: ${failed}; the rest of the new configuration is applied` };
        }
      }
      return { ok: true as const, restartPending };
    });
    // One reload at a time: two would race on the metrics listener.
    reloading = run.catch(() => undefined);
    return run;
  };
  try {
    if (self.role === "lb" && cfg.acme) {
      acme = await startAcme({
        config: cfg.acme,
        log,
        metrics,
        onToken: (token, keyAuthorization, expiresAtMs) => sendToken({ token, keyAuthorization, expiresAtMs }),
      });
      closers.push(() => acme?.close());
    }
    await controller.start();
    if (acme) {
      // Issued chains between LBs, over TCP on the peer port, signed with each member's identity
      // (agent/acme/exchange.ts): every LB serves the certificate, and one that was down catches up.
      const identities = memberIdentities();
      const exchange = await startChainExchange({
        selfId: cfg.nodeId,
        listenAddress: cfg.listen.address,
        listenPort: cfg.listen.port,
        peers: () => lbPeers(controller.config).map((m) => ({ id: m.id, address: m.address, port: m.port })),
        store: acme.store,
        auth: identityExchangeAuth(
          () => keys,
          (id) => identities(controller.config, id),
        ),
        log: log.child({ part: "acme-exchange" }),
        fatal: deps.fatal,
      });
      closers.push(() => exchange.close());
    }
    if (cfg.metrics.enabled) metricsServer = await startMetricsServer(metrics, { address: cfg.metrics.address, port: cfg.metrics.port });
    closers.push(() => metricsServer?.close());
    const control = await createControlServer(cfg.controlSocket, async (req) => {
      switch (req.cmd) {
        case "status":
          // Status leaves the process (the deploy scripts print it, Pulumi stores it): redacted like the logs.
          return redactDeep(
            {
              ...controller.status(),
              restartPending,
              peerKeys: transportRef?.keyStatus() ?? null,
              olderWire: transportRef?.olderWire() ?? [],
              acme: acme?.status() ?? null,
            },
            [token],
          );
        case "handover":
          // The request's shape (to a node id, preferBuild a build id) is checked by the control server.
          controller.handover(
            req.to,
            req.to ? `operator handover to ${req.to}` : req.preferBuild ? `operator handover (preferring build ${req.preferBuild})` : "operator handover",
            req.preferBuild,
          );
          return {
            ok: true,
            requested: req.to ?? (req.preferBuild ? `best eligible node running build ${req.preferBuild}, else the best eligible node` : "best eligible node"),
          };
        case "maintenance":
          controller.setMaintenance(req.on);
          return { ok: true, maintenance: req.on };
        case "reload":
          return reload();
        default:
          return { error: `unknown command ${(req as { cmd: string }).cmd}` };
      }
    });
    closers.push(() => control.close());
    if (fileStamps(configFiles) + "\n" + fileStamps(secretPaths(cfg)) !== stampsAtLoad) {
      log.info("the configuration files changed while fipd started; reloading them", { config: configPath });
      const r = await reload();
      if (!r.ok) log.error("the configuration files changed while fipd started, and their reload was refused", { error: r.error });
    }
  } catch (e) {
    log.error("failed to start", { error: (e as Error).message });
    await controller.close();
    for (const c of closers) await c();
    return 1;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      await controller.shutdown(`received ${signal}`);
      for (const c of closers) await c();
      log.info("fipd stopped", { signal });
      resolve(0);
    };
    process.on("SIGTERM", () => void stop("SIGTERM"));
    process.on("SIGINT", () => void stop("SIGINT"));
    process.on("SIGHUP", () => void reload());
  });
}

export { ConfigError };
