/**
 * The issued ACME certificate chains and the live HTTP-01 challenge tokens of this node.
 *
 * Chains are public (the leaf and its intermediates; never a key): each node keeps the newest valid
 * one per certificate name in `<stateDir>/<name>.chain.pem`, where the root-run install unit
 * (halb-acme-install.path) picks it up and pairs it with the key the stack shipped. A chain reaches
 * the store from this node's ACME child or from a peer; either way `offer` accepts it only if it
 * could serve: it parses, each certificate is signed by the next, the leaf's public key is the one
 * the stack made for that name (so a peer or a CA cannot make us serve a certificate we hold no key
 * for), it covers every domain of the name, it has not expired, and it is newer (later notAfter)
 * than what we hold. So chains only move forward, whatever order they arrive in.
 *
 * Tokens live in memory only, with an expiry: they matter for the minutes a validation takes.
 *
 * Writes are synchronous: a chain is a few KiB, written a few times a quarter, and a synchronous
 * write keeps `offer` atomic with respect to the event loop. A failed write throws (fail-stop: the
 * caller must not go on believing a chain is durable when it is not).
 */
import { createHash, createPublicKey, KeyObject, X509Certificate } from "node:crypto";
import { closeSync, constants as fsConstants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { assertSecureDirectory, createStagedFile, fsyncDirectory } from "../safe-write.js";

export interface IssuedChain {
  name: string;
  pem: string;
  notBeforeMs: number;
  notAfterMs: number;
  /** SHA-256 (hex) of `pem` as stored (normalized: the certificate blocks, one newline after each). */
  sha256: string;
}

/** A chain larger than this is not a certificate chain. */
export const MAX_CHAIN_BYTES = 64 * 1024;
/** Leaf, intermediates, and a cross-signed root at most: more is a mistake. */
export const MAX_CHAIN_CERTIFICATES = 8;
/** Live tokens kept at most (a few per domain per order is normal); the oldest go first beyond it. */
export const MAX_TOKENS = 1000;
/** A certificate name: also a file name (`<name>.chain.pem`). */
export const CERTIFICATE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** An ACME token (RFC 8555 §8.1: base64url, at least 128 bits of entropy). */
export const ACME_TOKEN = /^[A-Za-z0-9_-]{16,256}$/;
/** token "." base64url(SHA-256 of the account key's JWK thumbprint). */
export const KEY_AUTHORIZATION = /^[A-Za-z0-9_-]{16,256}\.[A-Za-z0-9_-]{43}$/;

const CHAIN_FILE = /^([A-Za-z0-9][A-Za-z0-9._-]{0,99})\.chain\.pem$/;
const BLOCK = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----/g;
/** Files in stateDir that load() reads at most. */
const MAX_CHAIN_FILES = 200;

export interface AcmeStoreOptions {
  stateDir: string;
  /** The public key of the certificate key the stack made for `name` (undefined: no such key here). */
  publicKeyFor(name: string): KeyObject | undefined;
  nowMs(): number;
  /** The domains configured for `name` (undefined: not a configured ACME certificate). */
  domainsFor(name: string): string[] | undefined;
}

type Checked = { ok: true; chain: IssuedChain } | { ok: false; reason: string };

const spki = (k: KeyObject) => (k.type === "private" ? createPublicKey(k) : k).export({ type: "spki", format: "der" });
const iso = (ms: number) => new Date(ms).toISOString();

export class AcmeStore {
  readonly #o: AcmeStoreOptions;
  readonly #chains = new Map<string, IssuedChain>();
  readonly #tokens = new Map<string, { keyAuthorization: string; expiresAtMs: number }>();
  readonly #listeners: ((c: IssuedChain) => void)[] = [];
  /** What load() could not take, one line per file: for the status and the logs. */
  readonly loadProblems: string[] = [];

  constructor(o: AcmeStoreOptions) {
    this.#o = o;
  }

  /** Reads `<stateDir>/*.chain.pem` (at boot). A missing directory holds no chains; a chain that would not be accepted now is skipped and listed in loadProblems. */
  load(): void {
    this.loadProblems.length = 0;
    let names: string[];
    try {
      names = readdirSync(this.#o.stateDir).filter((n) => CHAIN_FILE.test(n));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    for (const file of names.sort().slice(0, MAX_CHAIN_FILES)) {
      const name = CHAIN_FILE.exec(file)![1];
      const path = join(this.#o.stateDir, file);
      let pem: string;
      try {
        pem = readBounded(path);
      } catch (e) {
        this.loadProblems.push(`${path}: ${(e as Error).message}`);
        continue;
      }
      const c = this.#check(name, pem);
      if (c.ok) this.#chains.set(name, c.chain);
      else this.loadProblems.push(`${path}: ${c.reason}`);
    }
    if (names.length > MAX_CHAIN_FILES) this.loadProblems.push(`${this.#o.stateDir}: ${names.length} chain files; only the first ${MAX_CHAIN_FILES} were read`);
  }

  chain(name: string): IssuedChain | undefined {
    return this.#chains.get(name);
  }

  chains(): IssuedChain[] {
    return [...this.#chains.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Accepts a chain if it parses, its leaf's public key is ours for that name, it covers the name's
   * domains, is not expired, and is newer (notAfter) than what we have; writes it (atomically, 0600)
   * and tells the onChange listeners. `from` names the source in the reason ("acme", a peer id).
   * Throws only when the write fails.
   */
  offer(name: string, pem: string, from: string): { accepted: true } | { accepted: false; reason: string } {
    const c = this.#check(name, pem);
    if (!c.ok) return { accepted: false, reason: `chain for ${name} from ${from}: ${c.reason}` };
    const have = this.#chains.get(name);
    if (have && have.sha256 === c.chain.sha256) return { accepted: false, reason: `chain for ${name} from ${from}: already held` };
    if (have && c.chain.notAfterMs <= have.notAfterMs)
      return {
        accepted: false,
        reason: `chain for ${name} from ${from}: not newer than the one held (notAfter ${iso(c.chain.notAfterMs)}, held ${iso(have.notAfterMs)})`,
      };
    this.#write(name, c.chain.pem);
    this.#chains.set(name, c.chain);
    for (const cb of this.#listeners) cb(c.chain);
    return { accepted: true };
  }

  onChange(cb: (c: IssuedChain) => void): void {
    this.#listeners.push(cb);
  }

  /** Keeps a challenge answer until `expiresAtMs`. Throws on a malformed token or key authorization (callers validate input first). */
  putToken(token: string, keyAuthorization: string, expiresAtMs: number): void {
    if (!ACME_TOKEN.test(token)) throw new RangeError("putToken: the token must be 16 to 256 base64url characters");
    if (!KEY_AUTHORIZATION.test(keyAuthorization) || !keyAuthorization.startsWith(`${token}.`))
      throw new RangeError("putToken: the key authorization must be the token, a dot and a 43-character base64url thumbprint");
    if (!Number.isFinite(expiresAtMs)) throw new RangeError("putToken: expiresAtMs must be a finite time");
    this.#prune();
    this.#tokens.delete(token);
    this.#tokens.set(token, { keyAuthorization, expiresAtMs });
    while (this.#tokens.size > MAX_TOKENS) this.#tokens.delete(this.#tokens.keys().next().value!);
  }

  /** What the responder serves for `token`; undefined when unknown or expired. */
  keyAuthorization(token: string): string | undefined {
    const t = this.#tokens.get(token);
    if (!t) return undefined;
    if (t.expiresAtMs <= this.#o.nowMs()) {
      this.#tokens.delete(token);
      return undefined;
    }
    return t.keyAuthorization;
  }

  tokens(): { token: string; keyAuthorization: string; expiresAtMs: number }[] {
    this.#prune();
    return [...this.#tokens].map(([token, t]) => ({ token, ...t }));
  }

  #prune(): void {
    const now = this.#o.nowMs();
    for (const [token, t] of this.#tokens) if (t.expiresAtMs <= now) this.#tokens.delete(token);
  }

  #check(name: string, pem: string): Checked {
    if (!CERTIFICATE_NAME.test(name)) return { ok: false, reason: "the name is not a certificate name (1-100 characters of A-Z, a-z, 0-9, '.', '_', '-')" };
    const domains = this.#o.domainsFor(name);
    if (!domains) return { ok: false, reason: "not a configured ACME certificate name" };
    const key = this.#o.publicKeyFor(name);
    if (!key) return { ok: false, reason: "no certificate key for this name on this node" };
    if (typeof pem !== "string" || Buffer.byteLength(pem) > MAX_CHAIN_BYTES) return { ok: false, reason: `not a PEM text of at most ${MAX_CHAIN_BYTES} bytes` };
    const blocks = pem.match(BLOCK) ?? [];
    if (!blocks.length) return { ok: false, reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it" };
    if (blocks.length > MAX_CHAIN_CERTIFICATES)
      return { ok: false, reason: `${blocks.length} certificates, more than the ${MAX_CHAIN_CERTIFICATES} a chain has` };
    let certs: X509Certificate[];
    try {
      certs = blocks.map((b) => new X509Certificate(b));
    } catch (e) {
      return { ok: false, reason: `a certificate does not parse (${(e as Error).message})` };
    }
    for (let i = 0; i + 1 < certs.length; i++) {
      if (!certs[i].checkIssued(certs[i + 1]) || !certs[i].verify(certs[i + 1].publicKey))
        return { ok: false, reason: `certificate ${i + 1} of the chain is not signed by certificate ${i + 2}` };
    }
    const leaf = certs[0];
    if (!spki(leaf.publicKey).equals(spki(key))) return { ok: false, reason: "its leaf is for another key than this name's certificate key" };
    const missing = domains.filter((d) => leaf.checkHost(d, { subject: "never" }) === undefined);
    if (missing.length) return { ok: false, reason: `it does not cover ${missing.join(", ")}` };
    const notBeforeMs = Date.parse(leaf.validFrom);
    const notAfterMs = Math.min(...certs.map((c) => Date.parse(c.validTo)));
    if (!Number.isFinite(notBeforeMs) || !Number.isFinite(notAfterMs) || notAfterMs <= notBeforeMs)
      return { ok: false, reason: "its validity period does not parse or is empty" };
    const now = this.#o.nowMs();
    if (notAfterMs <= now) return { ok: false, reason: `it expired at ${iso(notAfterMs)}` };
    const normalized = blocks.map((b) => b.replace(/\r/g, "") + "\n").join("");
    return { ok: true, chain: { name, pem: normalized, notBeforeMs, notAfterMs, sha256: createHash("sha256").update(normalized).digest("hex") } };
  }

  #write(name: string, pem: string): void {
    const dir = this.#o.stateDir;
    assertSecureDirectory(dir);
    const path = join(dir, `${name}.chain.pem`);
    // Stage beside the target, then rename over it: a reader sees the old chain or the new one, whole.
    const tmp = createStagedFile(path, Buffer.from(pem), 0o600, process.geteuid?.() ?? 0, process.getegid?.() ?? 0);
    renameSync(tmp, path);
    fsyncDirectory(dir);
  }
}

/** Reads a regular file of at most MAX_CHAIN_BYTES, never through a symbolic link. */
function readBounded(path: string): string {
  const st = lstatSync(path);
  if (!st.isFile()) throw new Error("not a regular file");
  if (st.size > MAX_CHAIN_BYTES) throw new Error(`${st.size} bytes, more than the ${MAX_CHAIN_BYTES} a chain needs`);
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  try {
    if (fstatSync(fd).size > MAX_CHAIN_BYTES) throw new Error(`more than the ${MAX_CHAIN_BYTES} bytes a chain needs`);
    return readFileSync(fd, "utf8");
  } finally {
    closeSync(fd);
  }
}
