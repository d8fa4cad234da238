import { describe, expect, it } from "vitest";
import { ConfigError, parseAgentConfig } from "../agent/config.js";

const members = [
  { id: "lb-blue-1", address: "10.10.0.2", color: "blue" },
  { id: "lb-blue-2", address: "10.10.0.3", color: "blue" },
  { id: "witness", address: "203.0.113.9", role: "witness" },
];

describe("agent config", () => {
  it("fills defaults for a minimal LB config", () => {
    const c = parseAgentConfig({ nodeId: "lb-blue-1", reservedIp: "198.51.100.7", members });
    expect(c.failover.leaseMs).toBe(300);
    expect(c.api.tokenFile).toBe("/etc/fipd/token");
    expect(c.metrics.address).toBe("127.0.0.1");
    expect(c.members[2].role).toBe("witness");
  });

  it("lists every problem with its path", () => {
    const bad = { nodeId: "lb-blue-1", members: [{ id: "lb-blue-1", address: "x" }], failover: { leaseMs: 60, bogus: 1 } };
    let err: unknown;
    try {
      parseAgentConfig(bad, "fipd.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems).toContain('members[0].color: is required for a member with role "lb" ("blue" or "green")');
    expect(problems.some((p) => p.startsWith("failover.leaseMs: must be at least 3 × heartbeatIntervalMs"))).toBe(true);
    expect(problems.some((p) => p.startsWith("failover:") && p.includes("bogus"))).toBe(true);
    expect((err as Error).message).toMatch(/^invalid configuration in fipd.yaml/);
  });

  it("requires the node to be a member and an LB to know the reserved IP", () => {
    expect(() => parseAgentConfig({ nodeId: "nobody", reservedIp: "198.51.100.7", members })).toThrow(/nodeId: "nobody" is not one of members/);
    expect(() => parseAgentConfig({ nodeId: "lb-blue-1", members })).toThrow(/reservedIp: is required on a load-balancer node/);
    expect(parseAgentConfig({ nodeId: "witness", members }).nodeId).toBe("witness");
  });
});
