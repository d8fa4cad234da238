/**
 * Member identities under mocks (issue 13.8): one Ed25519 key per droplet, the witness's included.
 * Each droplet's secret stdin carries its own private key and nobody else's; every config lists
 * every member's public key; a key roll ships the previous pair beside the new one.
 */
import { describe, expect, it } from "vitest";
import { parseAgentConfig } from "../../agent/config.js";
import { parsePrivateKey } from "../../agent/identity.js";
import { BASE_CONFIG, IDENTITY_KEY, isSecretValue, mockIdentityKey, plainView, runProgram, unwrap, type Declared } from "./harness.js";

/** Per droplet (by name): the apply-config payload its config step pipes in. */
function payloads(resources: Declared[]) {
  return resources
    .filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config"))
    .map((x) => ({ resource: x, payload: JSON.parse(unwrap(x.inputs.stdin) as string) as Record<string, any> }));
}
const dropletOf = (nodeId: string) => nodeId.replace(/-\d+$/, "");

describe("member identities", () => {
  it("one ED25519 key per droplet, witness included; each stdin carries only its own private key, secret; every config lists every public key", async () => {
    const r = await runProgram(BASE_CONFIG);
    const keys = r.resources.filter((x) => x.type === "tls:index/privateKey:PrivateKey" && IDENTITY_KEY.test(x.name));
    expect(keys.map((k) => k.name).sort()).toEqual(["dev-lb-blue-1-identity-g1", "dev-lb-blue-2-identity-g1", "dev-witness-identity-g1"]);
    for (const k of keys) expect(k.inputs.algorithm).toBe("ED25519");
    const all = keys.map((k) => mockIdentityKey(k.name));

    const ps = payloads(r.resources);
    expect(ps).toHaveLength(3);
    for (const { resource, payload } of ps) {
      // Secret stdin: encrypted in state, masked in diffs; nothing in the command line.
      expect(isSecretValue(resource.inputs.stdin)).toBe(true);
      expect(JSON.stringify(plainView(resource.inputs))).not.toContain("PRIVATE KEY");
      const own = mockIdentityKey(`${dropletOf(payload.config.nodeId)}-identity-g1`);
      expect(payload.identityKey).toBe(own.privateKeyPem);
      expect(payload).not.toHaveProperty("previousIdentityKey");
      // No other droplet's private key anywhere in this droplet's payload.
      const text = JSON.stringify(payload);
      for (const other of all) if (other.privateKeyPem !== own.privateKeyPem) expect(text).not.toContain(JSON.stringify(other.privateKeyPem).slice(1, -1));
      // Every member's public key, by node id, each the one of that droplet's key.
      const listed = payload.config.peerAuth.publicKeys as Array<{ id: string; publicKey: string }>;
      expect(listed.map((k) => k.id)).toEqual(payload.config.members.map((m: { id: string }) => m.id));
      for (const k of listed) expect(k.publicKey).toBe(mockIdentityKey(`${dropletOf(k.id)}-identity-g1`).publicKeyOpenssh.trim());
      // The agent accepts the config, and the key sent is the private half of this node's entry.
      const cfg = parseAgentConfig(payload.config);
      const self = cfg.peerAuth.publicKeys.find((k) => k.id === cfg.nodeId)!;
      expect(parsePrivateKey(payload.identityKey as string, "in the payload").text).toBe(self.publicKey);
    }
  });

  it("a key roll (peerKeyGeneration 2) ships each droplet its new and previous pair, and lists both public keys of every member", async () => {
    const r = await runProgram({ ...BASE_CONFIG, "ha-lb:peerKeyGeneration": "2" });
    const keys = r.resources.filter((x) => x.type === "tls:index/privateKey:PrivateKey" && IDENTITY_KEY.test(x.name)).map((k) => k.name);
    expect(keys.sort()).toEqual(["g1", "g2"].flatMap((g) => ["dev-lb-blue-1", "dev-lb-blue-2", "dev-witness"].map((d) => `${d}-identity-${g}`)).sort());
    for (const { payload } of payloads(r.resources)) {
      const d = dropletOf(payload.config.nodeId);
      expect(payload.identityKey).toBe(mockIdentityKey(`${d}-identity-g2`).privateKeyPem);
      expect(payload.previousIdentityKey).toBe(mockIdentityKey(`${d}-identity-g1`).privateKeyPem);
      for (const k of payload.config.peerAuth.publicKeys as Array<{ id: string; publicKey: string; previousPublicKey: string }>) {
        expect(k.publicKey).toBe(mockIdentityKey(`${dropletOf(k.id)}-identity-g2`).publicKeyOpenssh.trim());
        expect(k.previousPublicKey).toBe(mockIdentityKey(`${dropletOf(k.id)}-identity-g1`).publicKeyOpenssh.trim());
      }
    }
    // Generation 3: the pair of generation 1 is gone, generation 2's is the previous one.
    const r3 = await runProgram({ ...BASE_CONFIG, "ha-lb:peerKeyGeneration": "3" });
    const names3 = r3.resources.filter((x) => x.type === "tls:index/privateKey:PrivateKey" && IDENTITY_KEY.test(x.name)).map((k) => k.name);
    expect(names3.filter((n) => n.endsWith("-g1"))).toEqual([]);
    for (const { payload } of payloads(r3.resources))
      expect(payload.previousIdentityKey).toBe(mockIdentityKey(`${dropletOf(payload.config.nodeId)}-identity-g2`).privateKeyPem);
  });
});
