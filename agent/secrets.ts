/**
 * Secret files: the API token and this node's identity keys. Read from files only (never argv or the
 * environment), refused when group or others can read them, never echoed in an error.
 *
 * The parsers (parseSecret, agent/identity.ts parsePrivateKey) are apart from the file reads so that `fipd apply-config`
 * can refuse a payload with exactly the rules `fipd run` applies, before anything is written.
 */
import { createPrivateKey } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { parsePrivateKey, parsePublicKey, type OwnIdentity } from "./identity.js";

export class SecretFileError extends Error {}

/**
 * A secret as the agent uses it: trimmed, never empty. `where` names its source in the error
 * (`file /etc/fipd/token`, `sent to apply-config`).
 */
export function parseSecret(text: string, what: string, where: string): string {
  const value = text.trim();
  if (!value) throw new SecretFileError(`the ${what} ${where} is empty`);
  // A secret goes into an HTTP header and key files: a line break or a control character inside
  // makes fetch throw an error that quotes the whole header. Refused here, named by position only.
  const bad = /[^\x21-\x7e]/.exec(value);
  if (bad) {
    const code = bad[0].codePointAt(0)!;
    const kind =
      code === 0x0a || code === 0x0d
        ? "a line break"
        : code === 0x20 || code === 0x09
          ? "a space or tab"
          : code < 0x20 || code === 0x7f
            ? "a control character"
            : "not ASCII";
    throw new SecretFileError(
      `the ${what} ${where} must be one line of printable ASCII without spaces; character ${bad.index + 1} of ${value.length} is ${kind} (U+${code.toString(16).toUpperCase().padStart(4, "0")})`,
    );
  }
  return value;
}

/** What a DigitalOcean token looks like: a safety net for secrets that were not passed to `redact`. */
export const TOKEN_TEXT = /\b(dop|doo|dor)_v1_[a-f0-9]{16,}\b/gi;
/** Shorter "secrets" are not searched for: replacing every "ab" in a message would say more than it hides. */
const MIN_REDACTED_CHARS = 8;

/**
 * `text` with every occurrence of each known secret, and anything that looks like a DigitalOcean
 * token, replaced by "[redacted]". For text that leaves the process: error messages kept for
 * `fipd status` (and printed by the deploy scripts, so stored by Pulumi), and logs.
 */
export function redact(text: string, secrets: readonly (string | null | undefined)[] = []): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= MIN_REDACTED_CHARS) out = out.split(s).join("[redacted]");
  return out.replace(TOKEN_TEXT, "[redacted]");
}

/** `redact` on every string inside a JSON-like value (a status report), to a bounded depth. */
export function redactDeep<T>(value: T, secrets: readonly (string | null | undefined)[] = [], depth = 0): T {
  if (typeof value === "string") return redact(value, secrets) as T;
  if (depth > 8 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((x: unknown) => redactDeep(x, secrets, depth + 1)) as T;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(value)) out[k] = redactDeep(x, secrets, depth + 1);
  return out as T;
}

/** At most this many bytes in a secret file: a token, a PEM key. A larger file is not one. */
const MAX_SECRET_FILE_BYTES = 16 * 1024;

export function readSecretFile(path: string, what: string): string {
  return parseSecret(readSecretText(path, what), what, `file ${path}`);
}

