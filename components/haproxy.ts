/**
 * The HAProxy configuration, rendered by the stack and shipped by command (so changing pools, routes,
 * certificates or limits reloads HAProxy and replaces no droplet). A pure function of plain values;
 * valid on HAProxy 2.6 and 2.8.
 *
 * - Public frontends bind only to the droplet's anchor IPv4, filled in on the droplet from the
 *   metadata service: traffic reaches HAProxy only through the Reserved IP (DigitalOcean's 1:1 NAT
 *   delivers it to the anchor address), never on the public address.
 * - fipd's health frontend (127.0.0.1) fails when this droplet could serve nothing: when no pool has
 *   a server up (`monitor fail` with one `nbsrv(pool) lt 1` per pool, all of which must hold). A
 *   droplet that still serves one pool keeps the Reserved IP: moving it would not help the others,
 *   which are down on every LB alike when their servers are down.
 * - HAProxy's own Prometheus exporter listens on loopback, or on every address (the cloud firewall
 *   opens it to metricsCidrs only, and HAProxy itself refuses other sources) when metricsCidrs is set.
 * - Rate limit: a per-frontend stick table counts each client address's requests over a sliding 1 s
 *   window (`http_req_rate(1s)`); a request is answered 429 when that count, itself included,
 *   exceeds `requestsPerSecond + burst` (burst defaults to 0). So `burst` is how many requests above
 *   the steady rate one second may carry; HAProxy has no token bucket.
 * - Sticky cookies name a server by a hash of its address, the same on every LB, so a failover keeps
 *   the sessions.
 * - ACME (when a certificate is obtained over ACME): every http frontend hands
 *   `/.well-known/acme-challenge/` to fipd's HTTP-01 responder on loopback (backend `be_acme`). The
 *   first http-request rule is `allow` for those requests, which ends the http-request rules for
 *   them: no https redirect, no rate limit (the CA validates from several addresses at once), and
 *   the `use_backend` ahead of the routes. Only the connection rules (denyCidrs; allowCidrs is
 *   refused at preview on port 80) come before it, as they come before anything.
 */
import { createHash } from "node:crypto";
import {
  ACME_CHALLENGE_PREFIX,
  ANY_IPV4,
  HAPROXY_HEALTH_PATH,
  HAPROXY_HEALTH_PORT,
  HAPROXY_METRICS_PORT,
  LOOPBACK_IPV4,
  METADATA_URL,
} from "../agent/ports.js";
import { HEALTH_DEFAULTS, normalizeLb, type Frontend, type PemCertificate, type Pool } from "./lb-config.js";

export const ANCHOR_PLACEHOLDER = "@ANCHOR_IPV4@";
/** Where the certificate files are; the install script fills in the directory of the new set. */
export const CERT_DIR_PLACEHOLDER = "@CERT_DIR@";
/**
 * The installed set's id (its directory's name, new on every install), which the health frontend
 * answers on HAPROXY_CONFIG_ID_PATH: the install script reads it back after the reload to confirm
 * that the running HAProxy took the new config (`systemctl reload` exits 0 even when it did not).
 */
export const CONFIG_ID_PLACEHOLDER = "@CONFIG_ID@";
export const HAPROXY_CONFIG_ID_PATH = "/halb-config-id";

/** Timeout defaults (ms), documented in the README; frontends and pools override them. */
export const TIMEOUT_DEFAULTS = {
  connectMs: 5000,
  clientMs: 30_000,
  serverMs: 30_000,
  /** Slow headers (slowloris): the whole request head must arrive within this. */
  httpRequestMs: 10_000,
  httpKeepAliveMs: 10_000,
  /** How long a request may wait for a free server slot before a 503. */
  queueMs: 10_000,
  /** WebSockets and other upgraded connections: idle time allowed once upgraded. */
  tunnelMs: 3_600_000,
} as const;

/** The default maxconn when the droplet's memory is unknown. */
export const DEFAULT_MAXCONN = 20_000;
/**
 * maxconn sized for the droplet: half its memory for connections at about 64 KiB each (two 16 KiB
 * buffers per side plus TLS state), between 2,000 and 200,000. `s-1vcpu-1gb` gives 8,192.
 */
export function maxconnForSize(sizeSlug: string | undefined): number {
  const m = sizeSlug?.match(/(\d+)(mb|gb)/);
  if (!m) return DEFAULT_MAXCONN;
  const mib = Number(m[1]) * (m[2] === "gb" ? 1024 : 1);
  return Math.min(200_000, Math.max(2000, Math.floor((mib / 2) * (1024 / 64))));
}

