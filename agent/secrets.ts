/**
 * Secret files: the API token and the peers' shared keys. Read from files only (never argv or the
 * environment), refused when group or others can read them, never echoed in an error.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";

export class SecretFileError extends Error {}

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
  const value = readFileSync(path, "utf8").trim();
  if (!value) throw new SecretFileError(`the ${what} file ${path} is empty`);
  return value;
}

export interface PeerKey {
  /** Short public id of the key (first 8 hex of its SHA-256), sent in every packet. */
  id: string;
  key: Buffer;
}

function parseKey(text: string, path: string): Buffer {
  const key = /^[0-9a-f]+$/i.test(text) && text.length % 2 === 0 ? Buffer.from(text, "hex") : Buffer.from(text, "base64");
  if (key.length < 32)
    throw new SecretFileError(`the peer key in ${path} must hold at least 32 bytes as hex (64 characters) or base64; it holds ${key.length}`);
  return key;
}

export function readPeerKeys(o: { keyFile: string; previousKeyFile?: string }): { current: PeerKey; previous: PeerKey | null } {
  const toKey = (path: string): PeerKey => {
    const key = parseKey(readSecretFile(path, "peer key"), path);
    return { key, id: createHash("sha256").update(key).digest("hex").slice(0, 8) };
  };
  return { current: toKey(o.keyFile), previous: o.previousKeyFile ? toKey(o.previousKeyFile) : null };
}
