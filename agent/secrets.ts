/**
 * Secret files: the API token and the peers' shared keys. Read from files only (never argv or the
 * environment), refused when group or others can read them, never echoed in an error.
 *
 * The parsers (parseSecret, parsePeerKey) are apart from the file reads so that `fipd apply-config`
 * can refuse a payload with exactly the rules `fipd run` applies, before anything is written.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";

export class SecretFileError extends Error {}

/**
 * A secret as the agent uses it: trimmed, never empty. `where` names its source in the error
 * (`file /etc/fipd/token`, `sent to apply-config`).
 */
export function parseSecret(text: string, what: string, where: string): string {
  const value = text.trim();
  if (!value) throw new SecretFileError(`the ${what} ${where} is empty`);
  return value;
}

export function readSecretFile(path: string, what: string): string {
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
  return parseSecret(readFileSync(path, "utf8"), what, `file ${path}`);
}

export interface PeerKey {
  /** Short public id of the key (first 8 hex of its SHA-256), sent in every packet. */
  id: string;
  key: Buffer;
}

/** A peer key from its text (hex, else base64). `where` names its source in the error (`in /etc/fipd/peer.key`). */
export function parsePeerKey(text: string, where: string): PeerKey {
  const value = parseSecret(text, "peer key", where);
  const key = /^[0-9a-f]+$/i.test(value) && value.length % 2 === 0 ? Buffer.from(value, "hex") : Buffer.from(value, "base64");
  if (key.length < 32) throw new SecretFileError(`the peer key ${where} must hold at least 32 bytes as hex (64 characters) or base64; it holds ${key.length}`);
  return { key, id: createHash("sha256").update(key).digest("hex").slice(0, 8) };
}

export function readPeerKeys(o: { keyFile: string; previousKeyFile?: string }): { current: PeerKey; previous: PeerKey | null } {
  const toKey = (path: string): PeerKey => parsePeerKey(readSecretFile(path, "peer key"), `in ${path}`);
  return { current: toKey(o.keyFile), previous: o.previousKeyFile ? toKey(o.previousKeyFile) : null };
}
