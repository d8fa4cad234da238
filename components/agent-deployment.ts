import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentConfigInput } from "../agent/config.js";
import { haproxyInstallScript, renderHaproxyConfig } from "./haproxy.js";
import { UNIT_PATH, applyConfigScript, bundlePath, retireScript, rolloutScript, waitForBootstrapScript } from "./scripts.js";

export interface AgentDeploymentArgs {
  role: "lb" | "witness";
  host: pulumi.Input<string>;
  privateKey: pulumi.Input<string>;
  /** Changes when the droplet is replaced: commands then run again on the new one. */
  dropletId: pulumi.Input<string>;
  bundle: { path: string; sha256: string };
  /** The agent config for this node (no secrets in it). */
  agentConfig: pulumi.Input<AgentConfigInput>;
  /** Secrets: reach the droplet only on command stdin, into 0600 files. */
  token?: pulumi.Input<string>;
  peerKey: pulumi.Input<string>;
  previousPeerKey?: pulumi.Input<string>;
  haproxy?: { listenPorts: number[]; backends: string[]; serverName: string };
  /** The previous node's rollout: bundles roll one droplet at a time. */
  after?: pulumi.Resource;
}

const UNIT = () => readFileSync(join(__dirname, "assets", "fipd.service"), "utf8");

/**
 * Ships and runs fipd on one droplet: bundle and unit by CopyToRemote; HAProxy config and agent
 * config by command stdin (a change reloads, never restarts); a new bundle restarts the agent (which
 * hands over first) and waits until the cluster is healthy before the next droplet's turn.
 */
export class AgentDeployment extends pulumi.ComponentResource {
  readonly rollout: command.remote.Command;
  readonly applyConfig: command.remote.Command;

  constructor(name: string, a: AgentDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:AgentDeployment", name, {}, opts);
    const connection = { host: a.host, user: "root", privateKey: a.privateKey, dialErrorLimit: 60 };
    const p = { parent: this };
    const sha = a.bundle.sha256;

    const bootstrap = new command.remote.Command(`${name}-bootstrap`, { connection, create: waitForBootstrapScript(), triggers: [a.dropletId] }, p);
    const copyBundle = new command.remote.CopyToRemote(`${name}-bundle`, { connection, source: new pulumi.asset.FileAsset(a.bundle.path), remotePath: bundlePath(sha), triggers: [sha, a.dropletId] }, { ...p, dependsOn: [bootstrap] });
    const copyUnit = new command.remote.CopyToRemote(`${name}-unit`, { connection, source: new pulumi.asset.StringAsset(UNIT()), remotePath: UNIT_PATH, triggers: [a.dropletId] }, { ...p, dependsOn: [bootstrap] });

    const deps: pulumi.Resource[] = [copyBundle, copyUnit];
    if (a.haproxy) {
      deps.push(
        new command.remote.Command(
          `${name}-haproxy`,
          { connection, create: haproxyInstallScript(), stdin: renderHaproxyConfig(a.haproxy), triggers: [a.dropletId] },
          { ...p, dependsOn: [bootstrap] },
        ),
      );
    }

    const payload = pulumi
      .all([a.agentConfig, a.token, a.peerKey, a.previousPeerKey])
      .apply(([config, token, peerKey, previousPeerKey]) => JSON.stringify({ config, ...(token ? { token } : {}), peerKey, ...(previousPeerKey ? { previousPeerKey } : {}) }));
    this.applyConfig = new command.remote.Command(
      `${name}-config`,
      // stdin is secret: encrypted in state, masked in diffs, never in the command line or logs.
      { connection, create: applyConfigScript(sha), stdin: pulumi.secret(payload), triggers: [a.dropletId], logging: "stderr" },
      { ...p, dependsOn: [copyBundle] },
    );

    this.rollout = new command.remote.Command(
      `${name}-rollout`,
      { connection, create: rolloutScript(sha), triggers: [sha, a.dropletId] },
      { ...p, dependsOn: [...deps, this.applyConfig, ...(a.after ? [a.after] : [])] },
    );

    // Runs only when this droplet goes away (scale-down, replacement, destroy), before it is deleted:
    // the agent leaves eligibility and hands the IP over first.
    new command.remote.Command(`${name}-retire`, { connection, create: "true", delete: retireScript(), triggers: [a.dropletId] }, { ...p, dependsOn: [this.rollout] });

    this.registerOutputs({});
  }
}
