/**
 * `fipd apply-config`: the one way the stack writes a droplet's configuration and secrets.
 *
 * The Pulumi command pipes a JSON document through SSH stdin (never argv, never userData):
 *   {"config": {...agent config...}, "token": "...", "peerKey": "...", "previousPeerKey": "..."}
 * This validates the config with the same schema the agent uses, writes every file atomically
 * (temp file + rename) with mode 0600, owned by the service user, and then asks a running agent to
 * reload (SIGHUP semantics: the IP is not dropped). A config the agent would reject is refused
 * before anything on disk changes.
 */
import { chownSync, existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import * as v from "valibot";
import { parseAgentConfig } from "./config.js";
import { renderAgentConfig } from "./config-file.js";
import { controlRequest } from "./control.js";
import { check, formatIssues, mustBe, secret, strictObject } from "./schema.js";

const peerKey = secret("a key of at least 32 characters", 32);
const Payload = strictObject({
  config: v.record(v.string(), v.unknown(), mustBe("a mapping (the agent config)")),
  token: v.optional(secret("a DigitalOcean token")),
  peerKey,
  previousPeerKey: v.optional(peerKey),
});

export interface ApplyOptions {
  /** Where the files go (default /etc/fipd). */
  dir: string;
  /** Service user that must own the files (the unit's User=); refused if it does not exist. */
  owner?: string;
  /** Ask the running agent to reload (default true). */
  reload: boolean;
}

function lookupUser(name: string): { uid: number; gid: number } | null {
  try {
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : null;
  } catch {
    return null;
  }
}

function writeAtomic(path: string, content: string, owner: { uid: number; gid: number } | null): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode: 0o600 });
  if (owner) chownSync(tmp, owner.uid, owner.gid);
  renameSync(tmp, path);
}

/** Returns the lines to print; throws with a precise message on bad input. */
export async function applyConfig(stdinText: string, o: ApplyOptions): Promise<string[]> {
  let doc: unknown;
  try {
    doc = JSON.parse(stdinText);
  } catch (e) {
    throw new Error(`stdin is not JSON: ${(e as Error).message}`);
  }
  const p = check(Payload, doc);
  if (!p.ok) throw new Error(`bad apply-config payload:\n  ${formatIssues(p.issues).join("\n  ")}`);
  const files = {
    config: join(o.dir, "fipd.yaml"),
    token: join(o.dir, "token"),
    peerKey: join(o.dir, "peer.key"),
    previousPeerKey: join(o.dir, "peer.key.previous"),
  };
  // Point the config at the files written here, whatever the stack said.
  const raw = { ...p.value.config } as Record<string, unknown>;
  raw.peerAuth = { ...(raw.peerAuth as object), keyFile: files.peerKey, ...(p.value.previousPeerKey ? { previousKeyFile: files.previousPeerKey } : {}) };
  if (!p.value.previousPeerKey) delete (raw.peerAuth as Record<string, unknown>).previousKeyFile;
  raw.api = { ...(raw.api as object), tokenFile: files.token };
  const cfg = parseAgentConfig(raw, "apply-config payload");
  const self = cfg.members.find((m) => m.id === cfg.nodeId)!;
  if (self.role === "lb" && !p.value.token) throw new Error("token: required for a load-balancer node");

  const owner = o.owner ? lookupUser(o.owner) : null;
  // Files owned by root would be unreadable to the agent (its unit runs as this user): it would
  // refuse to start or to reload. Refuse here instead, before anything on disk changes.
  if (o.owner && !owner) {
    throw new Error(
      `--owner ${o.owner}: no such user on this host. The agent runs as this user and could not read files owned by root. The droplet's cloud-init creates it; by hand: useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin ${o.owner}`,
    );
  }
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  // Secrets first, config last: an agent reloading mid-way never sees a config naming a missing file.
  if (p.value.token) writeAtomic(files.token, p.value.token + "\n", owner);
  writeAtomic(files.peerKey, p.value.peerKey + "\n", owner);
  if (p.value.previousPeerKey) writeAtomic(files.previousPeerKey, p.value.previousPeerKey + "\n", owner);
  writeAtomic(files.config, renderAgentConfig(raw), owner);
  const out = [`wrote ${files.config} (node ${cfg.nodeId}, membership v${cfg.membershipVersion}, active color ${cfg.activeColor})`];

  if (o.reload && existsSync(cfg.controlSocket)) {
    try {
      const r = (await controlRequest(cfg.controlSocket, { cmd: "reload" }, { timeoutMs: 10_000 })) as { ok: boolean; error?: string };
      if (!r.ok) throw new Error(`the running agent refused the new configuration: ${r.error}`);
      out.push("running agent reloaded the configuration");
    } catch (e) {
      if ((e as Error).message.startsWith("the running agent refused")) throw e;
      out.push(`agent not reachable on ${cfg.controlSocket} (${(e as Error).message}); it will read the files when it starts`);
    }
  }
  return out;
}
