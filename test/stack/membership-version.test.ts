/**
 * The membership version across several `pulumi up`s: it only goes up, whatever the operator's clock
 * does, and only when the member ids change.
 *
 * Under mocks nothing runs a command, so this file models the two things the version relies on, and
 * runs the stack's real command strings with /bin/sh:
 *
 * - the engine's diff of a command:local:Command against its last state: `ignoreChanges` puts the
 *   old value back first (pulumi/pulumi `processIgnoreChanges` → `PropertyPath.Reset`: the old value
 *   where there is one, nothing where there is none); no input changed → nothing runs and the old
 *   stdout stays; a change under a `replaceOnChanges` path (the SDK adds `triggers[*]` in
 *   @pulumi/command 1.2.1 local/command.js; the provider tags `triggers` `replaceOnChanges`) →
 *   replace, i.e. `create` on a new resource with no previous output; any other change → update;
 * - the provider (pulumi/pulumi-command v1.2.1, provider/pkg/provider/local): `Create` runs `create`;
 *   `Update` runs `update` (else `create`) with the old outputs, and `run` adds `environment`, then
 *   PULUMI_COMMAND_STDOUT = the previous stdout when it is not empty and addPreviousOutputInEnv is
 *   not false, and stores stdout minus one trailing newline; a non-zero exit fails the deploy.
 *
 * The operator's clock is a `date` on PATH that prints HALB_FAKE_NOW.
 */
import * as pulumi from "@pulumi/pulumi";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HaLbCluster, MEMBERSHIP_VERSION_CREATE, MEMBERSHIP_VERSION_UPDATE } from "../../components/cluster.js";
import { loadStackConfig } from "../../components/config.js";
import { BASE_CONFIG, setupMocks, unwrap, type Declared } from "./harness.js";

interface CommandState {
  inputs: Record<string, unknown>;
  stdout: string;
}

let clockDir = "";
beforeAll(() => {
  clockDir = mkdtempSync(join(tmpdir(), "halb-clock-"));
  writeFileSync(join(clockDir, "date"), '#!/bin/sh\n[ "$1" = "+%s" ] || { echo "date: only +%s in this test" >&2; exit 1; }\necho "$HALB_FAKE_NOW"\n');
  chmodSync(join(clockDir, "date"), 0o755);
});
afterAll(() => rmSync(clockDir, { recursive: true, force: true }));

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** The engine and the command provider for command:local:Command, as described above; state survives deploys. */
class LocalCommandModel {
  readonly state = new Map<string, CommandState>();
  /** What each deploy did, per resource: "create", "update", "replace" or "same". */
  readonly steps: string[] = [];
  readonly errors: string[] = [];
  now = 0;

  run(script: string, env: Record<string, string>): string {
    const out = execFileSync("/bin/sh", ["-c", script], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, PATH: `${clockDir}:${process.env.PATH}`, HALB_FAKE_NOW: String(this.now), ...env },
    });
    return out.replace(/\n$/, "");
  }

  step(name: string, rawInputs: Record<string, unknown>, opts: pulumi.CustomResourceOptions): string {
    const inputs: Record<string, unknown> = Object.fromEntries(Object.entries(rawInputs).map(([k, v]) => [k, unwrap(v)]));
    const old = this.state.get(name);
    try {
      let kind: string;
      let stdout: string;
      if (old) {
        for (const key of opts.ignoreChanges ?? []) {
          if (key in old.inputs) inputs[key] = old.inputs[key];
          else delete inputs[key];
        }
      }
      const env = (inputs.environment ?? {}) as Record<string, string>;
      const replaceKeys = (opts.replaceOnChanges ?? []).map((p) => p.replace(/\[\*\]$/, ""));
      if (!old || replaceKeys.some((k) => !sameJson(old.inputs[k], inputs[k]))) {
        kind = old ? "replace" : "create";
        stdout = this.run(String(inputs.create), env);
      } else if (sameJson(old.inputs, inputs)) {
        kind = "same";
        stdout = old.stdout;
      } else {
        kind = "update";
        const withPrevious: Record<string, string> = inputs.addPreviousOutputInEnv !== false && old.stdout !== "" ? { PULUMI_COMMAND_STDOUT: old.stdout } : {};
        stdout = this.run(String(inputs.update ?? inputs.create), { ...env, ...withPrevious });
      }
      this.state.set(name, { inputs, stdout });
      this.steps.push(`${name}: ${kind}`);
      return stdout;
    } catch (e) {
      this.errors.push(`${name}: ${(e as Error).message}`);
      return "";
    }
  }
}

