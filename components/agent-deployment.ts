import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentConfigInput } from "../agent/config.js";
import {
  ACME_INSTALL_DEFAULTS,
  acmeInstallScript,
  certificateFiles,
  haproxyBundle,
  haproxyInstallScript,
  renderHaproxyConfig,
  type HaproxyOptions,
} from "./haproxy.js";
import type { PemCertificate } from "./lb-config.js";
import { acmePayload, type AcmeShipment } from "./plan.js";
import {
  UNIT_PATH,
  acmeChildPath,
  applyConfigCommand,
  bundlePath,
  deleteScript,
  installAcmeUnitsScript,
  leaderRestartScript,
  rollingRestartScript,
  waitForBootstrapScript,
} from "./scripts.js";

export interface AgentDeploymentArgs {
  readonly role: "lb" | "witness";
  /** The droplet's public address (SSH). */
  readonly host: pulumi.Input<string>;
  /** Secret: the SSH key the commands connect with. */
  readonly privateKey: pulumi.Input<string>;
  /** The droplet's SSH host public key (authorized_keys form, host-key.ts): every connection pins it. */
  readonly hostKey: pulumi.Input<string>;
  /** Changes when the droplet is replaced: every command then runs again on the new one. */
  readonly dropletId: pulumi.Input<string>;
  /** The bundle built by agent/build.ts; deployed under its content hash. */
  readonly bundle: { path: string; sha256: string };
  /** The ACME child bundle (LBs of a stack with ACME certificates), copied beside the agent's. */
  readonly acmeBundle?: { path: string; sha256: string };
  /** The agent config for this node (no secrets in it). */
  readonly agentConfig: pulumi.Input<AgentConfigInput>;
  /** Secrets: reach the droplet only on command stdin, into 0600 files. Absent (or undefined): not shipped. */
  readonly token?: pulumi.Input<string | undefined>;
  /** This droplet's own identity private key (PEM), and its previous one during a key roll: never another droplet's. */
  readonly identityKey: pulumi.Input<string>;
  readonly previousIdentityKey?: pulumi.Input<string | undefined>;
  /** What the HAProxy config is rendered from (LBs only). */
  readonly haproxy?: pulumi.Input<HaproxyOptions>;
  /** Secret: the certificates and keys HAProxy serves (LBs only; an ACME certificate's placeholder until fipd has it issued); shipped with the config on secret stdin. */
  readonly certificates?: pulumi.Input<Record<string, PemCertificate>>;
  /** Secret: the ACME keys (and EAB HMAC keys) of this LB, resolved; shipped on apply-config's stdin. */
  readonly acme?: pulumi.Input<AcmeShipment<string>[] | undefined>;
  /** The previous droplet's restart: bundles roll one droplet at a time. */
  readonly after?: pulumi.Resource;
  /**
   * The previous droplet's config step. A reload that cannot apply a key restarts the agent in that
   * step (applyConfigCommand), so config steps run one droplet at a time as restarts do: in parallel,
   * every agent of the cluster could restart at once, and the cluster would lose its majority.
   */
  readonly configAfter?: pulumi.Resource;
  /** Seconds a restarted agent has to see the cluster healthy again before the deploy fails. */
  readonly healthyTimeoutS?: number;
}

/**
 * How many failed dials a droplet's commands retry. A fresh droplet may take a while to answer SSH,
 * and then to present its pinned host key: cloud-init installs it first thing in userData, and
 * until then a dial sees the image's key and fails. @pulumi/command 1.2.1 retries every dial error
 * (connection.go dialWithRetry; the SDK's retry.Until: 100 ms, x1.5, at most 5 s apart), so a fast
 * failure (refused, wrong host key) is retried for about 10 minutes; a dial that times out takes
 * its 15 s (perDialTimeout) each time.
 */
export const DIAL_ERROR_LIMIT = 120;

export const UNIT_TEXT = () => readFileSync(join(__dirname, "assets", "fipd.service"), "utf8");
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/**
 * Ships and runs fipd on one droplet.
 * - bundle (by content hash) and systemd unit: CopyToRemote;
 * - HAProxy config: stdin of a Command whose `create` re-runs when the config changes (no `update`
 *   and stable `triggers`, so it is an in-place re-run, i.e. a graceful reload, not a replace);
 * - agent config and secrets: secret stdin into `fipd apply-config`, which reloads a running agent
 *   (SIGHUP semantics) — how `activeColor` or a token rotation arrives; never a restart;
 * - a new bundle or unit: the restart Command, whose triggers are the bundle and unit hashes, runs
 *   rollingRestartScript after the previous droplet's restart (`after`), so droplets roll one by one;
 *   the leader waits for the second pass (addLeaderRestart: leaderRestartScript, after every first
 *   pass), so it hands over once, to a droplet already on the new bundle;
 * - before the droplet goes away: deleteScript (hand over, maintenance, stop).
 */
export class AgentDeployment extends pulumi.ComponentResource {
  readonly restart: command.remote.Command;
  private readonly secondPass: { name: string; create: string; connection: command.types.input.remote.ConnectionArgs; triggers: pulumi.Input<string>[] };
  readonly applyConfig: command.remote.Command;
  readonly haproxy?: command.remote.Command;
  /** What the restart waits for besides this droplet's own setup (the rolling chain). */
  readonly restartAfter?: pulumi.Resource;

