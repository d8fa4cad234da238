/**
 * `fipd apply-config`: the one way the stack writes a droplet's configuration and secrets.
 *
 * The Pulumi command pipes a JSON document through SSH stdin (never argv, never userData):
 *   {"config": {...agent config...}, "token": "...", "identityKey": "<PEM>", "previousIdentityKey": "<PEM>",
 *    "acme": {"<name>": {"accountKey": "<PEM>", "key": "<PEM>", "eabHmacKey": "...", "directoryCaPem": "<PEM>"}}}
 * `identityKey` is this droplet's own Ed25519 private key (agent/identity.ts), and only its own: the
 * config lists every member's public key (peerAuth.publicKeys), and the key sent must match this
 * node's entry there, or nothing is written.
 * `acme` (LBs with ACME certificates only) holds the keys the stack made for each certificate named
 * in config.acme; they go to <dir>/acme/<name>.account.key, .key and .eab, 0640 root:<service
 * group> (fipd reads them; it cannot change them; the root-run install reads <name>.key), and the
 * directory's CA, public, to <name>.directory-ca.pem. Files of names no longer configured go.
 * What it guarantees:
 * - validated before written: the config (as the YAML text it will write), the token and the keys
 *   go through the parsers `fipd run` loads them with; any problem refuses the whole payload, one
 *   line per problem, and nothing on disk changes;
 * - all or nothing: the files are installed as one set by agent/safe-write.ts (secrets 0600 owned by
 *   the service user, which the agent requires; the config 0640 root:<its group>, so the agent
 *   cannot change what it is told), in a root-owned directory, never through a link;
 * - a running agent is asked to reload (SIGHUP semantics: the IP is not dropped); if it refuses the
 *   new set, the previous files are put back and the command fails with the agent's reason, so the
 *   next start reads a set the agent accepted. One exception, a bundle upgrade across a config
 *   format change: an agent of another build whose parser refuses the new file (it predates keys
 *   this build writes, e.g. the shared-key build and peerAuth.publicKeys) keeps running on what it
 *   loaded, and the new files stay: they are this build's, and the same deploy restarts that agent
 *   on this build (components/scripts.ts). Restoring them would fail the deploy for good.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "./config.js";
import { parseAgentConfigText, parseConfigText, renderAgentConfig } from "./config-file.js";
import { controlRequest } from "./control.js";
import { ensureSecureDirectory, installFileSet, lookupUser, type FileChange } from "./safe-write.js";
import { membershipRefusal, type MembershipView } from "./membership.js";
import { printable } from "./schema.js";
import { parseEabHmacKey, parsePrivateKeyPem, parseSecret } from "./secrets.js";
import { parsePrivateKey, parsePublicKey } from "./identity.js";
import { BUILD_ID } from "./build-id.js";

/** The payload is a config and three short secrets; anything near this size is not one. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
/** How long a running agent may take to answer a reload. */
const RELOAD_TIMEOUT_MS = 10_000;
const WHERE = "sent to apply-config";
const FIELDS = ["config", "token", "identityKey", "previousIdentityKey", "acme"] as const;
/** The shared-key files of builds before per-member identities: removed with the first identity set. */
const LEGACY_FILES = ["peer.key", "peer.key.previous"];
const ACME_FIELDS = ["accountKey", "key", "eabHmacKey", "directoryCaPem"] as const;
/** The files of one ACME certificate under <dir>/acme, by what they hold. */
const ACME_FILE_SUFFIXES = { accountKey: ".account.key", key: ".key", eabHmacKey: ".eab", directoryCaPem: ".directory-ca.pem" } as const;
/** At most this many ACME certificates (the stack allows 100 certificates in all). */
const MAX_ACME_CERTIFICATES = 100;

interface AcmeFiles {
  accountKey: string;
  key: string;
  eabHmacKey: string | null;
  directoryCaPem: string | null;
}