export interface HaproxyOptions {
  /** The long form (lb-config.ts). Pools given by tag must have their servers resolved. */
  frontends?: readonly Frontend[];
  pools?: Readonly<Record<string, Pool>>;
  /** The short form: one pool behind one http frontend per port. */
  listenPorts?: readonly number[];
  backends?: readonly string[];
  healthPort?: number;
  metricsPort?: number;
  /** Who may scrape HAProxy's exporter; empty: loopback only. */
  metricsCidrs?: readonly string[];
  maxconn?: number;
  /** Name shown in the X-Served-By header (the droplet name); the test bed uses it to see who answered. */
  serverName?: string;
  /** Admin socket (default /run/haproxy/admin.sock); the test bed runs several HAProxies on one host. */
  statsSocket?: string;
  /** Syslog target (default /dev/log); the test bed, which has no syslog, uses stderr. */
  logTarget?: string;
  /** Directory of the certificate files (certificateFiles); default CERT_DIR_PLACEHOLDER. */
  certDir?: string;
  /** Drop privileges (default user and group haproxy, chroot /var/lib/haproxy, as Debian ships it); null: stay as started (the test bed). */
  runAs?: { user: string; group: string; chroot?: string } | null;
  /** master-worker mode (default true): a reload starts new workers, old connections finish on the old ones. */
  masterWorker?: boolean;
  /** Set when a certificate is obtained over ACME: fipd's HTTP-01 responder on 127.0.0.1 (ACME_RESPONDER_PORT), which every http frontend routes the challenge path to. */
  acmeResponderPort?: number;
}

/** The backend of fipd's HTTP-01 responder. */
export const ACME_BACKEND = "be_acme";

const ms = (n: number) => `${n}ms`;
/** A server's name in the config and the metrics: its address, in the characters HAProxy names allow. */
export const serverId = (addr: string) => `s_${addr.replace(/[^A-Za-z0-9]/g, "_")}`;
/** A server's sticky cookie value: a hash of its address, so that every LB gives the same one. */
export const cookieValue = (addr: string) => createHash("sha256").update(addr).digest("hex").slice(0, 16);
export const backendName = (pool: string) => `pool_${pool}`;
export const certFile = (name: string) => `${name}.pem`;
export const caFile = (pool: string) => `ca-${pool}.pem`;

/**
 * The files the config refers to, by file name in the certificate directory: each certificate's
 * chain followed by its key (what HAProxy's `crt` reads), and each pool's CA for re-encryption.
 * Secret: only ever on a secret stdin.
 */
export function certificateFiles(certificates: Readonly<Record<string, PemCertificate>>, pools: Readonly<Record<string, Pool>> = {}): Record<string, string> {
  const files: Record<string, string> = {};
  const nl = (s: string) => (s.endsWith("\n") ? s : `${s}\n`);
  for (const [n, c] of Object.entries(certificates)) files[certFile(n)] = nl(c.certificate) + nl(c.privateKey);
  for (const [n, p] of Object.entries(pools)) if (p.tls?.ca) files[caFile(n)] = nl(p.tls.ca);
  return files;
}

function frontendLines(f: Frontend, o: HaproxyOptions, certDir: string): string[] {
  const http = f.protocol !== "tcp";
  const t = f.timeouts ?? {};
  const bind = [`bind ${ANCHOR_PLACEHOLDER}:${f.port}`];
  if (f.protocol === "https") {
    // SNI picks among the certificates by their names; the first is the default.
    bind.push("ssl", ...(f.certificates ?? []).map((c) => `crt ${certDir}/${certFile(c)}`), `alpn ${f.http2 === false ? "http/1.1" : "h2,http/1.1"}`);
  }
  const out = [`frontend fe_${f.port}`, `    mode ${http ? "http" : "tcp"}`, `    ${bind.join(" ")}`, http ? "    option httplog" : "    option tcplog"];
  // On a reload, the old process keeps an idle keep-alive connection until it answers one more
  // request (with Connection: close) instead of closing it under a client that may be sending on
  // it (bench:reload measured those resets), bounded by timeout http-keep-alive.
  if (http) out.push("    option forwardfor", "    option idle-close-on-response");
  if (t.clientMs !== undefined) out.push(`    timeout client ${ms(t.clientMs)}`);
  if (http && t.httpRequestMs !== undefined) out.push(`    timeout http-request ${ms(t.httpRequestMs)}`);
  if (http && t.httpKeepAliveMs !== undefined) out.push(`    timeout http-keep-alive ${ms(t.httpKeepAliveMs)}`);
  // Refused clients are dropped at accept, before any byte reaches a backend.
  if (f.denyCidrs?.length) out.push(`    tcp-request connection reject if { src ${f.denyCidrs.join(" ")} }`);
  if (f.allowCidrs?.length) out.push(`    tcp-request connection reject unless { src ${f.allowCidrs.join(" ")} }`);
  // First of the http-request rules: `allow` ends them for a challenge request (see the header).
  const acme = f.protocol === "http" && o.acmeResponderPort !== undefined;
  if (acme) out.push(`    acl acme_challenge path_beg ${ACME_CHALLENGE_PREFIX}`, "    http-request allow if acme_challenge");
  if (http && f.rateLimit) {
    const limit = f.rateLimit.requestsPerSecond + (f.rateLimit.burst ?? 0);
    out.push(
      "    stick-table type ip size 100k expire 10s store http_req_rate(1s)",
      "    http-request track-sc0 src",
      `    http-request deny deny_status 429 if { sc_http_req_rate(0) gt ${limit} }`,
    );
  }
  if (f.redirectToHttps) out.push(`    http-request redirect scheme https code 301 unless { path_beg ${ACME_CHALLENGE_PREFIX} }`);
  if (http) out.push(`    http-request set-header X-Forwarded-Proto ${f.protocol}`);
  if (f.hsts !== undefined) out.push(`    http-response set-header Strict-Transport-Security "max-age=${f.hsts}"`);
  if (o.serverName && http) out.push(`    http-response set-header X-Served-By ${o.serverName}`);
  if (acme) out.push(`    use_backend ${ACME_BACKEND} if acme_challenge`);
  for (const r of f.routes ?? []) {
    const conds = [...(r.host ? [`{ req.hdr(host),field(1,:),lower -m str ${r.host} }`] : []), ...(r.pathPrefix ? [`{ path_beg ${r.pathPrefix} }`] : [])];
    out.push(`    use_backend ${backendName(r.pool)} if ${conds.join(" ")}`);
  }
  out.push(`    default_backend ${backendName(f.pool)}`, "");
  return out;
}

