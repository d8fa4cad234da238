/**
 * ha-lb:vpcUuid: the LBs in an existing VPC (the servers' own), and pools by tag that resolve only
 * droplets in the LBs' VPC (components/network.ts, components/pool-servers.ts).
 */
import { afterEach, describe, expect, it } from "vitest";
import { loadStackConfig } from "../../components/config.js";
import { checkExistingVpc } from "../../components/network.js";
import { resolveTaggedPools } from "../../components/pool-servers.js";
import { clusterConfig, type ClusterArgs } from "../../components/public.js";
import { BASE_CONFIG, existingVpcs, runProgram, taggedDroplets } from "./harness.js";

const APPS_VPC = "5a4f7c2e-1d3b-4c8a-9e6f-0b1c2d3e4f5a";
const OTHER_VPC = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b";
const FRA_VPC = "7c6b5a4f-3e2d-4c1b-9a0f-e9d8c7b6a5f4";
const { "ha-lb:backends": _short, ...NO_SHORT_FORM } = BASE_CONFIG;
const TAG_POOL = {
  ...NO_SHORT_FORM,
  "ha-lb:frontends": JSON.stringify([{ port: 80, protocol: "http", pool: "app" }]),
  "ha-lb:pools": JSON.stringify({ app: { tag: "app", port: 8080 } }),
};
const droplet = (name: string, addr: string, vpc: string) => ({ name, ipv4AddressPrivate: addr, vpcUuid: vpc });
const configOf = (extra: Record<string, string>) => loadStackConfig((k) => ({ ...BASE_CONFIG, ...extra })[`ha-lb:${k}`]);

/**
 * Runs the program and collects the errors that Pulumi's language host would report: a failed
 * apply rejects the registration of every resource that depends on it, and the host fails the
 * program with that error (its unhandledRejection handler). Here the test's listener stands in.
 */
async function programErrors(config: Record<string, string>, preview = false): Promise<string[]> {
  const errors = new Set<string>();
  const previous = process.listeners("unhandledRejection");
  process.removeAllListeners("unhandledRejection");
  process.on("unhandledRejection", (e) => void errors.add(e instanceof Error ? e.message.replace(/^(error serializing property "\w+": )+/, "") : String(e)));
  try {
    // The program never finishes when the LBs' droplets cannot register (no VPC id): wait for the
    // first error (bounded), then a little longer for others.
    const done = runProgram(config, "dev", undefined, preview).then(() => true);
    for (let i = 0; i < 500 && !errors.size; i++) if (await Promise.race([done, new Promise((r) => setTimeout(() => r(false), 20))])) break;
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    process.removeAllListeners("unhandledRejection");
    for (const l of previous) process.on("unhandledRejection", l);
  }
  return [...errors];
}

afterEach(() => {
  for (const k of Object.keys(taggedDroplets)) delete taggedDroplets[k];
  for (const k of Object.keys(existingVpcs)) delete existingVpcs[k];
});