export interface ApplyOptions {
  /** Where the files go (default /etc/fipd). Must be root-owned and not writable by others; created 0755 if missing. */
  dir: string;
  /** Service user (the unit's User=) that must be able to read the files; refused if it does not exist. */
  owner?: string;
  /** Ask the running agent to reload (default true). */
  reload: boolean;
  /** The build id of the bundle running apply-config (the one the deploy is about to run); null when unknown. */
  build?: string | null;
}

/** The running agent answered a reload with a refusal: its reason, verbatim. */
class ReloadRefused extends Error {}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

interface Validated {
  files: { config: string; token: string; identityKey: string; previousIdentityKey: string };
  configText: string;
  nodeId: string;
  membership: MembershipView;
  summary: string;
  controlSocket: string;
  token: string | null;
  identityKey: string;
  previousIdentityKey: string | null;
  /** Per ACME certificate name, what to write under <dir>/acme. */
  acme: Map<string, AcmeFiles>;
}

/** Every problem with the payload, one line each (empty when it is good), and the validated values. */
function validate(doc: unknown, dir: string): { problems: string[]; ok?: Validated } {
  if (!isRecord(doc)) return { problems: ["(root): expected a JSON object with config, identityKey and optionally token and previousIdentityKey"] };
  const problems: string[] = [];
  for (const k of Object.keys(doc)) {
    if (!(FIELDS as readonly string[]).includes(k)) problems.push(`${k}: unknown field (expected ${FIELDS.join(", ")})`);
  }
  const str = (k: (typeof FIELDS)[number], required: boolean): string | undefined => {
    const v = doc[k];
    if (v === undefined && !required) return undefined;
    if (typeof v !== "string") problems.push(`${k}: ${v === undefined ? "required, " : ""}expected a string, got ${v === undefined ? "nothing" : typeof v}`);
    return typeof v === "string" ? v : undefined;
  };
  const secret = <T>(k: "token" | "identityKey" | "previousIdentityKey", parse: (text: string) => T): T | undefined => {
    const text = str(k, k === "identityKey");
    if (text === undefined) return undefined;
    try {
      return parse(text);
    } catch (e) {
      problems.push(`${k}: ${(e as Error).message}`);
      return undefined;
    }
  };
  const token = secret("token", (t) => parseSecret(t, "token", WHERE));
  // The key is written as sent (trimmed): the agent parses the file with the same function.
  const key = (t: string) => ({ text: t.trim(), id: parsePrivateKey(t, WHERE) });
  const identityKey = secret("identityKey", key);
  const previousIdentityKey = secret("previousIdentityKey", key);

  const acmeDir = join(dir, "acme");
  const acme = new Map<string, AcmeFiles>();
  const acmeSent = doc.acme === undefined ? {} : isRecord(doc.acme) ? doc.acme : null;
  if (acmeSent === null) problems.push("acme: expected an object: per ACME certificate name, its accountKey, key and optionally eabHmacKey and directoryCaPem");
  else if (Object.keys(acmeSent).length > MAX_ACME_CERTIFICATES)
    problems.push(`acme: holds ${Object.keys(acmeSent).length} certificates; at most ${MAX_ACME_CERTIFICATES}`);
  else {
    for (const [name, entry] of Object.entries(acmeSent)) {
      const at = `acme.${printable(name, 100)}`;
      if (!isRecord(entry)) {
        problems.push(`${at}: expected an object with accountKey, key and optionally eabHmacKey and directoryCaPem`);
        continue;
      }
      for (const k of Object.keys(entry))
        if (!(ACME_FIELDS as readonly string[]).includes(k)) problems.push(`${at}.${printable(k, 40)}: unknown field (expected ${ACME_FIELDS.join(", ")})`);
      const field = <T>(k: (typeof ACME_FIELDS)[number], required: boolean, parse: (text: string) => T): T | null => {
        const v = entry[k];
        if (v === undefined && !required) return null;
        if (typeof v !== "string") {
          problems.push(`${at}.${k}: ${v === undefined ? "required, " : ""}expected a string, got ${v === undefined ? "nothing" : typeof v}`);
          return null;
        }
        try {
          return parse(v);
        } catch (e) {
          problems.push(`${at}.${k}: ${(e as Error).message}`);
          return null;
        }
      };
      const accountKey = field("accountKey", true, (t) => parsePrivateKeyPem(t, "ACME account key", WHERE));
      const key = field("key", true, (t) => parsePrivateKeyPem(t, "certificate key", WHERE));
      const eabHmacKey = field("eabHmacKey", false, (t) => parseEabHmacKey(t, WHERE));
      const directoryCaPem = field("directoryCaPem", false, parseCaPem);
      if (accountKey !== null && key !== null) acme.set(name, { accountKey, key, eabHmacKey, directoryCaPem });
    }
  }

  const files = {
    config: join(dir, "fipd.yaml"),
    token: join(dir, "token"),
    identityKey: join(dir, "identity.key"),
    previousIdentityKey: join(dir, "identity.key.previous"),
  };
  if (!isRecord(doc.config)) {
    problems.push(`config: ${doc.config === undefined ? "required, " : ""}expected an object (the agent configuration)`);
    return { problems };
  }
  // Point the config at the files written here, whatever the stack said.
  const raw: Record<string, unknown> = { ...doc.config };
  const peerAuth: Record<string, unknown> = { ...(isRecord(raw.peerAuth) ? raw.peerAuth : {}), keyFile: files.identityKey };
  // The previous key file goes with a previous public key in this node's entry (a key roll); whether
  // the key was sent to match it is checked below, with a message about the payload, not the file.
  const selfEntry = Array.isArray(peerAuth.publicKeys) ? (peerAuth.publicKeys as unknown[]).find((k) => isRecord(k) && k.id === raw.nodeId) : undefined;
  if (isRecord(selfEntry) && selfEntry.previousPublicKey !== undefined) peerAuth.previousKeyFile = files.previousIdentityKey;
  else delete peerAuth.previousKeyFile;
  raw.peerAuth = peerAuth;
  raw.api = { ...(isRecord(raw.api) ? raw.api : {}), tokenFile: files.token };
  // The ACME keys and the directory's CA are where this command writes them, whatever the stack said.
  if (isRecord(raw.acme)) {
    const certificates = Array.isArray(raw.acme.certificates)
      ? raw.acme.certificates.map((c: unknown) => {
          if (!isRecord(c) || typeof c.name !== "string") return c;
          const { directoryCaFile: _sent, ...rest } = c;
          const ca = acme.get(c.name)?.directoryCaPem;
          return ca ? { ...rest, directoryCaFile: join(acmeDir, c.name + ACME_FILE_SUFFIXES.directoryCaPem) } : rest;
        })
      : raw.acme.certificates;
    raw.acme = { ...raw.acme, keyDir: acmeDir, certificates };
  }
  const configText = renderAgentConfig(raw);
  let cfg;
  try {
    // The text about to be written, through the agent's own reader.
    cfg = parseAgentConfigText(configText, "the config sent to apply-config");
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    problems.push(...e.problems.map((p) => (p.startsWith("(root)") ? `config${p.slice("(root)".length)}` : `config.${p}`)));
    return { problems };
  }
  const self = cfg.members.find((m) => m.id === cfg.nodeId);
  if (!self) throw new Error(`assertion: the agent's parser accepted nodeId ${cfg.nodeId}, which is not a member`);
  if (self.role === "lb" && doc.token === undefined) problems.push("token: required for a load-balancer node (the DigitalOcean API token)");
  // Each key must be the private half of this node's entry in peerAuth.publicKeys: a mismatch would
  // sign datagrams every peer drops.
  const own = cfg.peerAuth.publicKeys.find((k) => k.id === cfg.nodeId);
  const matches = (k: { id: { id: string } } | undefined, field: "publicKey" | "previousPublicKey", name: string) => {
    if (!k) return;
    const want = own?.[field];
    if (want === undefined) problems.push(`${name}: sent, but this node's peerAuth.publicKeys entry has no ${field}`);
    else if (parsePublicKey(want).id !== k.id.id)
      problems.push(`${name}: its public key (id ${k.id.id}) is not this node's ${field} in peerAuth.publicKeys (id ${parsePublicKey(want).id})`);
  };
  matches(identityKey, "publicKey", "identityKey");
  matches(previousIdentityKey, "previousPublicKey", "previousIdentityKey");
  if (own?.previousPublicKey !== undefined && doc.previousIdentityKey === undefined)
    problems.push("previousIdentityKey: required while this node's peerAuth.publicKeys entry has a previousPublicKey (a key roll): its private half");
  // Every certificate the config names has its keys, and no keys come without their certificate.
  const named = new Map((cfg.acme?.certificates ?? []).map((c) => [c.name, c]));
  for (const [name, c] of named) {
    if (acmeSent && !Object.hasOwn(acmeSent, name)) problems.push(`acme.${name}: required: config.acme names the certificate ${name}, whose keys are missing`);
    const sent = acme.get(name);
    const eabSent = acmeSent && isRecord(acmeSent[name]) ? acmeSent[name].eabHmacKey !== undefined : false;
    if (sent && eabSent !== (c.eabKid !== undefined))
      problems.push(
        `acme.${name}.eabHmacKey: ${c.eabKid === undefined ? "sent, but config.acme gives no eabKid for it" : `required: config.acme gives the EAB key id ${c.eabKid}`}`,
      );
  }
  for (const name of Object.keys(acmeSent ?? {}))
    if (!named.has(name))
      problems.push(`acme.${printable(name, 100)}: config.acme names no such certificate (it names ${[...named.keys()].join(", ") || "none"})`);
  if (problems.length || identityKey === undefined) return { problems };
  return {
    problems,
    ok: {
      files,
      configText,
      nodeId: cfg.nodeId,
      membership: { version: cfg.membershipVersion, memberIds: cfg.members.map((m) => m.id) },
      summary: `node ${cfg.nodeId}, membership v${cfg.membershipVersion}, active color ${cfg.activeColor}`,
      controlSocket: cfg.controlSocket,
      token: token ?? null,
      identityKey: identityKey.text,
      previousIdentityKey: previousIdentityKey?.text ?? null,
      acme,
    },
  };
}