function backendLines(name: string, p: Pool, mode: "http" | "tcp", certDir: string): string[] {
  if (!p.servers?.length) throw new Error(`HAProxy config: pool ${name} has no servers (a pool given by tag must be resolved first)`);
  const h = { ...HEALTH_DEFAULTS, ...p.healthCheck };
  const t = p.timeouts ?? {};
  const out = [`backend ${backendName(name)}`, `    mode ${mode}`, `    balance ${p.balance ?? "roundrobin"}`];
  if (t.connectMs !== undefined) out.push(`    timeout connect ${ms(t.connectMs)}`);
  if (t.serverMs !== undefined) out.push(`    timeout server ${ms(t.serverMs)}`);
  if (t.queueMs !== undefined) out.push(`    timeout queue ${ms(t.queueMs)}`);
  if (t.tunnelMs !== undefined) out.push(`    timeout tunnel ${ms(t.tunnelMs)}`);
  if (h.type === "http") {
    out.push(
      "    option httpchk",
      `    http-check send meth GET uri ${h.path} ver HTTP/1.1 hdr Host ${p.tls?.serverName ?? "localhost"}`,
      `    http-check expect status ${h.expectStatus}`,
    );
  }
  if (p.stickySessions) out.push(`    cookie ${p.stickySessions.cookie} insert indirect nocache httponly`);
  const ids = new Map<string, string>();
  for (const addr of p.servers) {
    const id = serverId(addr);
    const clash = ids.get(id);
    if (clash !== undefined)
      throw new Error(`HAProxy config: pool ${name}: servers ${clash} and ${addr} ${clash === addr ? "repeat" : "map to one server name"}`);
    ids.set(id, addr);
    const opts = [`server ${id} ${addr}`, `check inter ${ms(h.intervalMs)} rise ${h.rise} fall ${h.fall}`];
    if (p.stickySessions) opts.push(`cookie ${cookieValue(addr)}`);
    if (p.proxyProtocol) opts.push(p.proxyProtocol === "v2" ? "send-proxy-v2" : "send-proxy", "check-send-proxy");
    if (p.tls) {
      opts.push("ssl", p.tls.verify ? `verify required ca-file ${certDir}/${caFile(name)}` : "verify none");
      if (p.tls.serverName)
        opts.push(`sni str(${p.tls.serverName}) check-sni ${p.tls.serverName}`, ...(p.tls.verify ? [`verifyhost ${p.tls.serverName}`] : []));
    }
    out.push(`    ${opts.join(" ")}`);
  }
  out.push("");
  return out;
}

