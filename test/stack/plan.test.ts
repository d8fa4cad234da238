/** components/plan.ts: what each droplet is told and shipped, as a pure function of plain values. */
import { describe, expect, it } from "vitest";
import { parseAgentConfig } from "../../agent/config.js";
import { METRICS_PORT, PEER_PORT } from "../../agent/ports.js";
import { memberIdsOf, planCluster, type DropletIdentity, type PlanInput } from "../../components/plan.js";
import { newIdentity } from "../../testbed/identity.js";

const NAMES = ["prod-lb-blue-1", "prod-lb-green-1", "prod-witness"];
const PUB = Object.fromEntries(NAMES.map((n) => [n, newIdentity().publicKey]));
const OLD_PUB = Object.fromEntries(NAMES.map((n) => [n, newIdentity().publicKey]));
/** Each droplet's identity: real public keys, the private ones by reference (`KEY:<name>`). */
const identities = (roll = false): Record<string, DropletIdentity<string>> =>
  Object.fromEntries(NAMES.map((n) => [n, { publicKey: PUB[n], key: `KEY:${n}`, ...(roll ? { previous: { publicKey: OLD_PUB[n], key: `OLD:${n}` } } : {}) }]));

const base: PlanInput<string> = {
  config: { activeColor: "blue", metricsCidrs: [], listenPorts: [80, 443], backends: ["10.10.0.5:8080"] },
  lbs: [
    { name: "prod-lb-blue-1", color: "blue", dropletId: "412345678", publicAddress: "203.0.113.11", vpcAddress: "10.10.0.11" },
    { name: "prod-lb-green-1", color: "green", dropletId: 412345679, publicAddress: "203.0.113.12", vpcAddress: "10.10.0.12" },
  ],
  witness: { name: "prod-witness", dropletId: "512345678", publicAddress: "198.51.100.50" },
  reservedIp: "198.51.100.7",
  membershipVersion: 1767225601,
  keys: { agentToken: "TOKEN", identities: identities() },
};
const byName = (p: ReturnType<typeof planCluster<string>>, name: string) => p.droplets.find((d) => d.name === name)!;

