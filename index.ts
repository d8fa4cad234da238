/**
 * ha-lb: a highly available HAProxy tier behind one DigitalOcean Reserved IP.
 * Thin on purpose: read and validate config, build the bundle, build the components, export outputs.
 */
import * as pulumi from "@pulumi/pulumi";
import { buildAgentBundle } from "./agent/build.js";
import { HaLbCluster, sanitize } from "./components/cluster.js";
import { parseStackConfig, readRawConfig } from "./components/config.js";

const cfg = new pulumi.Config("ha-lb");
// Validate everything before declaring any resource. Secrets are read raw only to validate them; the
// resources get them as secret Outputs.
const { config, warnings } = parseStackConfig(readRawConfig((key) => pulumi.runtime.getConfig(`ha-lb:${key}`)));
for (const w of warnings) pulumi.log.warn(w);

const bundle = buildAgentBundle();
const cluster = bundle.then(
  (b) =>
    new HaLbCluster("ha-lb", {
      config,
      agentToken: cfg.requireSecret("agentToken"),
      sshPrivateKey: cfg.requireSecret("sshPrivateKey"),
      peerKeyGeneration: cfg.getNumber("peerKeyGeneration") ?? 1,
      bundle: { path: b.path, sha256: b.sha256 },
      prefix: sanitize(pulumi.getStack()),
    }),
);

export const reservedIp = pulumi.output(cluster.then((c) => c.reservedIp));
export const activeColor = config.activeColor;
export const loadBalancers = pulumi.output(cluster.then((c) => c.loadBalancers));
export const witness = pulumi.output(cluster.then((c) => c.witness));