export function renderHaproxyConfig(o: HaproxyOptions): string {
  const { frontends, pools } =
    o.frontends && o.pools
      ? { frontends: o.frontends, pools: o.pools }
      : normalizeLb({ listenPorts: o.listenPorts ? [...o.listenPorts] : undefined, backends: [...(o.backends ?? [])] });
  const healthPort = o.healthPort ?? HAPROXY_HEALTH_PORT;
  const metricsPort = o.metricsPort ?? HAPROXY_METRICS_PORT;
  const certDir = o.certDir ?? CERT_DIR_PLACEHOLDER;
  const runAs = o.runAs === undefined ? { user: "haproxy", group: "haproxy", chroot: "/var/lib/haproxy" } : o.runAs;
  const mode = new Map<string, "http" | "tcp">();
  for (const f of frontends) for (const p of [f.pool, ...(f.routes ?? []).map((r) => r.pool)]) mode.set(p, f.protocol === "tcp" ? "tcp" : "http");
  const used = Object.keys(pools).filter((p) => mode.has(p));
  for (const f of frontends)
    for (const p of [f.pool, ...(f.routes ?? []).map((r) => r.pool)])
      if (!pools[p]) throw new Error(`HAProxy config: frontend ${f.port} names no known pool ${p}`);
  const T = TIMEOUT_DEFAULTS;
  const lines = [
    "# Rendered by the ha-lb Pulumi stack. Do not edit on the droplet: `pulumi up` overwrites it.",
    "global",
    ...(o.masterWorker === false ? [] : ["    master-worker"]),
    ...(runAs ? [`    user ${runAs.user}`, `    group ${runAs.group}`, ...(runAs.chroot ? [`    chroot ${runAs.chroot}`] : [])] : []),
    `    maxconn ${o.maxconn ?? DEFAULT_MAXCONN}`,
    `    log ${o.logTarget ?? "/dev/log"} local0`,
    // expose-fd listeners: a reload hands the listening sockets over, so no connection is refused.
    `    stats socket ${o.statsSocket ?? "/run/haproxy/admin.sock"} mode 660 level admin expose-fd listeners`,
    "    ssl-default-bind-options ssl-min-ver TLSv1.2",
    "",
    "defaults",
    "    log global",
    "    mode http",
    // A server named by a host that does not resolve yet starts down (health fails) instead of
    // keeping HAProxy from starting at all.
    "    default-server init-addr last,libc,none",
    `    timeout connect ${ms(T.connectMs)}`,
    `    timeout client ${ms(T.clientMs)}`,
    `    timeout server ${ms(T.serverMs)}`,
    `    timeout http-request ${ms(T.httpRequestMs)}`,
    `    timeout http-keep-alive ${ms(T.httpKeepAliveMs)}`,
    `    timeout queue ${ms(T.queueMs)}`,
    `    timeout tunnel ${ms(T.tunnelMs)}`,
    "",
    "# Health for fipd: 200 while at least one pool has a server up, 503 when none has.",
    "frontend fipd_health",
    `    bind ${LOOPBACK_IPV4}:${healthPort}`,
    `    monitor-uri ${HAPROXY_HEALTH_PATH}`,
    `    monitor fail if ${used.map((p) => `{ nbsrv(${backendName(p)}) lt 1 }`).join(" ")}`,
    `    http-request return status 200 content-type text/plain string ${CONFIG_ID_PLACEHOLDER} if { path ${HAPROXY_CONFIG_ID_PATH} }`,
    "",
    "# HAProxy's Prometheus exporter: per frontend, pool and server.",
    "frontend prometheus",
    `    bind ${o.metricsCidrs?.length ? ANY_IPV4 : LOOPBACK_IPV4}:${metricsPort}`,
    "    no log",
    ...(o.metricsCidrs?.length ? [`    tcp-request connection reject unless { src 127.0.0.0/8 ${o.metricsCidrs.join(" ")} }`] : []),
    "    http-request use-service prometheus-exporter if { path /metrics }",
    "    http-request return status 404",
    "",
  ];
  for (const f of [...frontends].sort((a, b) => a.port - b.port)) lines.push(...frontendLines(f, o, certDir));
  for (const p of used) lines.push(...backendLines(p, pools[p], mode.get(p)!, certDir));
  if (o.acmeResponderPort !== undefined && frontends.some((f) => f.protocol === "http"))
    lines.push(`backend ${ACME_BACKEND}`, "    mode http", `    server fipd_acme ${LOOPBACK_IPV4}:${o.acmeResponderPort}`, "");
  return lines.join("\n") + "\n";
}

/** The line that starts each file after the config in the bundle on the install script's stdin. */
export const BUNDLE_FILE_MARK = "#%halb-file ";

/**
 * What the install script reads on stdin: the config, then each certificate file after a
 * `#%halb-file <name>` line. Holds keys: only ever the stdin of a command with secret stdin and
 * `logging: "none"`.
 */
