/** Which config changes a reload applies and which wait for a restart (agent/reload-keys.ts). */
import { publicKeysFor } from "../testbed/identity.js";
import { describe, expect, it } from "vitest";
import { parseAgentConfig, type AgentConfigInput } from "../agent/config.js";
import { changedKeys, restartPendingKeys } from "../agent/reload-keys.js";

const PUBLIC_KEYS = publicKeysFor(["lb-1", "lb-2", "w", "lb-3"]);
const base: AgentConfigInput = {
  nodeId: "lb-1",
  reservedIp: "198.51.100.7",
  members: [
    { id: "lb-1", address: "10.10.0.2", color: "blue" },
    { id: "lb-2", address: "10.10.0.3", color: "blue" },
    { id: "w", address: "203.0.113.9", role: "witness" },
  ],
  peerAuth: { publicKeys: PUBLIC_KEYS.slice(0, 3) },
};
const cfg = (over: Partial<AgentConfigInput>) => parseAgentConfig({ ...base, ...over });

describe("reload keys", () => {
  it("names the changed keys down to the leaf, lists whole", () => {
    expect(changedKeys({ a: { b: 1, c: [1] }, d: 2 }, { a: { b: 2, c: [1, 2] }, d: 2, e: 3 })).toEqual(["a.b", "a.c", "e"]);
    expect(changedKeys(cfg({}), cfg({}))).toEqual([]);
  });

  it("applies members, colors, timing, maintenance, keys, token file, log level, health and metrics on reload", () => {
    const next = cfg({
      membershipVersion: 2,
      members: [...base.members, { id: "lb-3", address: "10.10.0.4", color: "green" }],
      activeColor: "green",
      failover: { leaseMs: 600 },
      maintenance: true,
      peerAuth: {
        keyFile: "/etc/fipd/k2",
        previousKeyFile: "/etc/fipd/k1",
        publicKeys: PUBLIC_KEYS.map((k) => ({ ...k, previousPublicKey: PUBLIC_KEYS[0].publicKey })),
      },
      api: { tokenFile: "/etc/fipd/token2" },
      logLevel: "debug",
      health: { url: "http://127.0.0.1:9999/healthz", intervalMs: 500 },
      metrics: { address: "0.0.0.0", port: 9999, enabled: true },
    });
    expect(restartPendingKeys(cfg({}), next)).toEqual([]);
  });

  it("reports every other change as waiting for a restart, and none once it is undone", () => {
    const next = cfg({
      listen: { port: 7000 },
      api: { baseUrl: "https://api.example.com", requestTimeoutMs: 3_000 },
      metadata: { checkIntervalMs: 500 },
      stateFile: "/var/lib/fipd/s.json",
      controlSocket: "/run/fipd/other.sock",
      dropletId: 42,
    });
    expect(restartPendingKeys(cfg({}), next)).toEqual([
      "api.baseUrl",
      "api.requestTimeoutMs",
      "controlSocket",
      "dropletId",
      "listen.port",
      "metadata.checkIntervalMs",
      "stateFile",
    ]);
    expect(restartPendingKeys(cfg({}), cfg({ listen: { port: 7946 } }))).toEqual([]);
  });
});