/** One `pulumi up` of HaLbCluster with this config and clock; returns the versions the agents are told. */
async function deploy(model: LocalCommandModel, raw: Record<string, string>, now: number): Promise<{ versions: number[]; resources: Declared[] }> {
  model.now = now;
  const steps = model.steps.length;
  const opts = new Map<string, pulumi.CustomResourceOptions>();
  const resources = await setupMocks("dev", (a) => model.step(a.name, a.inputs as Record<string, unknown>, opts.get(a.name) ?? {}));
  const { config } = loadStackConfig((k) => raw[`ha-lb:${k}`]);
  const record: pulumi.ResourceTransformation = (a) => {
    if (a.type === "command:local:Command") opts.set(a.name, a.opts as pulumi.CustomResourceOptions);
    return undefined;
  };
  new HaLbCluster(
    "ha-lb",
    { config, agentToken: pulumi.secret("T"), sshPrivateKey: pulumi.secret("K"), bundle: { path: __filename, sha256: "ab".repeat(32) }, prefix: "dev" },
    { transformations: [record] },
  );
  const configs = () => resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config"));
  const droplets = config.colors.blue.count + config.colors.green.count + (config.witnessRegion ? 1 : 0);
  for (let i = 0; i < 500 && model.errors.length === 0 && configs().length < droplets; i++) await new Promise((r) => setTimeout(r, 10));
  if (model.errors.length) throw new Error(model.errors.join("\n"));
  expect(model.steps.length, "the version command ran once in this deploy").toBe(steps + 1);
  const versions = configs().map((x) => (JSON.parse(unwrap(x.inputs.stdin) as string) as { config: { membershipVersion: number } }).config.membershipVersion);
  expect(versions).toHaveLength(droplets);
  return { versions, resources };
}

const colors = (blue: number, green = 0) => ({ ...BASE_CONFIG, "ha-lb:colors": JSON.stringify({ blue: { count: blue }, green: { count: green } }) });
const EPOCH = "ha-lb-membership-epoch";

// Each deploy runs the whole program under mocks: seconds on a loaded two-core machine.
describe("the membership version", { timeout: 60_000 }, () => {
  it("a new stack starts at the clock; every later membership change adds one, with the clock turned back", async () => {
    const model = new LocalCommandModel();
    const first = await deploy(model, colors(2), 2_000_000_000);
    expect(first.versions).toEqual([2_000_000_000, 2_000_000_000, 2_000_000_000]);
    // A third blue droplet: new member ids. The clock is now a billion seconds behind.
    const second = await deploy(model, colors(3), 1_000_000_000);
    expect(second.versions).toEqual(Array(4).fill(2_000_000_001));
    // Back to two, a green one added, and the clock at 1.
    const third = await deploy(model, colors(2, 1), 1);
    expect(third.versions).toEqual(Array(4).fill(2_000_000_002));
    expect(model.steps).toEqual([`${EPOCH}: create`, `${EPOCH}: update`, `${EPOCH}: update`]);
  });

  it("a deploy that does not change the members does not change the version (nor run the command)", async () => {
    const model = new LocalCommandModel();
    const first = await deploy(model, colors(2), 1_800_000_000);
    const other = { ...colors(2), "ha-lb:backends": JSON.stringify(["10.10.0.9:9000"]), "ha-lb:listenPorts": "[8080]", "ha-lb:metricsCidrs": '["10.0.0.0/8"]' };
    const second = await deploy(model, other, 1_900_000_000);
    expect(second.versions).toEqual(first.versions);
    expect(model.steps).toEqual([`${EPOCH}: create`, `${EPOCH}: same`]);
  });

  it("an existing stack (a Unix time as its version, the member ids in `triggers`) continues above it, never resets", async () => {
    const model = new LocalCommandModel();
    // The state the previous code left: `date +%s` re-run by replacement whenever `triggers` changed.
    model.state.set(EPOCH, {
      inputs: { create: MEMBERSHIP_VERSION_CREATE, triggers: ["dev-lb-blue-1-400011,dev-lb-blue-2-400012,dev-witness-400013"] },
      stdout: "1767225600",
    });
    const same = await deploy(model, colors(2), 1_000);
    expect(same.versions).toEqual([1_767_225_601, 1_767_225_601, 1_767_225_601]);
    const grown = await deploy(model, colors(3), 1_000);
    expect(grown.versions).toEqual(Array(4).fill(1_767_225_602));
    expect(model.steps).toEqual([`${EPOCH}: update`, `${EPOCH}: update`]);
  });

  it("update fails (and so the deploy) when the previous version is missing or not a positive whole number, rather than guess one", () => {
    const model = new LocalCommandModel();
    for (const prev of [undefined, "soon", "0", "007", "-3", "12 13"]) {
      const env: Record<string, string> = prev === undefined ? {} : { PULUMI_COMMAND_STDOUT: prev };
      expect(() => model.run(MEMBERSHIP_VERSION_UPDATE, env), String(prev)).toThrow(/not a positive whole number; refusing to guess one/);
    }
    expect(model.run(MEMBERSHIP_VERSION_UPDATE, { PULUMI_COMMAND_STDOUT: "1767225600" })).toBe("1767225601");
  });
});
