/** The stack config: validated once, one line per bad key, voter rules, secrets split off. */
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it, vi } from "vitest";
import { StackConfigError, loadStackConfig } from "../../components/config.js";
import { BASE_CONFIG, runProgram, setupMocks } from "./harness.js";

const base = Object.fromEntries(Object.entries(BASE_CONFIG).map(([k, v]) => [k.slice("ha-lb:".length), v]));
const load = (over: Record<string, string | undefined>) => {
  const m = { ...base, ...over };
  return loadStackConfig(
    (k) => m[k],
    Object.keys(m).filter((k) => m[k] !== undefined),
  );
};
const errorLines = (over: Record<string, string | undefined>): string[] => {
  try {
    load(over);
  } catch (e) {
    expect(e).toBeInstanceOf(StackConfigError);
    return (e as StackConfigError).lines;
  }
  throw new Error("expected a StackConfigError");
};

describe("loadStackConfig", () => {
  it("applies the defaults, merges partial colors and keeps the secrets apart", () => {
    const { config, secrets, warnings } = load({ colors: JSON.stringify({ green: { count: 1, size: "s-2vcpu-2gb" } }) });
    expect(config.image).toBe("ubuntu-24-04-x64");
    expect(config.size).toBe("s-1vcpu-1gb");
    expect(config.colors).toEqual({ blue: { count: 2 }, green: { count: 1, size: "s-2vcpu-2gb" } });
    expect(config.listenPorts).toEqual([80]);
    expect(config.retainReservedIp).toBe(true);
    expect(config.activeColor).toBe("blue");
    expect(JSON.stringify(config)).not.toMatch(/TOKENSECRET|SSHKEYSECRET/);
    expect(secrets.agentToken).toContain("TOKENSECRET");
    expect(warnings).toHaveLength(1); // 3 LBs + witness = 4 voters
  });

  it.each([
    [{ region: "NYC" }, /^ha-lb:region: must be a DigitalOcean region slug.*; expected a region slug/],
    [{ region: undefined }, /^ha-lb:region: is required; expected/],
    [{ colors: JSON.stringify({ red: { count: 1 } }) }, /^ha-lb:colors: has unknown key "red" \(known keys: blue, green\); expected \{"blue"/],
    [{ colors: JSON.stringify({ blue: { count: -1 } }) }, /^ha-lb:colors: .*\(at blue\.count\); expected/],
    [{ activeColor: "red" }, /^ha-lb:activeColor: .*; expected blue or green/],
    [{ witnessRegion: "Frankfurt" }, /^ha-lb:witnessRegion: must be a DigitalOcean region slug/],
    [{ sshKeys: "[]" }, /^ha-lb:sshKeys: needs at least one/],
    [{ sshPrivateKey: undefined }, /^ha-lb:sshPrivateKey: is required; expected pulumi config set --secret/],
    [{ adminCidrs: JSON.stringify(["10.0.0.0/33"]) }, /^ha-lb:adminCidrs: must be an IPv4 CIDR.*\(at 0\)/],
    [{ metricsCidrs: "10.0.0.0/8" }, /^ha-lb:metricsCidrs: is not valid JSON; expected \["10/],
    [{ backends: JSON.stringify(["no-port"]) }, /^ha-lb:backends: must be host:port/],
    [{ listenPorts: "[0]" }, /^ha-lb:listenPorts: .*; expected \[80, 443\]/],
    [{ agentToken: undefined }, /^ha-lb:agentToken: is required; expected pulumi config set --secret/],
    [{ reservedIp: "my-ip" }, /^ha-lb:reservedIp: .*; expected an existing Reserved IP/],
    [{ retainReservedIp: '"yes"' }, /^ha-lb:retainReservedIp: .*; expected true or false/],
    [{ failover: JSON.stringify({ bogus: 1 }) }, /^ha-lb:failover: /],
    [{ witnessRegion: "nyc3" }, /^ha-lb:witnessRegion: must differ from region/],
    [{ activeColor: "green" }, /^ha-lb:activeColor: green has no droplets .*; expected a color with count ≥ 1/],
    [{ witnessRegion: undefined }, /^ha-lb:witnessRegion: 2 load balancers and no witness cannot survive the loss of one .*set ha-lb:witnessRegion/],
    [{ backend: "[]" }, /^ha-lb:backend: is not a known key; expected one of region, /],
  ])("%j → one line naming the key", (over, re) => {
    const lines = errorLines(over);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(re);
  });

  it("reports every bad key at once, one line each (JSON errors and value errors together)", () => {
    const lines = errorLines({ region: "x", listenPorts: "[80", adminCidrs: '["x"]', agentToken: undefined });
    expect(lines.map((l) => l.split(":")[1]).sort()).toEqual(["adminCidrs", "agentToken", "listenPorts", "region"]);
  });

  it("voters: an even count is allowed with a warning; 1 LB alone is allowed; 4 LBs without witness survive one loss", () => {
    expect(load({ colors: JSON.stringify({ blue: { count: 1 } }), witnessRegion: undefined }).warnings).toEqual([]);
    const even = load({ colors: JSON.stringify({ blue: { count: 2 }, green: { count: 2 } }), witnessRegion: undefined }).warnings;
    expect(even).toHaveLength(1);
    expect(even[0]).toMatch(/4 voters .* even number: a majority is 3, so it survives 1 lost voter, no more than 3 voters would; consider adding a witness/);
    expect(load({}).warnings).toEqual([]); // 2 LBs + witness = 3
  });
});

describe("the program with bad config", () => {
  it("fails before declaring any resource, and shows the warning for an even voter count", async () => {
    const resources = await setupMocks();
    pulumi.runtime.setAllConfig({ ...BASE_CONFIG, "ha-lb:region": "nowhere" }, ["ha-lb:agentToken", "ha-lb:sshPrivateKey"]);
    vi.resetModules();
    await expect(import("../../index.js")).rejects.toThrow(/ha-lb:region: must be a DigitalOcean region slug/);
    expect(resources).toEqual([]);
    const r = await runProgram({ ...BASE_CONFIG, "ha-lb:colors": JSON.stringify({ blue: { count: 3 } }) });
    expect(r.warnings.join("\n")).toMatch(/4 voters/);
  });

  it("warns when a secret was set without --secret", async () => {
    const r = await runProgram(BASE_CONFIG, "dev", ["ha-lb:sshPrivateKey"]);
    expect(r.warnings).toEqual(["ha-lb:agentToken: is stored in plain text in the stack file; set it with pulumi config set --secret ha-lb:agentToken"]);
  });
});
