/**
 * Prometheus metrics on their own registry, served on localhost by default (operators' habit from
 * HAProxy and keepalived exporters: metrics are for the local scraper, not the internet).
 */
import { createServer } from "node:http";
// prom-client's parts one by one, not its index: the index also loads the push gateway (http, https,
// url, zlib), the cluster aggregator (node:cluster) and every default metric, one of which loads
// @opentelemetry/api. That costs the agent about 2 MB of resident memory for nothing it uses
// (issue 13 item 16: 60 MB); test/bundle.test.ts keeps them out of the bundle.
import Counter from "prom-client/lib/counter";
import Gauge from "prom-client/lib/gauge";
import Histogram from "prom-client/lib/histogram";
import Registry from "prom-client/lib/registry";
import heapSizeAndUsed from "prom-client/lib/metrics/heapSizeAndUsed";
import osMemoryHeap from "prom-client/lib/metrics/osMemoryHeap";
import processMaxFileDescriptors from "prom-client/lib/metrics/processMaxFileDescriptors";
import processOpenFileDescriptors from "prom-client/lib/metrics/processOpenFileDescriptors";
import processStartTime from "prom-client/lib/metrics/processStartTime";
import version from "prom-client/lib/metrics/version";
import { readCertificateExpiries } from "./cert-expiry.js";

/**
 * The process metrics an operator watches (resident memory against MemoryMax, CPU, file descriptors,
 * heap, start time, Node.js version), under prom-client's default names. Left out of its defaults:
 * the event-loop lag monitor (a timer 100 times a second), the GC histogram (an observer entry per
 * collection, many with a 1 MB young generation), per-space heap sizes, and handle and request counts.
 */
function processMetrics(registry: Registry, prefix: string): void {
  for (const add of [osMemoryHeap, processStartTime, processOpenFileDescriptors, processMaxFileDescriptors, heapSizeAndUsed, version]) {
    add(registry, { prefix });
  }
  // prom-client's processCpuTotal would load @opentelemetry/api (for exemplars); this is its counter.
  let last = process.cpuUsage();
  new Counter({
    name: `${prefix}process_cpu_seconds_total`,
    help: "Total user and system CPU time spent in seconds.",
    registers: [registry],
    collect() {
      const now = process.cpuUsage();
      this.inc((now.user - last.user + now.system - last.system) / 1e6);
      last = now;
    },
  });
}

/** Per ACME certificate, read at scrape time (agent/acme/manager.ts `timestamps`). */
export type AcmeTimestamps = { name: string; expiryS: number | null; renewalDueS: number; lastErrorS: number | null }[];

/**
 * `certificateDir`: where the HAProxy install publishes the running certificates (metrics.certificateDir), read at each scrape.
 * `acme`: the ACME certificates' timestamps (none when ACME is off).
 */