export function haproxyBundle(config: string, files: Readonly<Record<string, string>> = {}): string {
  let out = config.endsWith("\n") ? config : `${config}\n`;
  for (const [name, text] of Object.entries(files)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name)) throw new Error(`HAProxy bundle: bad file name ${JSON.stringify(name)}`);
    if (text.split("\n").some((l) => l.startsWith(BUNDLE_FILE_MARK))) throw new Error(`HAProxy bundle: ${name} holds a line starting with the file mark`);
    out += `${BUNDLE_FILE_MARK}${name}\n${text.endsWith("\n") ? text : `${text}\n`}`;
  }
  return out;
}

/**
 * A POSIX sh script: reads the bundle (haproxyBundle) on stdin, writes the certificate files
 * (0600, root, umask 077) into a new directory beside the running set, fills in the anchor IPv4
 * from the metadata service, that directory and its name (the config id), checks the whole new set
 * with `haproxy -c` (not `-q`, which prints nothing on error), and only then installs the config
 * atomically and reloads HAProxy. A set that fails the check is removed, leaves the running one
 * untouched, and fails the command with HAProxy's message.
 *
 * `-c` binds nothing, so a reload can still fail (an address in use, a port below 1024 without the
 * right), and `systemctl reload` exits 0 even then: the master keeps the old workers. So the script
 * then polls the health frontend until the running HAProxy answers the new set's id (bounded). If it
 * does not, the previous config goes back in place (the new set is removed, the old one was never
 * touched), so the files on disk match what runs, and the command fails with HAProxy's log. Older
 * sets are removed only after a confirmed reload. Then the chains of the running set's files (never
 * a key) are published, 0644, in publicCertDir, where fipd reads their expiry (agent/cert-expiry.ts).
 */
export interface HaproxyInstallOptions {
  /** Default METADATA_URL (DigitalOcean's metadata service, agent/ports.ts). */
  metadataUrl?: string;
  /** Default /etc/haproxy/haproxy.cfg. */
  configPath?: string;
  /** Where the certificate sets live, one directory each (default: ha-lb beside the config, /etc/haproxy/ha-lb). */
  certRoot?: string;
  /** Where the running set's certificates (chains only, 0644) are published for fipd's expiry metric (default: ha-lb-certs beside the config, CERTIFICATE_DIR). */
  publicCertDir?: string;
  /** Default `systemctl reload-or-restart haproxy` (a graceful reload when HAProxy runs). */
  reloadCommand?: string;
  /** Metadata fetch retries, one second apart (default 10). */
  retries?: number;
  /** Where the running HAProxy answers its config id (default: the health frontend on 127.0.0.1, HAPROXY_CONFIG_ID_PATH). */
  configIdUrl?: string;
  /** How long the running HAProxy may take to answer the new id after the reload (default 30 s). */
  confirmTimeoutS?: number;
  /** Prints HAProxy's log since the reload, run when it did not take the config; `$since` holds the reload's epoch seconds. Default: the haproxy unit's journal. */
  logCommand?: string;
  /** fipd's ACME state dir, where it writes issued chains (default ACME_INSTALL_DEFAULTS.stateDir). */
  acmeStateDir?: string;
  /** Where the stack puts the ACME certificates' keys, `<name>.key` (default ACME_INSTALL_DEFAULTS.keyDir). */
  acmeKeyDir?: string;
  /** How long an install waits for another one to finish (default 120 s). */
  lockWaitS?: number;
}

/** Defaults of fipd's `acme` config (agent/config.ts): where fipd writes issued chains, where the stack puts the keys. */
export const ACME_INSTALL_DEFAULTS = { stateDir: "/var/lib/fipd/acme", keyDir: "/etc/fipd/acme" } as const;

/** What both install scripts share: the resolved options. */
function installOpts(o: HaproxyInstallOptions) {
  const cfg = o.configPath ?? "/etc/haproxy/haproxy.cfg";
  const cfgDir = cfg.slice(0, cfg.lastIndexOf("/") + 1) || "./";
  return {
    cfg,
    root: o.certRoot ?? `${cfgDir}ha-lb`,
    pub: o.publicCertDir ?? `${cfgDir}ha-lb-certs`,
    reload: o.reloadCommand ?? "systemctl reload-or-restart haproxy",
    idUrl: o.configIdUrl ?? `http://${LOOPBACK_IPV4}:${HAPROXY_HEALTH_PORT}${HAPROXY_CONFIG_ID_PATH}`,
    confirmS: o.confirmTimeoutS ?? 30,
    log: o.logCommand ?? `journalctl -u haproxy --since "@$since" --no-pager -o cat 2>&1 | tail -n 40`,
    stateDir: o.acmeStateDir ?? ACME_INSTALL_DEFAULTS.stateDir,
    keyDir: o.acmeKeyDir ?? ACME_INSTALL_DEFAULTS.keyDir,
    lockWaitS: o.lockWaitS ?? 120,
  };
}

