/**
 * fipd: the failover agent's command line.
 *
 *   fipd run [--config FILE]              run the agent (systemd starts this)
 *   fipd check-config [FILE] [--schema-only]
 *   fipd status [--json] [--wait-healthy [--timeout S]]
 *   fipd handover [--to NODE | --prefer-build ID]
 *   fipd maintenance on|off
 *   fipd reload                            same as SIGHUP
 *   fipd version
 *
 * Exit codes: 0 ok, 1 failure (unhealthy, refused), 2 bad usage or bad configuration.
 */
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { ConfigError, type AgentConfig } from "./config.js";
import { loadAgentConfigFile } from "./config-file.js";
import { runAgent, runningBuild } from "./run.js";
import { BUILD_ID } from "./build-id.js";
import { controlRequest } from "./control.js";
import { readIdentityKeys, readSecretFile, redactDeep } from "./secrets.js";
import { formatStatus, isClusterHealthy, type AgentStatus } from "./status-format.js";
import { printable } from "./schema.js";
import { MAX_PAYLOAD_BYTES, applyConfig } from "./apply-config.js";
import type { StatusReport } from "./controller.js";
import { majorityOf } from "./election/quorum.js";

declare const FIPD_VERSION: string | undefined;
export const VERSION = typeof FIPD_VERSION === "string" ? FIPD_VERSION : "dev";

// FIPD_CONFIG: for layouts other than the droplet's (the network test bed runs several agents on one host).
const DEFAULT_CONFIG = process.env.FIPD_CONFIG || "/etc/fipd/fipd.yaml";
const USAGE = `usage: fipd <command> [options]

commands:
  run [--config FILE]                 run the agent
  check-config [FILE] [--schema-only] validate a config file (and its token and key files)
  status [--json] [--wait-healthy] [--timeout SECONDS]
                                      show this node's view; --wait-healthy waits until a leader of the
                                      color in force holds the IP with a majority connected
  handover [--to NODE]                hand leadership (and the IP) to another node
    --prefer-build ID                 (rolling upgrades) prefer a node already running this build
                                      (16 hex digits of the bundle's SHA-256; fipd status shows builds)
  maintenance on|off                  leave or rejoin eligibility (hands over first if leading)
  reload                              re-read config, token and keys (same as SIGHUP)
  apply-config [--dir DIR] [--owner USER] [--no-reload]
                                      write config and secrets from a JSON document on stdin (used by
                                      the Pulumi stack over SSH), then reload the running agent: all
                                      or nothing, validated first, restored if the agent refuses
  version

common options: --config FILE (default $FIPD_CONFIG or /etc/fipd/fipd.yaml), --socket PATH (default: controlSocket from the config)`;

class UsageError extends Error {}

function fail(code: number, msg: string): never {
  process.stderr.write(msg.endsWith("\n") ? msg : msg + "\n");
  process.exit(code);
}

function socketPath(values: { socket?: string; config?: string }): string {
  if (values.socket) return values.socket;
  const file = values.config ?? DEFAULT_CONFIG;
  if (!existsSync(file)) return "/run/fipd/fipd.sock";
  return loadAgentConfigFile(file).controlSocket;
}

async function request(values: { socket?: string; config?: string }, req: Parameters<typeof controlRequest>[1], timeoutMs = 5_000) {
  const path = socketPath(values);
  try {
    const res = (await controlRequest(path, req, { timeoutMs })) as { error?: string };
    if (res && typeof res === "object" && "error" in res && res.error) fail(1, `fipd: ${res.error}`);
    return res;
  } catch (e) {
    fail(1, `fipd: cannot reach the agent on ${path}: ${(e as Error).message}\n(is fipd running? try: systemctl status fipd)`);
  }
}

/** check-config: every problem, one per line; exit 2 if any. */
function checkConfig(file: string, schemaOnly: boolean): number {
  let cfg: AgentConfig;
  try {
    cfg = loadAgentConfigFile(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + "\n");
      return 2;
    }
    throw e;
  }
  const problems: string[] = [];
  if (!schemaOnly) {
    try {
      readIdentityKeys(cfg);
    } catch (e) {
      problems.push(`peerAuth: ${(e as Error).message}`);
    }
    const self = cfg.members.find((m) => m.id === cfg.nodeId)!;
    if (self.role === "lb") {
      try {
        readSecretFile(cfg.api.tokenFile, "token");
      } catch (e) {
        problems.push(`api.tokenFile: ${(e as Error).message}`);
      }
    }
  }
  if (problems.length) {
    process.stderr.write(`invalid configuration in ${file}:\n  ${problems.join("\n  ")}\n`);
    return 2;
  }
  const self = cfg.members.find((m) => m.id === cfg.nodeId)!;
  const voters = cfg.members.length;
  process.stdout.write(
    `${file}: ok (node ${cfg.nodeId}, ${self.role}${self.color ? " " + self.color : ""}, ${voters} voters, majority ${majorityOf(voters)}, active color ${cfg.activeColor})\n`,
  );
  return 0;
}