export function createMetrics(o: { certificateDir?: () => string | undefined; acme?: () => AcmeTimestamps } = {}) {
  const registry = new Registry();
  processMetrics(registry, "fipd_");
  const r = [registry];
  // One directory read per scrape feeds both gauges: each collect awaits the same read.
  let pending: ReturnType<typeof readCertificateExpiries> | null = null;
  const read = async () => {
    const dir = o.certificateDir?.();
    return dir ? (pending ??= readCertificateExpiries(dir).finally(() => (pending = null))) : [];
  };
  new Gauge({
    name: "fipd_certificate_expiry_timestamp_seconds",
    help: "Earliest notAfter (Unix time) in each installed certificate's chain, by certificate name (ca-<pool> for a pool's CA)",
    labelNames: ["name"],
    registers: r,
    async collect() {
      const certs = await read();
      this.reset();
      for (const c of certs) if ("notAfterS" in c) this.set({ name: c.name }, c.notAfterS);
    },
  });
  new Gauge({
    name: "fipd_certificate_unreadable",
    help: '1 for a certificate file in metrics.certificateDir that cannot be read or parsed (name "." for the directory itself)',
    labelNames: ["name"],
    registers: r,
    async collect() {
      const certs = await read();
      this.reset();
      for (const c of certs) if ("error" in c) this.set({ name: c.name }, 1);
    },
  });
  // ACME (issue 15): every LB exports these from its own store, so the alert holds whoever leads.
  const acmeGauge = (name: string, help: string, pick: (t: AcmeTimestamps[number]) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: ["name"],
      registers: r,
      collect() {
        this.reset();
        for (const t of o.acme?.() ?? []) {
          const value = pick(t);
          if (value !== null) this.set({ name: t.name }, value);
        }
      },
    });
  acmeGauge(
    "fipd_acme_certificate_expiry_timestamp_seconds",
    "notAfter (Unix time) of the issued ACME certificate this node holds, by name; absent while the placeholder serves",
    (t) => t.expiryS,
  );
  acmeGauge(
    "fipd_acme_renewal_due_timestamp_seconds",
    "When the ACME certificate is due for renewal (Unix time): when acme.renewAtRemainingFraction of its lifetime remains, or, for a placeholder, since it was first seen missing",
    (t) => t.renewalDueS,
  );
  acmeGauge("fipd_acme_last_error_timestamp_seconds", "When this node's last ACME order for the certificate failed (Unix time)", (t) => t.lastErrorS);
  return {
    registry,
    acmeOrderFailures: new Counter({
      name: "fipd_acme_order_failures_total",
      help: "Failed ACME orders by certificate and reason (rate_limited, unreachable, validation, deadline, rejected_chain, keys, child, other)",
      labelNames: ["name", "reason"],
      registers: r,
    }),
    role: new Gauge({ name: "fipd_role", help: "1 for this node's current role", labelNames: ["role"], registers: r }),
    term: new Gauge({ name: "fipd_term", help: "Current election term", registers: r }),
    leaderChanges: new Counter({ name: "fipd_leader_changes_total", help: "Times the known leader changed", registers: r }),
    isLeader: new Gauge({ name: "fipd_is_leader", help: "1 if this node leads", registers: r }),
    asserting: new Gauge({ name: "fipd_asserting", help: "1 while this node makes sure the reserved IP is on its droplet", registers: r }),
    assigns: new Counter({ name: "fipd_assigns_total", help: "Reserved IP assignments by outcome", labelNames: ["outcome"], registers: r }),
    apiRequests: new Counter({ name: "fipd_api_requests_total", help: "DigitalOcean API requests", labelNames: ["method", "route", "status"], registers: r }),
    apiLatency: new Histogram({
      name: "fipd_api_request_duration_seconds",
      help: "DigitalOcean API latency",
      labelNames: ["route"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    }),
    apiRateLimited: new Counter({ name: "fipd_api_rate_limited_total", help: "429 answers from the API", registers: r }),
    metadataDisagreements: new Counter({
      name: "fipd_metadata_disagreements_total",
      help: "Re-assigns because metadata said the reserved IP is not here after the API assigned it here",
      registers: r,
    }),
    peerRtt: new Gauge({ name: "fipd_peer_rtt_seconds", help: "Heartbeat round trip to a peer", labelNames: ["peer"], registers: r }),
    peerLoss: new Gauge({ name: "fipd_peer_loss_ratio", help: "Share of a peer's expected heartbeats not received", labelNames: ["peer"], registers: r }),
    peerReachable: new Gauge({ name: "fipd_peer_reachable", help: "1 if the peer was heard within a lease", labelNames: ["peer"], registers: r }),
    peerDropped: new Counter({ name: "fipd_peer_packets_dropped_total", help: "Peer packets dropped", labelNames: ["reason"], registers: r }),
    previousPeerKeyAccepted: new Gauge({
      name: "fipd_previous_peer_key_accepted",
      help: "1 while a key roll's previous peer key is still accepted: some member has not been seen signing with the new key",
      registers: r,
    }),
    healthUp: new Gauge({ name: "fipd_haproxy_healthy", help: "1 if the local HAProxy health check passes", registers: r }),
    reservedIpOnSelf: new Gauge({ name: "fipd_reserved_ip_on_self", help: "1 if the reserved IP is on this droplet (metadata)", registers: r }),
    reservedIpHolderIsLeader: new Gauge({
      name: "fipd_reserved_ip_holder_is_leader",
      help: "1 if the droplet holding the reserved IP is the leader",
      registers: r,
    }),
    colorSwitchPending: new Gauge({
      name: "fipd_color_switch_pending",
      help: "1 while a requested color switch has not taken force",
      labelNames: ["requested"],
      registers: r,
    }),
    colorFallback: new Gauge({
      name: "fipd_color_fallback",
      help: "1 while the tier serves from another color than the requested one because the requested color went dark (failover.colorFallback)",
      labelNames: ["color", "requested"],
      registers: r,
    }),
    witnessReachable: new Gauge({ name: "fipd_witness_reachable", help: "1 if the witness was heard within a lease", registers: r }),
    configReloads: new Counter({ name: "fipd_config_reloads_total", help: "Config reloads by result", labelNames: ["result"], registers: r }),
  };
}
export type FipdMetrics = ReturnType<typeof createMetrics>;

export async function startMetricsServer(m: FipdMetrics, o: { address: string; port: number }): Promise<{ close(): Promise<void>; port: number }> {
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url?.split("?")[0] === "/metrics") {
      m.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": m.registry.contentType }).end(text),
        (e: Error) => res.writeHead(500).end(`metrics failed: ${e.message}\n`),
      );
    } else {
      res.writeHead(404).end("not found: try GET /metrics\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.address, () => resolve());
  });
  const addr = server.address();
  return { port: typeof addr === "object" && addr ? addr.port : o.port, close: () => new Promise((r) => server.close(() => r())) };
}