/**
 * One install at a time: `pulumi up`'s install and the ACME install unit both make a new set from
 * the running one; run together, one would remove the other's set. flock on the set root itself
 * (no lock file to leave behind), bounded.
 */
const lockRoot = (x: ReturnType<typeof installOpts>) => `mkdir -p "${x.root}"
chmod 700 "${x.root}"
exec 9<"${x.root}"
if ! flock -w ${x.lockWaitS} 9; then
  echo "ha-lb: another HAProxy install held ${x.root} for ${x.lockWaitS} s; giving up" >&2
  exit 1
fi`;

/**
 * Shell functions choosing an issued chain (fipd's `<stateDir>/<name>.chain.pem`, public, written by
 * the unprivileged agent, so read as untrusted input) over the certificate a set serves:
 * `halb_acme_pick <chain> <key> <served>` succeeds when the chain is a regular file of at most
 * 64 KiB whose leaf (its first certificate) carries the public key of <key>, has not expired, and
 * is newer than <served>'s leaf: <served> missing, self-signed (the stack's placeholder: a CA never
 * issues one), or ending earlier. Otherwise it fails with the reason in $why (empty when <served>
 * is simply as new). `halb_acme_pem <chain> <key>` prints the chain's certificates (nothing else
 * from that file) followed by the key's private key block: what HAProxy's `crt` reads.
 */
const acmePickFunctions = `halb_not_after() {
  d=$(openssl x509 -in "$1" -noout -enddate 2>/dev/null | sed -n 's/^notAfter=//p')
  [ -n "$d" ] && date -u -d "$d" +%s 2>/dev/null
}
halb_self_signed() {
  [ "$(openssl x509 -in "$1" -noout -subject -nameopt RFC2253 2>/dev/null | sed 's/^subject=//')" = "$(openssl x509 -in "$1" -noout -issuer -nameopt RFC2253 2>/dev/null | sed 's/^issuer=//')" ]
}
halb_acme_pick() {
  why=""
  if [ ! -f "$1" ] || [ -L "$1" ]; then why="not a regular file"; return 1; fi
  if [ "$(wc -c < "$1")" -gt 65536 ]; then why="larger than 64 KiB"; return 1; fi
  leaf=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || { why="no certificate in it"; return 1; }
  mine=$(openssl pkey -in "$2" -pubout 2>/dev/null) || { why="no private key in $2"; return 1; }
  if [ "$leaf" != "$mine" ]; then why="its certificate's public key does not match the key $2"; return 1; fi
  if ! openssl x509 -in "$1" -noout -checkend 0 >/dev/null 2>&1; then why="it has expired"; return 1; fi
  [ -f "$3" ] || return 0
  halb_self_signed "$3" && return 0
  a=$(halb_not_after "$1"); b=$(halb_not_after "$3")
  [ -z "$b" ] && return 0
  [ "$a" -gt "$b" ]
}
halb_acme_pem() {
  awk '/^-----BEGIN CERTIFICATE-----/ { c = 1 } c { print } /^-----END CERTIFICATE-----/ { c = 0 }' "$1"
  awk '/^-----BEGIN [A-Z ]*PRIVATE[ ]KEY-----/ { c = 1 } c { print } /^-----END [A-Z ]*PRIVATE[ ]KEY-----/ { c = 0 }' "$2"
}`;

/**
 * What both install scripts end with, once "$tmp" (the new config, pointing at the new set "$new"
 * with id "$id") has passed `haproxy -c`: install it, reload, confirm, publish, clean up.
 */
const reloadAndConfirm = (x: ReturnType<typeof installOpts>) => `chmod 644 "$tmp"
if [ -f "${x.cfg}" ]; then cp -p "${x.cfg}" "$prev"; else rm -f "$prev"; fi
mv "$tmp" "${x.cfg}"
since=$(date +%s)
# Poll (bounded) until the running HAProxy answers the new id: a failed reload leaves the old workers running.
running=""
reloaded="the reload command exited 0"
# fd 9 holds the install lock: a HAProxy the reload command starts must not inherit (and keep) it.
if ( ${x.reload}
) 9<&-; then
  deadline=$(( since + ${x.confirmS} ))
  while :; do
    running=$(curl -fsS --max-time 2 "${x.idUrl}" 2>/dev/null || true)
    [ "$running" = "$id" ] && break
    [ "$(date +%s)" -ge "$deadline" ] && break
    sleep 0.2
  done
else
  reloaded="the reload command failed"
fi
if [ "$running" != "$id" ]; then
  if [ -f "$prev" ]; then mv "$prev" "${x.cfg}"; else rm -f "${x.cfg}"; fi
  echo "ha-lb: HAProxy did not take the new config within ${x.confirmS} s (\${reloaded}; the running one answers config id '\${running:-none}', the new one is '$id'); the previous config is back in place. HAProxy's log since the reload:" >&2
  ( ${x.log} ) >&2 || true
  exit 1
fi
rm -f "$prev"
trap - EXIT
# Publish the chains of the running set (never a key) for fipd's certificate expiry metric.
mkdir -p "${x.pub}"
chmod 755 "${x.pub}"
for f in "$new"/*.pem; do
  [ -f "$f" ] || continue
  n=$(basename "$f")
  awk '/^-----BEGIN CERTIFICATE-----/ { c = 1 } c { print } /^-----END CERTIFICATE-----/ { c = 0 }' "$f" > "${x.pub}/.$n.tmp"
  chmod 644 "${x.pub}/.$n.tmp"
  mv "${x.pub}/.$n.tmp" "${x.pub}/$n"
done
for f in "${x.pub}"/*.pem; do
  if [ -f "$f" ] && [ ! -e "$new/$(basename "$f")" ]; then rm -f "$f"; fi
done
for old in "${x.root}"/set.*; do
  if [ "$old" != "$new" ] && [ -d "$old" ]; then rm -rf "$old"; fi
done
`;