describe("ha-lb:vpcUuid", () => {
  it("is optional and, when set, must be a lowercase VPC UUID (one precise line)", () => {
    expect(configOf({}).config.vpcUuid).toBeUndefined();
    expect(configOf({ "ha-lb:vpcUuid": APPS_VPC }).config.vpcUuid).toBe(APPS_VPC);
    for (const bad of ["apps-vpc", APPS_VPC.toUpperCase(), `${APPS_VPC}0`, ""])
      expect(() => configOf({ "ha-lb:vpcUuid": bad }), bad).toThrow(
        /ha-lb:vpcUuid: must be a DigitalOcean VPC id, a lowercase UUID as `doctl vpcs list` prints it(, got .*)?; expected the id of an existing VPC in region/,
      );
  });

  it("the public component takes it as an optional plain arg, checked by the same schema", () => {
    const args: ClusterArgs = {
      region: "nyc3",
      witnessRegion: "sfo3",
      sshKeys: ["ab:cd:ef"],
      adminCidrs: ["203.0.113.0/24"],
      backends: ["10.20.0.5:8080"],
      agentToken: "t",
      sshPrivateKey: "k",
    };
    expect(clusterConfig(args).config.vpcUuid).toBeUndefined();
    expect(clusterConfig({ ...args, vpcUuid: APPS_VPC }).config.vpcUuid).toBe(APPS_VPC);
    expect(() => clusterConfig({ ...args, vpcUuid: "apps" })).toThrow(/^invalid stack configuration:\n {2}vpcUuid: must be a DigitalOcean VPC id/);
  });

  it("an existing VPC in another region than the LBs' is refused, naming both regions", () => {
    expect(checkExistingVpc({ id: APPS_VPC, name: "apps", region: "nyc3" }, "nyc3")).toBe(APPS_VPC);
    expect(() => checkExistingVpc({ id: FRA_VPC, name: "apps-fra", region: "fra1" }, "nyc3")).toThrow(
      `ha-lb:vpcUuid: the VPC ${FRA_VPC} (apps-fra) is in region fra1, not nyc3 where the LBs run`,
    );
  });

  it("puts the LBs in that VPC, creates none, leaves the witness (another region) out of it, and resolves tags in it", async () => {
    existingVpcs[APPS_VPC] = { id: APPS_VPC, name: "apps", region: "nyc3", ipRange: "10.20.0.0/16" };
    taggedDroplets.app = [droplet("app-2", "10.20.0.22", APPS_VPC), droplet("app-1", "10.20.0.21", APPS_VPC)];
    const r = await runProgram({ ...TAG_POOL, "ha-lb:vpcUuid": APPS_VPC });
    expect(r.resources.filter((x) => x.type === "digitalocean:index/vpc:Vpc")).toHaveLength(0);
    const droplets = r.resources.filter((x) => x.type === "digitalocean:index/droplet:Droplet");
    const lbs = droplets.filter((d) => d.name.includes("-lb-"));
    expect(lbs.length).toBe(2);
    for (const d of lbs) expect(d.inputs.vpcUuid).toBe(APPS_VPC);
    expect(droplets.find((d) => d.name.endsWith("-witness"))!.inputs.vpcUuid).toBeUndefined();
    const install = r.resources.find((x) => x.type === "command:remote:Command" && x.name.endsWith("-haproxy"))!;
    const stdin = String((install.inputs.stdin as { value?: unknown }).value ?? install.inputs.stdin);
    expect(stdin).toContain("server s_10_20_0_21_8080 10.20.0.21:8080 check");
    expect(stdin).toContain("server s_10_20_0_22_8080 10.20.0.22:8080 check");
  });

  it("a tagged droplet in another VPC fails the preview, naming the droplet, the tag, both VPCs and the fix", async () => {
    existingVpcs[APPS_VPC] = { id: APPS_VPC, name: "apps", region: "nyc3", ipRange: "10.20.0.0/16" };
    taggedDroplets.app = [droplet("app-1", "10.20.0.21", APPS_VPC), droplet("app-9", "10.30.0.9", OTHER_VPC)];
    // At preview already: the VPC's id comes from an invoke, known before anything is created.
    const errors = await programErrors({ ...TAG_POOL, "ha-lb:vpcUuid": APPS_VPC }, true);
    expect(errors).toEqual([
      `invalid stack configuration:\n  ha-lb:pools: app: the droplet app-9 (tag "app") is in VPC ${OTHER_VPC}, but the LBs use VPC ${APPS_VPC} (ha-lb:vpcUuid), so the LBs cannot reach it; set ha-lb:vpcUuid to ${OTHER_VPC} to run the LBs in that VPC (this replaces the LB droplets), or create the droplet in VPC ${APPS_VPC}, or list its address in servers`,
    ]);
  });

  it("a vpcUuid in another region fails the preview (an id that does not exist fails the provider's getVpc)", async () => {
    existingVpcs[FRA_VPC] = { id: FRA_VPC, name: "apps-fra", region: "fra1", ipRange: "10.40.0.0/16" };
    expect(await programErrors({ ...BASE_CONFIG, "ha-lb:vpcUuid": FRA_VPC }, true)).toEqual([
      `invalid stack configuration:\n  ha-lb:vpcUuid: the VPC ${FRA_VPC} (apps-fra) is in region fra1, not nyc3 where the LBs run, and a droplet can only join a VPC of its own region; expected the id of a VPC in nyc3 (doctl vpcs list)`,
    ]);
  });

  it("without vpcUuid, a new stack's own VPC has no id at preview: the same droplet fails only the first `pulumi up`", async () => {
    taggedDroplets.app = [droplet("app-9", "10.30.0.9", OTHER_VPC)];
    expect(await programErrors(TAG_POOL, true)).toEqual([]);
    expect(await programErrors(TAG_POOL)).toEqual([
      expect.stringContaining(`the droplet app-9 (tag "app") is in VPC ${OTHER_VPC}, but the LBs use VPC ha-lb-network-vpc_id (the stack's own VPC)`),
    ]);
  }, 60_000);

  it("without vpcUuid, the stack's own VPC is the LBs' and the message says so", () => {
    expect(() =>
      resolveTaggedPools({ app: { tag: "app", port: 8080 } }, { app: [droplet("app-9", "10.30.0.9", OTHER_VPC)] }, { id: "vpc-own", fromConfig: false }),
    ).toThrow(
      `the droplet app-9 (tag "app") is in VPC ${OTHER_VPC}, but the LBs use VPC vpc-own (the stack's own VPC), so the LBs cannot reach it; set ha-lb:vpcUuid to ${OTHER_VPC}`,
    );
  });
});