describe("the per-droplet plan", () => {
  it("node ids carry the droplet ID; every node gets the same member ids, in order; each config is one the agent accepts", () => {
    const p = planCluster(base);
    expect(p.memberIds).toEqual(["prod-lb-blue-1-412345678", "prod-lb-green-1-412345679", "prod-witness-512345678"]);
    expect(memberIdsOf(base.lbs, base.witness)).toEqual(p.memberIds);
    expect(p.droplets.map((d) => [d.name, d.role, d.color, d.nodeId, d.dropletId, d.host])).toEqual([
      ["prod-lb-blue-1", "lb", "blue", "prod-lb-blue-1-412345678", 412345678, "203.0.113.11"],
      ["prod-lb-green-1", "lb", "green", "prod-lb-green-1-412345679", 412345679, "203.0.113.12"],
      ["prod-witness", "witness", null, "prod-witness-512345678", 512345678, "198.51.100.50"],
    ]);
    for (const d of p.droplets) {
      const cfg = parseAgentConfig(d.agentConfig, d.name);
      expect(cfg.nodeId).toBe(d.nodeId);
      expect(cfg.members.map((m) => m.id)).toEqual(p.memberIds);
      expect(cfg.membershipVersion).toBe(1767225601);
      expect(cfg.activeColor).toBe("blue");
      expect(cfg.listen).toEqual({ address: "0.0.0.0", port: PEER_PORT });
    }
    // A replaced droplet keeps its name and gets a new ID: a new member, never a second process under one id.
    const replaced = planCluster({ ...base, lbs: [{ ...base.lbs[0], dropletId: 499999999 }, base.lbs[1]] });
    expect(replaced.memberIds[0]).toBe("prod-lb-blue-1-499999999");
  });

  it("members as seen from an LB (LBs on the VPC) and from the witness (LBs on their public addresses); the witness always public", () => {
    const p = planCluster(base);
    const seen = (name: string) => byName(p, name).agentConfig.members.map((m) => [m.id.replace(/-\d+$/, ""), m.address, m.port, m.role, m.color]);
    const fromLb = [
      ["prod-lb-blue-1", "10.10.0.11", PEER_PORT, "lb", "blue"],
      ["prod-lb-green-1", "10.10.0.12", PEER_PORT, "lb", "green"],
      ["prod-witness", "198.51.100.50", PEER_PORT, "witness", undefined],
    ];
    expect(seen("prod-lb-blue-1")).toEqual(fromLb);
    expect(seen("prod-lb-green-1")).toEqual(fromLb);
    expect(seen("prod-witness")).toEqual([
      ["prod-lb-blue-1", "203.0.113.11", PEER_PORT, "lb", "blue"],
      ["prod-lb-green-1", "203.0.113.12", PEER_PORT, "lb", "green"],
      ["prod-witness", "198.51.100.50", PEER_PORT, "witness", undefined],
    ]);
    // Without a witness: LBs only.
    const noWitness = planCluster({ ...base, witness: null });
    expect(noWitness.droplets.map((d) => d.role)).toEqual(["lb", "lb"]);
    expect(byName(noWitness, "prod-lb-blue-1").agentConfig.members.map((m) => m.address)).toEqual(["10.10.0.11", "10.10.0.12"]);
  });

  it("metrics on loopback without metricsCidrs, on every address with them", () => {
    for (const d of planCluster(base).droplets) expect(d.agentConfig.metrics).toEqual({ enabled: true, address: "127.0.0.1", port: METRICS_PORT });
    const open = planCluster({ ...base, config: { ...base.config, metricsCidrs: ["10.0.0.0/8"] } });
    for (const d of open.droplets) expect(d.agentConfig.metrics).toEqual({ enabled: true, address: "0.0.0.0", port: METRICS_PORT });
  });

  it("failover overrides reach every node; without them, the agent's defaults (no key at all)", () => {
    for (const d of planCluster(base).droplets) expect(d.agentConfig).not.toHaveProperty("failover");
    const failover = { leaseMs: 600, heartbeatIntervalMs: 100 };
    const p = planCluster({ ...base, config: { ...base.config, failover } });
    for (const d of p.droplets) {
      expect(d.agentConfig.failover).toEqual(failover);
      expect(parseAgentConfig(d.agentConfig).failover).toMatchObject({ leaseMs: 600, heartbeatIntervalMs: 100, electionTimeoutMs: 150 });
    }
  });

  it("the Reserved IP, the droplet ID, the token and HAProxy only on LBs; each droplet only its own identity key, the previous one only during a roll; every config lists every public key", () => {
    const p = planCluster(base);
    for (const name of ["prod-lb-blue-1", "prod-lb-green-1"]) {
      const d = byName(p, name);
      expect(d.agentConfig.reservedIp).toBe("198.51.100.7");
      expect(d.agentConfig.dropletId).toBe(d.dropletId);
      expect(d.secrets).toEqual({ agentToken: "TOKEN", identityKey: `KEY:${name}` });
      expect(d.haproxy).toEqual({ listenPorts: [80, 443], backends: ["10.10.0.5:8080"], serverName: name });
    }
    const w = byName(p, "prod-witness");
    expect(w.agentConfig).not.toHaveProperty("reservedIp");
    expect(w.agentConfig).not.toHaveProperty("dropletId");
    expect(w.secrets).toEqual({ identityKey: "KEY:prod-witness" });
    expect(w.haproxy).toBeNull();
    const everyKey = p.memberIds.map((id, i) => ({ id, publicKey: PUB[NAMES[i]] }));
    for (const d of p.droplets) expect(d.agentConfig.peerAuth).toEqual({ publicKeys: everyKey });
    const rolling = planCluster({ ...base, keys: { ...base.keys, identities: identities(true) } });
    for (const d of rolling.droplets) {
      expect(d.secrets).toMatchObject({ identityKey: `KEY:${d.name}`, previousIdentityKey: `OLD:${d.name}` });
      expect(d.agentConfig.peerAuth?.publicKeys).toEqual(everyKey.map((k, i) => ({ ...k, previousPublicKey: OLD_PUB[NAMES[i]] })));
      expect(parseAgentConfig({ ...d.agentConfig, peerAuth: { ...d.agentConfig.peerAuth!, previousKeyFile: "/k" } }).peerAuth.publicKeys).toHaveLength(3);
    }
    // The plan holds references only: it never looks inside them.
    const refs = planCluster({
      ...base,
      keys: { agentToken: { ref: 0 }, identities: Object.fromEntries(NAMES.map((n, i) => [n, { publicKey: PUB[n], key: { ref: i + 1 } }])) },
    });
    expect(refs.droplets.find((d) => d.name === "prod-lb-blue-1")!.secrets).toEqual({ agentToken: { ref: 0 }, identityKey: { ref: 1 } });
  });

  it("refuses inconsistent input, saying what is wrong", () => {
    expect(() => planCluster({ ...base, lbs: [] })).toThrow(/plan: needs at least one load balancer/);
    expect(() => planCluster({ ...base, lbs: [base.lbs[0], { ...base.lbs[1], name: "prod-lb-blue-1" }] })).toThrow(/droplet names repeat/);
    expect(() => planCluster({ ...base, lbs: [{ ...base.lbs[0], dropletId: "" }] })).toThrow(/prod-lb-blue-1: droplet ID "" is not a positive integer/);
    expect(() => planCluster({ ...base, membershipVersion: 1.5 })).toThrow(/membershipVersion 1.5 is not a non-negative integer/);
    expect(() => planCluster({ ...base, reservedIp: "" })).toThrow(/Reserved IP's address is empty/);
    const { "prod-witness": _, ...noWitness } = identities();
    expect(() => planCluster({ ...base, keys: { ...base.keys, identities: noWitness } })).toThrow(/plan: prod-witness has no identity/);
  });
});