export function haproxyInstallScript(o: HaproxyInstallOptions = {}): string {
  const md = o.metadataUrl ?? METADATA_URL;
  const x = installOpts(o);
  const { cfg, root } = x;
  return `set -eu
umask 077
${lockRoot(x)}
new=$(mktemp -d "${root}/set.XXXXXX")
id=$(basename "$new")
tmp=$(mktemp "${cfg}.XXXXXX")
prev=$(mktemp "${cfg}.prev.XXXXXX")
trap 'rm -rf "$new"; rm -f "$tmp" "$prev"' EXIT
anchor=$(curl -fsS --retry ${o.retries ?? 10} --retry-delay 1 --retry-connrefused --max-time 3 ${md}/metadata/v1/interfaces/public/0/anchor_ipv4/address || true)
if ! printf '%s' "$anchor" | grep -Eq '^[0-9]{1,3}([.][0-9]{1,3}){3}$'; then
  echo "ha-lb: no anchor IPv4 from the metadata service (${md}), got '$anchor'; refusing to bind HAProxy to anything else" >&2
  exit 1
fi
awk -v dir="$new" 'BEGIN { out = dir "/haproxy.cfg" }
  index($0, "${BUNDLE_FILE_MARK}") == 1 {
    name = substr($0, ${BUNDLE_FILE_MARK.length + 1})
    if (name !~ /^[A-Za-z0-9][A-Za-z0-9._-]*$/ || name == "haproxy.cfg") { print "ha-lb: a bad file name in the HAProxy bundle" > "/dev/stderr"; exit 1 }
    close(out); out = dir "/" name; next
  }
  { print > out }'
# A certificate fipd obtained over ACME (issue 15) replaces the stack's placeholder for its name, so a
# deploy never takes HTTPS back to the placeholder. Its key is the one in the bundle's file.
${acmePickFunctions}
for f in "$new"/*.pem; do
  [ -f "$f" ] || continue
  n=$(basename "$f" .pem)
  [ -e "${x.stateDir}/$n.chain.pem" ] || continue
  if halb_acme_pick "${x.stateDir}/$n.chain.pem" "$f" "$f"; then
    halb_acme_pem "${x.stateDir}/$n.chain.pem" "$f" > "$f.acme"
    mv "$f.acme" "$f"
    echo "ha-lb: $n: serving the certificate fipd obtained (${x.stateDir}/$n.chain.pem) instead of the stack's placeholder"
  elif [ -n "$why" ]; then
    echo "ha-lb: $n: not serving ${x.stateDir}/$n.chain.pem: $why" >&2
  fi
done
sed -e "s/${ANCHOR_PLACEHOLDER}/$anchor/g" -e "s|${CERT_DIR_PLACEHOLDER}|$new|g" -e "s/${CONFIG_ID_PLACEHOLDER}/$id/g" "$new/haproxy.cfg" > "$tmp"
rm -f "$new/haproxy.cfg"
if ! grep -q "bind $anchor:" "$tmp"; then
  echo "ha-lb: the HAProxy config on stdin has no listener on ${ANCHOR_PLACEHOLDER}; refusing to install it" >&2
  exit 1
fi
if ! grep -q "string $id if { path ${HAPROXY_CONFIG_ID_PATH} }" "$tmp"; then
  echo "ha-lb: the HAProxy config on stdin does not answer its id (${CONFIG_ID_PLACEHOLDER}) on ${HAPROXY_CONFIG_ID_PATH}, so the reload could not be confirmed; refusing to install it" >&2
  exit 1
fi
if ! out=$(haproxy -c -f "$tmp" 2>&1); then
  printf 'ha-lb: haproxy -c refused the new config; the running one is untouched:\\n%s\\n' "$out" >&2
  exit 1
fi
${reloadAndConfirm(x)}echo "ha-lb: HAProxy config $id installed and running, listeners on $anchor, certificates in $new"
`;
}

