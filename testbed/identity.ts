/**
 * Member identities for the test beds: an Ed25519 key pair in the forms the stack ships
 * (agent/identity.ts): the public key in OpenSSH form, the private key as PKCS#8 PEM.
 */
import { generateKeyPairSync } from "node:crypto";
import { openSshPublicKey } from "../agent/identity.js";

export interface TestIdentity {
  /** `ssh-ed25519 AAAA…`, as `tls.PrivateKey.publicKeyOpenssh` (trimmed). */
  publicKey: string;
  /** PKCS#8 PEM, as `tls.PrivateKey.privateKeyPem`. */
  privateKeyPem: string;
}

export function newIdentity(): TestIdentity {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  return { publicKey: openSshPublicKey(publicKey), privateKeyPem: privateKey.export({ format: "pem", type: "pkcs8" }).toString() };
}

/** `peerAuth.publicKeys` for members `ids`, each with a fresh identity (configs in tests). */
export function publicKeysFor(ids: readonly string[]): Array<{ id: string; publicKey: string }> {
  return ids.map((id) => ({ id, publicKey: newIdentity().publicKey }));
}
