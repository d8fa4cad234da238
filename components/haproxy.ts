/**
 * The HAProxy configuration, rendered by the stack and shipped by command (so changing backends or
 * listen ports reloads HAProxy and replaces no droplet). Valid on HAProxy 2.6 and 2.8.
 *
 * Public listeners bind only to the droplet's anchor IPv4, filled in on the droplet from the metadata
 * service: traffic can reach HAProxy only through the Reserved IP (DigitalOcean's 1:1 NAT delivers
 * it to the anchor address), never on the public address. The agent's health endpoint listens on
 * 127.0.0.1 and fails when no backend is up.
 */
import { HAPROXY_HEALTH_PATH, HAPROXY_HEALTH_PORT, LOOPBACK_IPV4, METADATA_URL } from "../agent/ports.js";

export const ANCHOR_PLACEHOLDER = "@ANCHOR_IPV4@";

export interface HaproxyOptions {
  listenPorts: number[];
  backends: string[];
  healthPort?: number;
  maxconn?: number;
  /** Name shown in the X-Served-By header (the droplet name); the test bed uses it to see who answered. */
  serverName?: string;
  /** Admin socket (default /run/haproxy/admin.sock); the test bed runs several HAProxies on one host. */
  statsSocket?: string;
  /** Syslog target (default /dev/log); the test bed, which has no syslog, uses stderr. */
  logTarget?: string;
}

export function renderHaproxyConfig(o: HaproxyOptions): string {
  const healthPort = o.healthPort ?? HAPROXY_HEALTH_PORT;
  const lines = [
    "# Rendered by the ha-lb Pulumi stack. Do not edit on the droplet: `pulumi up` overwrites it.",
    "global",
    `    maxconn ${o.maxconn ?? 20000}`,
    `    log ${o.logTarget ?? "/dev/log"} local0`,
    `    stats socket ${o.statsSocket ?? "/run/haproxy/admin.sock"} mode 660 level admin`,
    "",
    "defaults",
    "    log global",
    "    mode http",
    "    option httplog",
    // A backend named by a host that does not resolve yet starts down (health fails) instead of
    // keeping HAProxy from starting at all.
    "    default-server init-addr last,libc,none",
    "    option forwardfor",
    "    timeout connect 2s",
    "    timeout client 30s",
    "    timeout server 30s",
    "",
    "# Health for fipd: 200 while at least one backend is up, 503 otherwise.",
    "frontend fipd_health",
    `    bind ${LOOPBACK_IPV4}:${healthPort}`,
    `    monitor-uri ${HAPROXY_HEALTH_PATH}`,
    "    monitor fail if { nbsrv(be_app) lt 1 }",
    "",
  ];
  for (const port of o.listenPorts) {
    lines.push(
      `frontend fe_${port}`,
      `    bind ${ANCHOR_PLACEHOLDER}:${port}`,
      ...(o.serverName ? [`    http-response set-header X-Served-By ${o.serverName}`] : []),
      "    default_backend be_app",
      "",
    );
  }
  lines.push("backend be_app", "    balance roundrobin");
  o.backends.forEach((b, i) => lines.push(`    server app${i + 1} ${b} check inter 1s fall 2 rise 2`));
  return lines.join("\n") + "\n";
}

/**
 * A POSIX sh script: reads the rendered config on stdin, fills in the anchor IPv4 from the metadata
 * service, validates it with `haproxy -c`, installs it atomically and reloads HAProxy.
 */
export interface HaproxyInstallOptions {
  /** Default METADATA_URL (DigitalOcean's metadata service, agent/ports.ts). */
  metadataUrl?: string;
  /** Default /etc/haproxy/haproxy.cfg. */
  configPath?: string;
  /** Default `systemctl reload-or-restart haproxy` (a graceful reload when HAProxy runs). */
  reloadCommand?: string;
  /** Metadata fetch retries, one second apart (default 10). */
  retries?: number;
}

export function haproxyInstallScript(o: HaproxyInstallOptions = {}): string {
  const md = o.metadataUrl ?? METADATA_URL;
  const cfg = o.configPath ?? "/etc/haproxy/haproxy.cfg";
  const reload = o.reloadCommand ?? "systemctl reload-or-restart haproxy";
  return `set -eu
tmp=$(mktemp "${cfg}.XXXXXX")
trap 'rm -f "$tmp"' EXIT
anchor=$(curl -fsS --retry ${o.retries ?? 10} --retry-delay 1 --retry-connrefused --max-time 3 ${md}/metadata/v1/interfaces/public/0/anchor_ipv4/address || true)
if ! printf '%s' "$anchor" | grep -Eq '^[0-9]{1,3}([.][0-9]{1,3}){3}$'; then
  echo "ha-lb: no anchor IPv4 from the metadata service (${md}), got '$anchor'; refusing to bind HAProxy to anything else" >&2
  exit 1
fi
sed "s/${ANCHOR_PLACEHOLDER}/$anchor/g" > "$tmp"
if ! grep -q "bind $anchor:" "$tmp"; then
  echo "ha-lb: the HAProxy config on stdin has no listener on ${ANCHOR_PLACEHOLDER}; refusing to install it" >&2
  exit 1
fi
haproxy -c -q -f "$tmp"
chmod 644 "$tmp"
mv "$tmp" "${cfg}"
trap - EXIT
${reload}
echo "ha-lb: HAProxy config installed, listeners on $anchor"
`;
}
