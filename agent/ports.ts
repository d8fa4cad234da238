/**
 * The one home of the ports and fixed local addresses the tier uses. The agent's config defaults
 * (agent/config.ts), the stack (firewalls, the HAProxy config, the per-droplet plan), the test bed
 * and the benchmarks all import them from here, so a port changed here changes everywhere at once.
 *
 * It lives in agent/ because the agent bundle needs it and must never import `@pulumi/*`; it holds
 * constants only (no I/O).
 */

/** SSH: how `pulumi up` reaches the droplets. Opened by the firewalls to `adminCidrs` only. */
export const SSH_PORT = 22;

/** The peer transport (UDP): heartbeats, votes and status between the agents. Opened by the firewalls to the cluster and the witness only. */
export const PEER_PORT = 7946;

/** The agent's Prometheus endpoint (TCP). Opened by the firewalls to `metricsCidrs` only. */
export const METRICS_PORT = 9465;

/** HAProxy's health frontend for fipd (TCP, loopback only): 200 while a backend is up, 503 otherwise. */
export const HAPROXY_HEALTH_PORT = 8405;
/** HAProxy's own Prometheus exporter (TCP): loopback, or every address with the firewall open to `metricsCidrs` only. */
export const HAPROXY_METRICS_PORT = 8404;
/** The path HAProxy answers health on (`monitor-uri`). */
export const HAPROXY_HEALTH_PATH = "/healthz";

/** Loopback: where what only this droplet may reach listens (metrics by default, HAProxy's health). */
export const LOOPBACK_IPV4 = "127.0.0.1";
/** Every local IPv4 address: what a listener binds when peers or scrapers reach it from elsewhere. */
export const ANY_IPV4 = "0.0.0.0";

/** DigitalOcean's metadata service (HTTP, link-local, no token): who am I, which Reserved IP is here, my anchor address. */
export const METADATA_IPV4 = "169.254.169.254";
export const METADATA_URL = `http://${METADATA_IPV4}`;

/** The URL the agent polls for the local HAProxy's health. */
export const HAPROXY_HEALTH_URL = `http://${LOOPBACK_IPV4}:${HAPROXY_HEALTH_PORT}${HAPROXY_HEALTH_PATH}`;

/** fipd's HTTP-01 responder (TCP, loopback only): every http frontend routes ACME_CHALLENGE_PREFIX here (backend be_acme). */
export const ACME_RESPONDER_PORT = 8406;
/** The path prefix of ACME HTTP-01 validation requests (RFC 8555 §8.3); the token follows it. */
export const ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/";