  constructor(name: string, a: AgentDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:AgentDeployment", name, {}, opts);
    const connection = { host: a.host, user: "root", privateKey: pulumi.secret(a.privateKey), hostKey: a.hostKey, dialErrorLimit: DIAL_ERROR_LIMIT };
    const p = { parent: this };
    const sha = a.bundle.sha256;
    const unit = UNIT_TEXT();

    const bootstrap = new command.remote.Command(`${name}-bootstrap`, { connection, create: waitForBootstrapScript(), triggers: [a.dropletId] }, p);
    const copyBundle = new command.remote.CopyToRemote(
      `${name}-bundle`,
      { connection, source: new pulumi.asset.FileAsset(a.bundle.path), remotePath: bundlePath(sha), triggers: [sha, a.dropletId] },
      { ...p, dependsOn: [bootstrap] },
    );
    const copyUnit = new command.remote.CopyToRemote(
      `${name}-unit`,
      { connection, source: new pulumi.asset.StringAsset(unit), remotePath: UNIT_PATH, triggers: [sha256(unit), a.dropletId] },
      { ...p, dependsOn: [bootstrap] },
    );

    const setup: pulumi.Resource[] = [copyBundle, copyUnit];
    if (a.haproxy) {
      this.haproxy = new command.remote.Command(
        `${name}-haproxy`,
        {
          connection,
          create: haproxyInstallScript(),
          // The config and the certificate files (keys included): secret stdin, never logged.
          stdin: pulumi.secret(
            pulumi.all([a.haproxy, a.certificates ?? {}]).apply(([h, certs]) => haproxyBundle(renderHaproxyConfig(h), certificateFiles(certs, h.pools))),
          ),
          triggers: [a.dropletId],
          logging: "none",
        },
        { ...p, dependsOn: [bootstrap], additionalSecretOutputs: ["stdout", "stderr"] },
      );
      setup.push(this.haproxy);
      if (a.acmeBundle) {
        setup.push(
          new command.remote.CopyToRemote(
            `${name}-acme-bundle`,
            {
              connection,
              source: new pulumi.asset.FileAsset(a.acmeBundle.path),
              remotePath: acmeChildPath(),
              triggers: [a.acmeBundle.sha256, a.dropletId],
            },
            { ...p, dependsOn: [bootstrap] },
          ),
        );
      }
      // The root-run units that put certificates fipd obtains over ACME into HAProxy (fipd cannot).
      // Not in cloud-init: a userData change would replace every droplet. A changed script re-runs this in place.
      setup.push(
        new command.remote.Command(
          `${name}-acme-units`,
          { connection, create: installAcmeUnitsScript(acmeInstallScript(), ACME_INSTALL_DEFAULTS.stateDir), triggers: [a.dropletId] },
          { ...p, dependsOn: [bootstrap] },
        ),
      );
    }

    const payload = pulumi
      .all([a.agentConfig, a.token, a.identityKey, a.previousIdentityKey, a.acme])
      .apply(([config, token, identityKey, previousIdentityKey, acme]) =>
        JSON.stringify({
          config,
          ...(token ? { token } : {}),
          identityKey,
          ...(previousIdentityKey ? { previousIdentityKey } : {}),
          ...(acme?.length ? { acme: acmePayload(acme) } : {}),
        }),
      );
    this.applyConfig = new command.remote.Command(
      `${name}-config`,
      {
        connection,
        create: applyConfigCommand(sha),
        // Secret stdin: encrypted in state, masked in diffs, never in the command line or the logs.
        stdin: pulumi.secret(payload),
        triggers: [a.dropletId],
        logging: "none",
      },
      // apply-config prints no secret, but keep whatever it prints out of plaintext state anyway.
      { ...p, dependsOn: [copyBundle, ...(a.configAfter ? [a.configAfter] : [])], additionalSecretOutputs: ["stdout", "stderr"] },
    );

    this.restartAfter = a.after;
    const triggers = [sha, sha256(unit), a.dropletId];
    this.secondPass = { name: `${name}-leader-restart`, create: leaderRestartScript(sha, a.healthyTimeoutS ?? 120), connection, triggers };
    this.restart = new command.remote.Command(
      `${name}-restart`,
      { connection, create: rollingRestartScript(sha, a.healthyTimeoutS ?? 120), triggers },
      { ...p, dependsOn: [...setup, this.applyConfig, ...(a.after ? [a.after] : [])] },
    );

    // Runs only when this droplet goes away (scale-down, replacement, destroy), before the droplet is
    // deleted (it depends on the droplet through its connection): the agent hands the IP over first.
    new command.remote.Command(
      `${name}-retire`,
      { connection, create: "true", delete: deleteScript(), triggers: [a.dropletId] },
      { ...p, dependsOn: [this.restart] },
    );

    this.registerOutputs({});
  }

  /**
   * The second pass of a bundle roll (leaderRestartScript): restarts the agent the first pass
   * deferred because it led. `after`: every droplet's first pass, or the previous second pass.
   */
  addLeaderRestart(after: pulumi.Resource): command.remote.Command {
    const { name, create, connection, triggers } = this.secondPass;
    return new command.remote.Command(name, { connection, create, triggers }, { parent: this, dependsOn: [after] });
  }
}