/** The directory's CA: public, but it must parse, or fipd could not reach the directory at all. */
function parseCaPem(text: string): string {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
  if (!blocks || text.length > 256 * 1024) throw new Error("expected PEM certificates (-----BEGIN CERTIFICATE-----) of at most 256 KiB");
  for (const [i, b] of blocks.entries()) {
    try {
      new X509Certificate(b);
    } catch {
      throw new Error(`certificate ${i + 1} does not parse`);
    }
  }
  return blocks.join("\n") + "\n";
}

/**
 * The changes under <dir>/acme: each certificate's files (keys 0640 root:<service group>; the
 * directory's CA 0644), and the removal of every file of ours that the new set does not hold.
 */
function acmeChanges(acmeDir: string, acme: ReadonlyMap<string, AcmeFiles>, keyGroup: { group?: number }): FileChange[] {
  const changes: FileChange[] = [];
  const keep = new Set<string>();
  for (const [name, f] of acme) {
    const put = (what: keyof AcmeFiles, content: string | null, mode: number, group: { group?: number }) => {
      if (content === null) return;
      const path = join(acmeDir, name + ACME_FILE_SUFFIXES[what]);
      keep.add(path);
      changes.push({ path, content: content.endsWith("\n") ? content : content + "\n", mode, ...group });
    };
    put("accountKey", f.accountKey, 0o640, keyGroup);
    put("key", f.key, 0o640, keyGroup);
    put("eabHmacKey", f.eabHmacKey, 0o640, keyGroup);
    put("directoryCaPem", f.directoryCaPem, 0o644, {});
  }
  if (existsSync(acmeDir))
    for (const file of readdirSync(acmeDir)) {
      const path = join(acmeDir, file);
      if (!keep.has(path) && Object.values(ACME_FILE_SUFFIXES).some((suffix) => file.endsWith(suffix))) changes.push({ path, remove: true });
    }
  return changes;
}