/** A secret file's text: a regular file, not readable or writable by group or others, bounded. */
export function readSecretText(path: string, what: string): string {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new SecretFileError(`cannot read the ${what} file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new SecretFileError(`the ${what} file ${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new SecretFileError(
      `the ${what} file ${path} is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8)}); fix: chmod 600 ${path}`,
    );
  }
  if (st.size > MAX_SECRET_FILE_BYTES)
    throw new SecretFileError(`the ${what} file ${path} holds ${st.size} bytes; a ${what} is under ${MAX_SECRET_FILE_BYTES}`);
  return readFileSync(path, "utf8");
}

/** `client` with the message of every error its methods throw passed through `redact`. */
export function redactErrors<T extends object>(client: T, secrets: () => readonly (string | null)[]): T {
  const scrub = (e: unknown) => {
    if (e instanceof Error) e.message = redact(e.message, secrets());
    return e;
  };
  // A proxy, so methods on a prototype are covered too, and a synchronous method stays synchronous.
  return new Proxy(client, {
    get(target, name, receiver) {
      const member: unknown = Reflect.get(target, name, receiver);
      if (typeof member !== "function") return member;
      return (...args: unknown[]) => {
        let result: unknown;
        try {
          result = (member as (...a: unknown[]) => unknown).apply(target, args);
        } catch (e) {
          throw scrub(e);
        }
        return result instanceof Promise ? result.catch((e: unknown) => Promise.reject(scrub(e))) : result;
      };
    },
  });
}

/**
 * This node's identity keys (agent/identity.ts) from their files, each checked like every secret
 * file (a regular file, mode 0600 or stricter) and against the public key the config lists for this
 * node: a key that does not match would sign datagrams every peer drops, so the start is refused.
 * Never echoed: an error names the file and what is wrong, never the content.
 */
export function readIdentityKeys(cfg: {
  nodeId: string;
  peerAuth: { keyFile: string; previousKeyFile?: string; publicKeys: ReadonlyArray<{ id: string; publicKey: string; previousPublicKey?: string }> };
}): { current: OwnIdentity; previous: OwnIdentity | null } {
  const self = cfg.peerAuth.publicKeys.find((m) => m.id === cfg.nodeId);
  if (!self) throw new SecretFileError(`node "${cfg.nodeId}" has no entry in peerAuth.publicKeys`);
  const load = (path: string, expected: string | undefined, field: string): OwnIdentity => {
    const own = parsePrivateKey(readSecretText(path, "identity key"), `in ${path}`);
    const want = expected === undefined ? null : parsePublicKey(expected);
    if (!want || want.id !== own.id) {
      throw new SecretFileError(
        `the identity key in ${path} (public key id ${own.id}) does not match this node's peerAuth.publicKeys ${field} in the config (${want ? `id ${want.id}` : "not set"}); the stack sends both from one key pair`,
      );
    }
    return own;
  };
  return {
    current: load(cfg.peerAuth.keyFile, self.publicKey, "publicKey"),
    previous: cfg.peerAuth.previousKeyFile ? load(cfg.peerAuth.previousKeyFile, self.previousPublicKey, "previousPublicKey") : null,
  };
}

/** A PEM private key is a few hundred bytes (ECDSA) to a few KiB (RSA 4096); far more is not one. */
const MAX_PRIVATE_KEY_PEM_CHARS = 16 * 1024;

/**
 * An ACME key as the stack ships it (an account key or a certificate's key): one unencrypted PEM
 * private key, EC or RSA. Trimmed; errors name `what` and `where`, never the key.
 */
export function parsePrivateKeyPem(text: string, what: string, where: string): string {
  const pem = text.trim();
  if (!pem) throw new SecretFileError(`the ${what} ${where} is empty`);
  if (pem.length > MAX_PRIVATE_KEY_PEM_CHARS)
    throw new SecretFileError(`the ${what} ${where} holds ${pem.length} characters; a PEM private key holds at most ${MAX_PRIVATE_KEY_PEM_CHARS}`);
  if (!/^-----BEGIN (EC |RSA )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+\n-----END (EC |RSA )?PRIVATE KEY-----$/.test(pem))
    throw new SecretFileError(`the ${what} ${where} is not one unencrypted PEM private key (-----BEGIN PRIVATE KEY----- … -----END PRIVATE KEY-----)`);
  let type: string | undefined;
  try {
    type = createPrivateKey(pem).asymmetricKeyType;
  } catch {
    throw new SecretFileError(`the ${what} ${where} does not parse as a private key`);
  }
  if (type !== "ec" && type !== "rsa") throw new SecretFileError(`the ${what} ${where} is an ${type} key; ACME needs an EC or RSA key`);
  return pem;
}

/** An EAB HMAC key (RFC 8555 §7.3.4) as CAs hand it out: base64url, one line. */
export function parseEabHmacKey(text: string, where: string): string {
  const value = parseSecret(text, "EAB HMAC key", where);
  if (!/^[A-Za-z0-9_-]{16,1024}={0,2}$/.test(value))
    throw new SecretFileError(`the EAB HMAC key ${where} must be base64url of 16 to 1024 characters; it holds ${value.length} characters`);
  return value;
}
