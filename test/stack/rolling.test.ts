/**
 * The deployment order Pulumi will follow, read from the resource options the components pass
 * (recorded with a transformation, which the SDK applies in-process, also under mocks).
 */
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import { HaLbCluster } from "../../components/cluster.js";
import { loadStackConfig } from "../../components/config.js";
import { BASE_CONFIG, setupMocks } from "./harness.js";

const deps = new Map<string, string[]>();
/** Per droplet: its deleteBeforeReplace option. */
const deleteFirst = new Map<string, boolean | undefined>();
const named = (r: pulumi.Resource) => (r as unknown as { __name: string }).__name;

beforeAll(async () => {
  await setupMocks("prod");
  const raw: Record<string, string> = { ...BASE_CONFIG, "ha-lb:colors": JSON.stringify({ blue: { count: 2 }, green: { count: 2 } }) };
  const { config } = loadStackConfig((k) => raw[`ha-lb:${k}`]);
  const record: pulumi.ResourceTransformation = (a) => {
    deps.set(a.name, ((a.opts.dependsOn ?? []) as pulumi.Resource[]).map(named));
    if (a.type === "digitalocean:index/droplet:Droplet") deleteFirst.set(a.name, (a.opts as pulumi.CustomResourceOptions).deleteBeforeReplace);
    return undefined;
  };
  const cluster = new HaLbCluster(
    "ha-lb",
    { config, agentToken: pulumi.secret("T"), sshPrivateKey: pulumi.secret("K"), bundle: { path: __filename, sha256: "ab".repeat(32) }, prefix: "prod" },
    { transformations: [record] },
  );
  await new Promise<void>((r) => cluster.reservedIp.apply(() => r()));
});

describe("rolling restarts", () => {
  it("restart one droplet at a time: each restart waits for the previous droplet's restart; the standby color (green) first", () => {
    const order = ["prod-lb-green-1", "prod-lb-green-2", "prod-lb-blue-1", "prod-lb-blue-2", "witness"];
    const restart = (n: string) => `ha-lb-agent-${n}-restart`;
    expect(deps.get(restart(order[0]))).not.toEqual(expect.arrayContaining([expect.stringMatching(/-restart$/)]));
    for (let i = 1; i < order.length; i++) expect(deps.get(restart(order[i])), order[i]).toContain(restart(order[i - 1]));
  });

  it("the second pass (the deferred leader's restart) starts after the whole first pass, one droplet at a time, in the same order", () => {
    const order = ["prod-lb-green-1", "prod-lb-green-2", "prod-lb-blue-1", "prod-lb-blue-2", "witness"];
    const second = (n: string) => `ha-lb-agent-${n}-leader-restart`;
    expect(deps.get(second(order[0]))).toEqual(["ha-lb-agent-witness-restart"]);
    for (let i = 1; i < order.length; i++) expect(deps.get(second(order[i])), order[i]).toEqual([second(order[i - 1])]);
    expect(deps.get("ha-lb-switch-check")).toContain(second("witness"));
  });

  it("a restart comes after its own bundle, unit, HAProxy config and agent config", () => {
    expect(deps.get("ha-lb-agent-prod-lb-blue-2-restart")).toEqual(
      expect.arrayContaining([
        "ha-lb-agent-prod-lb-blue-2-bundle",
        "ha-lb-agent-prod-lb-blue-2-unit",
        "ha-lb-agent-prod-lb-blue-2-haproxy",
        "ha-lb-agent-prod-lb-blue-2-config",
      ]),
    );
    expect(deps.get("ha-lb-agent-prod-lb-blue-2-config")).toEqual(["ha-lb-agent-prod-lb-blue-2-bundle", "ha-lb-agent-prod-lb-blue-1-config"]);
  });

  it("config steps run one droplet at a time, in rolling order: a reload that needs a restart never restarts every agent at once", () => {
    const order = ["prod-lb-green-1", "prod-lb-green-2", "prod-lb-blue-1", "prod-lb-blue-2", "witness"];
    const config = (n: string) => `ha-lb-agent-${n}-config`;
    expect(deps.get(config(order[0]))).toEqual([`ha-lb-agent-${order[0]}-bundle`]);
    for (let i = 1; i < order.length; i++) expect(deps.get(config(order[i])), order[i]).toContain(config(order[i - 1]));
  });

  it("the switch check runs after every droplet's config and restart", () => {
    const d = deps.get("ha-lb-switch-check")!;
    for (const n of ["prod-lb-blue-1", "prod-lb-green-2", "witness"])
      expect(d).toEqual(expect.arrayContaining([`ha-lb-agent-${n}-config`, `ha-lb-agent-${n}-restart`]));
  });

  it("a replaced droplet (new image, or new userData: the host-key upgrade) is created before the old one is deleted, the witness too", () => {
    // The new droplet is configured and joins (joint consensus) while the old one still serves; the
    // old one's retire step then hands over before it is deleted.
    expect([...deleteFirst.keys()].sort()).toEqual(["prod-lb-blue-1", "prod-lb-blue-2", "prod-lb-green-1", "prod-lb-green-2", "prod-witness"]);
    for (const [name, v] of deleteFirst) expect(v, name).toBe(false);
  });

  it("the retire (handover before delete) step depends on the restart, so it is deleted before the droplet", () => {
    expect(deps.get("ha-lb-agent-prod-lb-green-1-retire")).toEqual(["ha-lb-agent-prod-lb-green-1-restart"]);
  });
});