/** The membership of a config document (the file on disk, or a status report), if it states one. */
function membershipOf(doc: unknown): MembershipView | null {
  if (typeof doc !== "object" || doc === null) return null;
  const { membershipVersion, members } = doc as { membershipVersion?: unknown; members?: unknown };
  if (typeof membershipVersion !== "number" || !Number.isSafeInteger(membershipVersion) || !Array.isArray(members)) return null;
  const ids = members.map((m) => (typeof m === "object" && m !== null ? (m as { id?: unknown }).id : undefined));
  return ids.every((id): id is string => typeof id === "string") ? { version: membershipVersion, memberIds: ids } : null;
}

/**
 * What this droplet runs now, so that an older member list is refused before anything is written:
 * the running agent's (asked over its control socket) and the config file in place (what an agent
 * starts with). A file that does not parse states nothing (this write repairs it); an agent that
 * does not answer is not running.
 */
async function currentMemberships(
  configFile: string,
  controlSocket: string,
): Promise<{ views: Array<{ view: MembershipView; where: string }>; runningBuild: string | null }> {
  const out: Array<{ view: MembershipView; where: string }> = [];
  let runningBuild: string | null = null;
  if (existsSync(configFile)) {
    let doc: unknown = null;
    try {
      doc = parseConfigText(readFileSync(configFile), configFile);
    } catch {
      /* unreadable or not YAML: nothing to compare with */
    }
    const view = membershipOf(doc);
    if (view) out.push({ view, where: `${configFile}'s` });
  }
  if (existsSync(controlSocket)) {
    let report: unknown = null;
    try {
      report = await controlRequest(controlSocket, { cmd: "status" }, { timeoutMs: 5_000 });
    } catch {
      /* not running */
    }
    const r = report as { membershipVersion?: unknown; members?: unknown; build?: unknown } | null;
    const view = membershipOf(r && { membershipVersion: r.membershipVersion, members: r.members });
    if (view) out.push({ view, where: "the running agent's" });
    if (typeof r?.build === "string" && BUILD_ID.test(r.build)) runningBuild = r.build;
  }
  return { views: out, runningBuild };
}

