/** agent/acme/runtime.ts: who gets ACME tokens and chains, and whose keys sign for whom. */
import { describe, expect, it } from "vitest";
import { parseAgentConfig } from "../../agent/config.js";
import { lbPeers, memberIdentities } from "../../agent/acme/runtime.js";
import { parsePublicKey } from "../../agent/identity.js";
import { newIdentity } from "../../testbed/identity.js";

const members = [
  { id: "lb-1", address: "198.51.100.11", color: "blue" },
  { id: "lb-2", address: "198.51.100.12", color: "blue" },
  { id: "lb-3", address: "198.51.100.13", color: "green" },
  { id: "w", address: "203.0.113.9", role: "witness" },
];
const [k1, k2, k3, kw, old2] = [newIdentity(), newIdentity(), newIdentity(), newIdentity(), newIdentity()];
const cfg = parseAgentConfig({
  nodeId: "lb-1",
  reservedIp: "198.51.100.7",
  members,
  peerAuth: {
    publicKeys: [
      { id: "lb-1", publicKey: k1.publicKey },
      { id: "lb-2", publicKey: k2.publicKey, previousPublicKey: old2.publicKey },
      { id: "lb-3", publicKey: k3.publicKey },
      { id: "w", publicKey: kw.publicKey },
    ],
  },
});

describe("the ACME runtime's peers", () => {
  it("are the other LBs of either color, never this node nor the witness", () => {
    expect(lbPeers(cfg).map((m) => m.id)).toEqual(["lb-2", "lb-3"]);
  });

  it("accept a member's current key and, during a roll, its previous one; nothing for a stranger", () => {
    const of = memberIdentities();
    const ids = (id: string) => of(cfg, id).map((k) => k.id);
    expect(ids("lb-2")).toEqual([parsePublicKey(k2.publicKey).id, parsePublicKey(old2.publicKey).id]);
    expect(ids("lb-3")).toEqual([parsePublicKey(k3.publicKey).id]);
    expect(ids("mallory")).toEqual([]);
    // The witness's key is its own: never one of an LB's.
    expect(ids("lb-3")).not.toContain(parsePublicKey(kw.publicKey).id);
  });
});
