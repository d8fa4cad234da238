/**
 * `fipd run`: build the production dependencies from the config file and start the controller.
 * Refuses to start (exit 2) on a bad config, a missing or too-open token or key file.
 */
import { fileDurableStore } from "./durable-state.js";
import { ConfigError, type AgentConfig } from "./config.js";
import { loadAgentConfigFile } from "./config-file.js";
import { Controller, type ControllerDeps } from "./controller.js";
import { createLogger, type Logger } from "./log.js";
import { createMetrics, startMetricsServer } from "./metrics.js";
import { readPeerKeys, readSecretFile, redactDeep, redactErrors } from "./secrets.js";
import { createPeerTransport } from "./transport.js";
import { createHealthChecker } from "./health.js";
import { createMetadataClient } from "./metadata.js";
import { createReservedIpClient } from "./do-client.js";
import { buildId, createControlServer } from "./control.js";
import { createHash } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";

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

interface Secrets {
  token: string | null;
  keys: ReturnType<typeof readPeerKeys>;
}

function readSecrets(cfg: AgentConfig): Secrets {
  const self = cfg.members.find((m) => m.id === cfg.nodeId)!;
  return {
    keys: readPeerKeys(cfg.peerAuth),
    token: self.role === "lb" ? readSecretFile(cfg.api.tokenFile, "token") : null,
  };
}

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
  try {
    cfg = loadAgentConfigFile(configPath);
    secrets = readSecrets(cfg);
  } catch (e) {
    process.stderr.write(`fipd: refusing to start: ${(e as Error).message}\n`);
    return 2;
  }
  const log = createLogger({ level: cfg.logLevel, nodeId: cfg.nodeId });
  const metrics = createMetrics();
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
  const deps: ControllerDeps = {
    log,
    metrics,
    now: () => performance.now(),
    build: runningBuild() ?? undefined,
    durable: fileDurableStore(cfg.stateFile, (message) => log.error("election state file", { error: message })),
    startTransport: async (c, onMessage) => {
      transportRef = await createPeerTransport({
        selfId: c.nodeId,
        listenAddress: c.listen.address,
        listenPort: c.listen.port,
        members: c.members.filter((m) => m.id !== c.nodeId).map((m) => ({ id: m.id, address: m.address, port: m.port })),
        keys,
        onMessage: (from, msg) => onMessage(from, msg),
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
        const h = createHealthChecker({ ...c.health, onChange });
        h.start();
        return h;
      },
    });
  }

  const controller = new Controller(cfg, deps);
  const closers: Array<() => Promise<void> | void> = [];
  try {
    await controller.start();
    if (cfg.metrics.enabled) {
      const srv = await startMetricsServer(metrics, { address: cfg.metrics.address, port: cfg.metrics.port });
      closers.push(() => srv.close());
    }
    const control = await createControlServer(cfg.controlSocket, async (req) => {
      switch (req.cmd) {
        case "status":
          // Status leaves the process (the deploy scripts print it, Pulumi stores it): redacted like the logs.
          return redactDeep(controller.status(), [token]);
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
          return controller.reload();
        default:
          return { error: `unknown command ${(req as { cmd: string }).cmd}` };
      }
    });
    closers.push(() => control.close());
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
    process.on("SIGHUP", () => void controller.reload());
  });
}

export { ConfigError };