async function waitHealthy(values: { socket?: string; config?: string; json?: boolean }, timeoutS: number): Promise<number> {
  const until = Date.now() + timeoutS * 1000;
  let last: AgentStatus | undefined;
  let why = "no answer yet";
  while (Date.now() < until) {
    try {
      last = (await controlRequest(socketPath(values), { cmd: "status" }, { timeoutMs: 2_000 })) as AgentStatus;
      const verdict = isClusterHealthy(last);
      if (verdict.ok) {
        if (verdict.note) process.stdout.write(`${verdict.note}\n`);
        process.stdout.write(values.json ? JSON.stringify(redactDeep(last), null, 2) + "\n" : formatStatus(last));
        return 0;
      }
      why = verdict.why;
    } catch (e) {
      why = `agent not answering: ${(e as Error).message}`;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  process.stderr.write(`fipd: the cluster did not become healthy within ${timeoutS} s: ${why}\n`);
  if (last) process.stderr.write(formatStatus(last));
  return 1;
}

/**
 * `--timeout -1` as `--timeout=-1`: parseArgs refuses an option value that starts with a dash as
 * "ambiguous"; for what reads as a negative number, the option's own check says what is wrong.
 */
function joinNegativeNumbers(args: string[], valued: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (valued.has(args[i]) && /^-[\d.]/.test(args[i + 1] ?? "")) out.push(`${args[i]}=${args[++i]}`);
    else out.push(args[i]);
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const options = {
    config: { type: "string", short: "c" },
    socket: { type: "string" },
    json: { type: "boolean" },
    "wait-healthy": { type: "boolean" },
    timeout: { type: "string" },
    to: { type: "string" },
    "prefer-build": { type: "string" },
    "schema-only": { type: "boolean" },
    dir: { type: "string" },
    owner: { type: "string" },
    "no-reload": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  } as const;
  const valued = new Set(Object.entries(options).flatMap(([name, o]) => (o.type === "string" ? [`--${name}`] : [])));
  const { values, positionals } = parseArgs({ args: joinNegativeNumbers(rest, valued), allowPositionals: true, options });
  if (values.help || !cmd || cmd === "help" || cmd === "--help" || cmd === "-h") {
    process.stdout.write(USAGE + "\n");
    return cmd ? 0 : 2;
  }
  switch (cmd) {
    case "version":
    case "--version":
      process.stdout.write(`fipd ${VERSION}\n`);
      return 0;
    case "check-config":
      return checkConfig(positionals[0] ?? values.config ?? DEFAULT_CONFIG, values["schema-only"] === true);
    case "run":
      return runAgent(values.config ?? DEFAULT_CONFIG);
    case "status": {
      if (values.timeout !== undefined && !values["wait-healthy"]) throw new UsageError("--timeout applies only with --wait-healthy");
      if (values["wait-healthy"]) {
        const t = Number(values.timeout ?? "120");
        if (!Number.isFinite(t) || t <= 0)
          throw new UsageError(`--timeout: expected a positive number of seconds, got ${values.timeout ? printable(values.timeout, 40) : "nothing"}`);
        return waitHealthy(values, t);
      }
      const st = (await request(values, { cmd: "status" })) as StatusReport;
      process.stdout.write(values.json ? JSON.stringify(redactDeep(st), null, 2) + "\n" : formatStatus(st));
      return 0;
    }
    case "handover": {
      const prefer = values["prefer-build"];
      if (prefer !== undefined && !BUILD_ID.test(prefer))
        throw new UsageError(`--prefer-build takes a build id of 16 lowercase hex digits (the start of the bundle's SHA-256), got "${prefer}"`);
      if (prefer !== undefined && values.to !== undefined) throw new UsageError("--to and --prefer-build exclude each other: --to names the successor");
      const res = await request(values, { cmd: "handover", to: values.to, preferBuild: prefer }, 15_000);
      process.stdout.write(JSON.stringify(res) + "\n");
      return 0;
    }
    case "maintenance": {
      const arg = positionals[0];
      if (arg !== "on" && arg !== "off") throw new UsageError(`maintenance takes "on" or "off", got ${arg === undefined ? "nothing" : `"${arg}"`}`);
      const res = await request(values, { cmd: "maintenance", on: arg === "on" }, 15_000);
      process.stdout.write(JSON.stringify(res) + "\n");
      return 0;
    }
    case "apply-config": {
      const chunks: Buffer[] = [];
      let bytes = 0;
      for await (const c of process.stdin) {
        chunks.push(c as Buffer);
        bytes += (c as Buffer).length;
        // Read one byte past the limit at most: applyConfig refuses it with the reason.
        if (bytes > MAX_PAYLOAD_BYTES) break;
      }
      try {
        const lines = await applyConfig(Buffer.concat(chunks).toString("utf8"), {
          dir: values.dir ?? "/etc/fipd",
          owner: values.owner ?? "fipd",
          reload: values["no-reload"] !== true,
          build: runningBuild(),
        });
        process.stdout.write(lines.join("\n") + "\n");
        return 0;
      } catch (e) {
        process.stderr.write(`fipd apply-config: ${(e as Error).message}\n`);
        return 2;
      }
    }
    case "reload": {
      const res = (await request(values, { cmd: "reload" })) as { ok?: boolean; error?: string };
      process.stdout.write(JSON.stringify(res) + "\n");
      // A refused config keeps the agent running on the old one: say so, and fail, so scripts notice.
      if (res.ok === false) {
        process.stderr.write(`fipd reload: refused, still running the previous configuration: ${res.error ?? "no reason given"}\n`);
        return 1;
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${cmd}"`);
  }
}

/** Entry point used by the bundle (agent/main.ts). */
export function runCli(argv: string[]): void {
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) fail(2, `fipd: ${(e as Error).message}\n\n${USAGE}`);
      if (e instanceof ConfigError) fail(2, e.message);
      fail(1, `fipd: ${(e as Error).stack ?? e}`);
    },
  );
}