/**
 * The root-run script of `halb-acme-install.service` (started by `halb-acme-install.path` when fipd
 * writes a chain into its state dir, and once at boot): fipd runs as an unprivileged user under
 * ProtectSystem=strict and can neither write /etc/haproxy nor reload HAProxy, so this does it for
 * the chains fipd publishes (public; the keys are the stack's, in keyDir).
 *
 * For each certificate the running set serves (`<name>.pem`) with a `<stateDir>/<name>.chain.pem`:
 * if halb_acme_pick accepts it against `<keyDir>/<name>.key`, the new set gets chain + that key.
 * The new set is a copy of the running one (the running set is never written), with the config
 * pointing at it under a new id; then `haproxy -c`, the reload and its confirmation exactly as
 * haproxyInstallScript does. A chain it refuses is logged (why) and changes nothing; with nothing
 * newer to install it exits 0 without a reload. A change arriving while it runs (the path unit does
 * not start a unit that is still running) is caught by a further pass, at most 3 passes.
 */
export function acmeInstallScript(o: HaproxyInstallOptions = {}): string {
  const x = installOpts(o);
  const { cfg, root } = x;
  return `set -eu
umask 077
${lockRoot(x)}
${acmePickFunctions}
stamp() { ls -l --time-style=+%s.%N "${x.stateDir}" 2>/dev/null | cksum; }
pass=0
while [ "$pass" -lt 3 ]; do
  pass=$((pass + 1))
  before=$(stamp)
  if [ ! -f "${cfg}" ]; then echo "ha-lb: no HAProxy config installed yet (${cfg}); nothing to install into"; exit 0; fi
  cur=$(sed -n 's/.* string \\(set\\.[A-Za-z0-9]*\\) if { path ${HAPROXY_CONFIG_ID_PATH.replace(/\//g, "\\/")} }.*/\\1/p' "${cfg}" | head -n 1)
  if [ -z "$cur" ] || [ ! -d "${root}/$cur" ]; then
    echo "ha-lb: the running HAProxy config names no certificate set in ${root}; run pulumi up" >&2
    exit 1
  fi
  new=$(mktemp -d "${root}/set.XXXXXX")
  id=$(basename "$new")
  tmp=$(mktemp "${cfg}.XXXXXX")
  prev=$(mktemp "${cfg}.prev.XXXXXX")
  trap 'rm -rf "$new"; rm -f "$tmp" "$prev"' EXIT
  for f in "${root}/$cur"/*; do [ -f "$f" ] && cp -p "$f" "$new/"; done
  changed=""
  for f in "$new"/*.pem; do
    [ -f "$f" ] || continue
    n=$(basename "$f" .pem)
    chain="${x.stateDir}/$n.chain.pem"
    [ -e "$chain" ] || continue
    if [ ! -f "${x.keyDir}/$n.key" ]; then
      echo "ha-lb: $n: refusing $chain: no key ${x.keyDir}/$n.key (the stack ships it)" >&2
    elif halb_acme_pick "$chain" "${x.keyDir}/$n.key" "$f"; then
      halb_acme_pem "$chain" "${x.keyDir}/$n.key" > "$f.acme"
      mv "$f.acme" "$f"
      changed="$changed $n"
    elif [ -n "$why" ]; then
      echo "ha-lb: $n: refusing $chain: $why; the running set is untouched" >&2
    fi
  done
  if [ -z "$changed" ]; then
    rm -rf "$new"; rm -f "$tmp" "$prev"; trap - EXIT
    [ "$(stamp)" = "$before" ] && { echo "ha-lb: no newer issued certificate to install"; exit 0; }
    continue
  fi
  sed -e "s|${root}/$cur/|$new/|g" -e "s/ string $cur if { path / string $id if { path /" "${cfg}" > "$tmp"
  if ! out=$(haproxy -c -f "$tmp" 2>&1); then
    printf 'ha-lb: haproxy -c refused the set with the issued certificate(s)%s; the running one is untouched:\\n%s\\n' "$changed" "$out" >&2
    exit 1
  fi
${reloadAndConfirm(x).replace(/^(?=.)/gm, "  ")}  echo "ha-lb: issued certificate(s)$changed installed: HAProxy config $id running, certificates in $new"
  [ "$(stamp)" = "$before" ] && exit 0
done
echo "ha-lb: fipd's state dir kept changing; the next change starts another pass"
`;
}
