/**
 * ha-lb: a highly available HAProxy tier behind one DigitalOcean Reserved IP.
 * Thin on purpose: read and validate config, build the agent bundle, build the components, export
 * the outputs. Everything else lives in components/.
 */
import * as pulumi from "@pulumi/pulumi";
import { buildAcmeBundle, buildAgentBundle } from "./agent/build.js";
import { HaLbCluster, sanitize } from "./components/cluster.js";
import { readStackConfig } from "./components/config.js";

// Validates every ha-lb:* key before any resource is declared (throws StackConfigError: one line per
// bad key). Secrets come back only as secret Outputs.
const { config, secrets, certificates, warnings } = readStackConfig();
// pulumi.log.warn resolves once the engine has the message; nothing waits on it, and it never rejects.
for (const w of warnings) void pulumi.log.warn(w);

// The ACME child is built only when a certificate uses ACME (it carries acme-client, about 1.8 MB).
const cluster = Promise.all([buildAgentBundle(), config.acme.length ? buildAcmeBundle() : undefined]).then(
  ([bundle, acmeBundle]) =>
    new HaLbCluster("ha-lb", {
      config,
      agentToken: secrets.agentToken,
      sshPrivateKey: secrets.sshPrivateKey,
      certificates,
      bundle: { path: bundle.path, sha256: bundle.sha256 },
      ...(acmeBundle ? { acmeBundle: { path: acmeBundle.path, sha256: acmeBundle.sha256 } } : {}),
      prefix: sanitize(pulumi.getStack()),
    }),
);

export const reservedIp = pulumi.output(cluster.then((c) => c.reservedIp));
export const activeColor = config.activeColor;
export const loadBalancers = pulumi.output(cluster.then((c) => c.loadBalancers));
export const witness = pulumi.output(cluster.then((c) => c.witness));
