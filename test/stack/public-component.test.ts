/**
 * The public component (ha-lb:index:Cluster) under mocks. The inferred schema cannot mark an input
 * secret, so a caller in YAML or another language may hand over the token and the key as plain
 * strings: the component must wrap them with pulumi.secret itself.
 */
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import { Cluster, clusterInputs, type ClusterArgs } from "../../components/public.js";
import { StackConfigError } from "../../components/config.js";
import { isSecretValue, plainView, setupMocks, type Declared } from "./harness.js";

const TOKEN = "dop_v1_0123456789abcdef0123456789abcdefTOKENSECRET";
const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----SSHKEYSECRET-----END";
const ARGS: ClusterArgs = {
  region: "nyc3",
  witnessRegion: "sfo3",
  sshKeys: ["ab:cd:ef"],
  adminCidrs: ["203.0.113.0/24"],
  backends: ["10.10.0.5:8080"],
  agentToken: TOKEN,
  sshPrivateKey: KEY,
};

const promiseOf = <T>(o: pulumi.Output<T>) => new Promise<T>((r) => o.apply((v) => (r(v), v)));
/** The inputs with every secret wrapper opened: what the provider gets. */
const opened = (v: unknown): unknown =>
  isSecretValue(v)
    ? opened(v.value)
    : Array.isArray(v)
      ? v.map(opened)
      : v && typeof v === "object"
        ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, opened(x)]))
        : v;

let resources: Declared[];
beforeAll(async () => {
  resources = await setupMocks("dev");
});

describe("Cluster wraps its secret inputs with pulumi.secret", () => {
  it("the token and the key reach HaLbCluster as secret Outputs, given plain strings or plain Outputs", async () => {
    for (const given of [ARGS, { ...ARGS, agentToken: pulumi.output(TOKEN), sshPrivateKey: pulumi.output(KEY) }]) {
      const i = clusterInputs("edge", given);
      expect(await pulumi.isSecret(i.agentToken)).toBe(true);
      expect(await pulumi.isSecret(i.sshPrivateKey)).toBe(true);
      expect(await promiseOf(i.agentToken)).toBe(TOKEN);
      expect(await promiseOf(i.sshPrivateKey)).toBe(KEY);
    }
  });

  it("declares the tier; no resource input shows the token or the key in clear text, yet both are deployed", async () => {
    const c = new Cluster("edge", { ...ARGS, blueCount: 2, greenCount: 1, listenPorts: [80, 443] });
    expect(await promiseOf(c.reservedIp)).toBe("198.51.100.7");
    expect(await promiseOf(c.activeColor)).toBe("blue");
    const lbs = await promiseOf(c.loadBalancers);
    expect(lbs.map((l) => l.name).sort()).toEqual(["edge-lb-blue-1", "edge-lb-blue-2", "edge-lb-green-1"]);
    expect(await promiseOf(c.witnessIp)).toMatch(/^203\.0\.113\.\d+$/);
    expect(await promiseOf(c.membershipVersion)).toBeGreaterThan(0);
    // The agents' configs register once the plan resolves: wait for one per droplet (bounded), then
    // let the last registrations land.
    const configs = () => resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config")).length;
    for (let i = 0; i < 500 && configs() < 4; i++) await new Promise((r) => setTimeout(r, 20));
    let n = -1;
    for (let i = 0; i < 50 && n !== resources.length; i++) {
      n = resources.length;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(configs()).toBe(4);

    const component = resources.find((x) => x.type === "ha-lb:index:Cluster" && x.name === "edge")!;
    expect(component.inputs).toEqual({}); // args are not recorded as the component's inputs
    expect(resources.some((x) => x.type === "ha-lb:index:HaLbCluster" && x.name === "edge")).toBe(true);
    for (const r of resources) {
      const shown = JSON.stringify(plainView(r.inputs));
      expect(shown, `${r.type} ${r.name}`).not.toContain("TOKENSECRET");
      expect(shown, `${r.type} ${r.name}`).not.toContain("SSHKEYSECRET");
    }
    const deployed = JSON.stringify(resources.map((r) => opened(r.inputs)));
    expect(deployed).toContain("TOKENSECRET");
    expect(deployed).toContain("SSHKEYSECRET");
  });
});

describe("Cluster validates its args with the stack config's schema", () => {
  it("one line per bad arg, named as the arg", () => {
    const bad = () => new Cluster("bad", { ...ARGS, region: "Mars", blueCount: 12, activeColor: "red" });
    expect(bad).toThrow(StackConfigError);
    try {
      bad();
    } catch (e) {
      const lines = (e as StackConfigError).lines;
      expect(lines.some((l) => l.startsWith("region: "))).toBe(true);
      expect(lines.some((l) => l.startsWith("activeColor: "))).toBe(true);
      expect(lines.some((l) => l.startsWith("blueCount/greenCount/blueSize/greenSize: ") && l.includes("blue.count"))).toBe(true);
      expect(lines.join("\n")).not.toContain("ha-lb:");
    }
  });

  it("refuses an Output where the arg shapes the resources", () => {
    expect(() => clusterInputs("x", { ...ARGS, backends: [pulumi.output("10.10.0.5:8080") as unknown as string] })).toThrow(
      /backends: must be a plain value known before deployment/,
    );
  });

  it("a two-droplet tier without a witness is refused, as in the stack", () => {
    expect(() => clusterInputs("x", { ...ARGS, witnessRegion: undefined })).toThrow(/witnessRegion: 2 load balancers and no witness/);
  });
});