/**
 * Whether a reload refusal means: the running agent, of another build, cannot parse this config
 * (its `loadAgentConfigFile` threw a ConfigError, whose message every build starts this way), as
 * opposed to refusing what the config asks (another Reserved IP, an older member list).
 */
export function isOtherBuildFormatRefusal(reason: string, runningBuild: string | null, ownBuild: string | null | undefined): boolean {
  return !!ownBuild && !!runningBuild && runningBuild !== ownBuild && reason.startsWith("invalid configuration in ");
}

/** Returns the lines to print; throws with a precise message on bad input or a refused reload. */
export async function applyConfig(stdinText: string, o: ApplyOptions): Promise<string[]> {
  if (Buffer.byteLength(stdinText) > MAX_PAYLOAD_BYTES)
    throw new Error(`stdin holds more than ${MAX_PAYLOAD_BYTES} bytes; an apply-config payload is far smaller`);
  let doc: unknown;
  try {
    doc = JSON.parse(stdinText);
  } catch (e) {
    // Not the parser's message: Node quotes the text around the error, here the token or a key.
    throw new Error(
      `stdin is not JSON (${stdinText.length} characters${/ at position \d+/.exec((e as Error).message)?.[0] ?? ""}); expected the payload document`,
    );
  }
  const { problems, ok: v } = validate(doc, o.dir);
  if (problems.length || !v) throw new Error(`bad apply-config payload; nothing was written:\n  ${problems.join("\n  ")}`);
  const current = await currentMemberships(v.files.config, v.controlSocket);
  for (const { view, where } of current.views) {
    const refused = membershipRefusal(v.membership, view, where);
    if (refused) throw new Error(`${refused}; nothing was written`);
  }

  const owner = o.owner ? lookupUser(o.owner) : null;
  // The agent runs as this user and refuses secrets that group or others can read, so they must be
  // this user's. Refuse here, before anything on disk changes, rather than write files it could not read.
  if (o.owner && !owner) {
    throw new Error(
      `--owner ${o.owner}: no such user on this host. The agent runs as this user and could not read files owned by root. The droplet's cloud-init creates it; by hand: useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin ${o.owner}`,
    );
  }
  const secretOwner = owner ? { owner: owner.uid, group: owner.gid } : {};
  const configGroup = owner ? { group: owner.gid } : {};
  ensureSecureDirectory(o.dir, 0o755);
  const acmeDir = join(o.dir, "acme");
  // 0755: fipd must reach its key files (0640 root:<its group>); nobody but root may change the directory.
  if (v.acme.size) ensureSecureDirectory(acmeDir, 0o755);
  // Secrets first, config last: an agent reloading mid-way never sees a config naming a missing file.
  const set: FileChange[] = [
    ...acmeChanges(acmeDir, v.acme, configGroup),
    ...(v.token !== null ? [{ path: v.files.token, content: v.token + "\n", mode: 0o600, ...secretOwner }] : []),
    { path: v.files.identityKey, content: v.identityKey + "\n", mode: 0o600, ...secretOwner },
    v.previousIdentityKey !== null
      ? { path: v.files.previousIdentityKey, content: v.previousIdentityKey + "\n", mode: 0o600, ...secretOwner }
      : // A finished key roll: the old key leaves the disk.
        { path: v.files.previousIdentityKey, remove: true },
    // The shared key of earlier builds leaves the disk too: nothing reads it any more.
    ...LEGACY_FILES.map((f) => ({ path: join(o.dir, f), remove: true as const })),
    { path: v.files.config, content: v.configText, mode: 0o640, ...configGroup },
  ];

  const out = [`wrote ${v.files.config} (${v.summary})`];
  const reload = async () => {
    let answer: unknown;
    try {
      answer = await controlRequest(v.controlSocket, { cmd: "reload" }, { timeoutMs: RELOAD_TIMEOUT_MS });
    } catch (e) {
      out.push(`agent not reachable on ${v.controlSocket} (${(e as Error).message}); it will read the files when it starts`);
      return;
    }
    if (isRecord(answer) && answer.ok === true) {
      const pending = Array.isArray(answer.restartPending) ? answer.restartPending.filter((k): k is string => typeof k === "string") : [];
      out.push(`running agent reloaded the configuration${pending.length ? `; a restart is needed for ${pending.join(", ")}` : ""}`);
      return;
    }
    const why = isRecord(answer) && typeof answer.error === "string" ? answer.error : `unexpected answer ${JSON.stringify(answer).slice(0, 200)}`;
    if (isOtherBuildFormatRefusal(why, current.runningBuild, o.build)) {
      out.push(
        `the running agent (build ${current.runningBuild}) cannot read this configuration (${why.split("\n").slice(0, 2).join(" ").replace(/\s+/g, " ").slice(0, 300)}); ` +
          `it keeps running on what it loaded, and reads the new files when the deploy restarts it on build ${o.build}`,
      );
      return;
    }
    throw new ReloadRefused(why);
  };
  try {
    await installFileSet(set, { verify: o.reload && existsSync(v.controlSocket) ? reload : undefined });
  } catch (e) {
    if (e instanceof ReloadRefused) {
      throw new Error(
        `the running agent refused the new configuration: ${e.message}\nthe previous files in ${o.dir} are restored; the agent keeps running as before`,
      );
    }
    throw e;
  }
  return out;
}
