/**
 * Member identities: one Ed25519 key pair per member (issue 13.8). Each node signs its datagrams
 * with its own private key; a peer verifies against the public key its config lists for the
 * claimed sender, so the holder of one member's key (the witness's, say, on the public internet)
 * cannot speak for another.
 *
 * Forms, chosen so the stack passes what `@pulumi/tls` gives it unchanged:
 * - a public key is one line in OpenSSH form, `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI…` (68 base64
 *   characters, no comment): `tls.PrivateKey.publicKeyOpenssh`, trimmed;
 * - a private key is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): `tls.PrivateKey.privateKeyPem`.
 * A key's id is the first 8 hex digits of the SHA-256 of its 32 raw public bytes: public, sent in
 * every datagram so the receiver knows which of the sender's keys (current or previous) to check.
 *
 * node:crypto only (OpenSSL's Ed25519): no native module, no library. No I/O here: the file read
 * (mode check) is in agent/secrets.ts, and the config schema (agent/config.ts) uses the parser.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";

export class IdentityKeyError extends Error {}

const SSH_TYPE = "ssh-ed25519";
/** The SSH wire form of an Ed25519 public key: string "ssh-ed25519", string of 32 bytes. */
const WIRE_BYTES = 4 + SSH_TYPE.length + 4 + 32;
/** What a message says is expected. */
export const PUBLIC_KEY_FORM = "an Ed25519 public key in OpenSSH form, one line: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI… (80 characters, no comment)";
const PRIVATE_KEY_FORM = "an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----, as @pulumi/tls privateKeyPem gives it)";
/** A PEM of an Ed25519 PKCS#8 key is about 120 characters; anything far longer is not one. */
const MAX_PRIVATE_PEM_CHARS = 4096;
export const SIGNATURE_BYTES = 64;

export interface PublicIdentity {
  /** First 8 hex digits of the SHA-256 of the raw public key. */
  id: string;
  key: KeyObject;
  /** The OpenSSH text it was parsed from. */
  text: string;
}

export interface OwnIdentity extends PublicIdentity {
  privateKey: KeyObject;
}

const idOf = (raw: Buffer) => createHash("sha256").update(raw).digest("hex").slice(0, 8);

function fromRaw(raw: Buffer, text: string): PublicIdentity {
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  return { id: idOf(raw), key, text };
}

/** Why `text` is not an Ed25519 public key in OpenSSH form, or null when it is one. */
export function publicKeyProblem(text: string): string | null {
  try {
    parsePublicKey(text);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** A public key from its OpenSSH one-line form. Throws IdentityKeyError saying what is wrong. */
export function parsePublicKey(text: string): PublicIdentity {
  const parts = text.trim().split(/\s+/);
  if (parts.length !== 2) {
    throw new IdentityKeyError(`must be ${PUBLIC_KEY_FORM}; got ${parts.length} space-separated part${parts.length === 1 ? "" : "s"}`);
  }
  if (parts[0] !== SSH_TYPE) throw new IdentityKeyError(`must be ${PUBLIC_KEY_FORM}; the key type is not ${SSH_TYPE}`);
  if (!/^[A-Za-z0-9+/]+=*$/.test(parts[1])) throw new IdentityKeyError(`must be ${PUBLIC_KEY_FORM}; the second part is not base64`);
  const wire = Buffer.from(parts[1], "base64");
  if (wire.length !== WIRE_BYTES) throw new IdentityKeyError(`must be ${PUBLIC_KEY_FORM}; the key holds ${wire.length} bytes, not ${WIRE_BYTES}`);
  const typeLen = wire.readUInt32BE(0);
  const type = wire.subarray(4, 4 + SSH_TYPE.length).toString("latin1");
  const keyLen = wire.readUInt32BE(4 + SSH_TYPE.length);
  if (typeLen !== SSH_TYPE.length || type !== SSH_TYPE || keyLen !== 32) {
    throw new IdentityKeyError(`must be ${PUBLIC_KEY_FORM}; the base64 part does not encode an ssh-ed25519 key`);
  }
  return fromRaw(wire.subarray(WIRE_BYTES - 32), `${SSH_TYPE} ${parts[1]}`);
}

/** The OpenSSH one-line form of a public key (tests and the bed make keys with node:crypto). */
export function openSshPublicKey(key: KeyObject): string {
  const raw = Buffer.from(key.export({ format: "jwk" }).x!, "base64url");
  const wire = Buffer.alloc(WIRE_BYTES);
  wire.writeUInt32BE(SSH_TYPE.length, 0);
  wire.write(SSH_TYPE, 4, "latin1");
  wire.writeUInt32BE(32, 4 + SSH_TYPE.length);
  raw.copy(wire, WIRE_BYTES - 32);
  return `${SSH_TYPE} ${wire.toString("base64")}`;
}

/**
 * A private key from its PKCS#8 PEM. `where` names the source (`in /etc/fipd/identity.key`). The
 * error never quotes the text, nor OpenSSL's message (which could).
 */
export function parsePrivateKey(text: string, where: string): OwnIdentity {
  const pem = text.trim();
  if (pem.length > MAX_PRIVATE_PEM_CHARS)
    throw new IdentityKeyError(`the identity key ${where} must be ${PRIVATE_KEY_FORM}; it holds ${pem.length} characters`);
  if (!pem.startsWith("-----BEGIN PRIVATE KEY-----") || !pem.endsWith("-----END PRIVATE KEY-----")) {
    const head = /^-----BEGIN ([A-Z0-9 ]{1,40})-----/.exec(pem)?.[1];
    throw new IdentityKeyError(`the identity key ${where} must be ${PRIVATE_KEY_FORM}; ${head ? `it is a PEM "${head}"` : "it is not PEM"}`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: "pem" });
  } catch {
    throw new IdentityKeyError(`the identity key ${where} must be ${PRIVATE_KEY_FORM}; its PEM does not decode`);
  }
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new IdentityKeyError(`the identity key ${where} must be ${PRIVATE_KEY_FORM}; it is a ${privateKey.asymmetricKeyType ?? "unknown"} key`);
  }
  const pub = createPublicKey(privateKey);
  const raw = Buffer.from(pub.export({ format: "jwk" }).x!, "base64url");
  return { ...fromRaw(raw, openSshPublicKey(pub)), privateKey };
}

export function signDatagram(id: OwnIdentity, data: Buffer): Buffer {
  return sign(null, data, id.privateKey);
}

export function verifyDatagram(id: PublicIdentity, data: Buffer, signature: Buffer): boolean {
  if (signature.length !== SIGNATURE_BYTES) return false;
  try {
    return verify(null, data, id.key, signature);
  } catch {
    return false;
  }
}
