/**
 * The component package, as `pulumi package add` sees it, without the Pulumi CLI: start the plugin
 * the way Pulumi's Node.js language host does (its plugin runner, @pulumi/pulumi/cmd/run-plugin,
 * given the package directory), read the port it prints, and ask for the schema over gRPC with the
 * stubs @pulumi/pulumi ships.
 */
import { load as parseYaml } from "js-yaml";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterConfig, type ClusterArgs } from "../../components/public.js";

const root = join(__dirname, "..", "..");
// The gRPC library and stubs as @pulumi/pulumi loads them (one grpc-js instance for both).
const pulumiRequire = createRequire(require.resolve("@pulumi/pulumi/package.json"));
const grpc = pulumiRequire("@grpc/grpc-js") as typeof import("@grpc/grpc-js");
const services = pulumiRequire("./proto/provider_grpc_pb.js") as {
  ResourceProviderClient: new (
    address: string,
    credentials: unknown,
  ) => {
    getSchema(req: unknown, cb: (err: Error | null, res?: { getSchema(): string }) => void): void;
    close(): void;
  };
};
const messages = pulumiRequire("./proto/provider_pb.js") as { GetSchemaRequest: new () => unknown };

// Printing the port can take a while on a busy two-core machine: the runner registers ts-node and
// loads the sources; GetSchema then type-checks the project to infer the schema.
const START_MS = 120_000;

let plugin: ChildProcess | undefined;
let stderr = "";

function startPlugin(): Promise<number> {
  const runPlugin = join(dirname(require.resolve("@pulumi/pulumi/package.json")), "cmd", "run-plugin");
  // What pulumi-language-nodejs's RunPlugin runs: node <run-plugin> <program directory>, with
  // PULUMI_NODEJS_TYPESCRIPT=true (the default `typescript: true` runtime option).
  const child = spawn(process.execPath, [runPlugin, root], { cwd: root, env: { ...process.env, PULUMI_NODEJS_TYPESCRIPT: "true" }, stdio: "pipe" });
  plugin = child;
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`the plugin printed no port within ${START_MS} ms; stderr: ${stderr}`)), START_MS);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const line = out.split("\n")[0];
      if (out.includes("\n")) {
        clearTimeout(timer);
        if (/^\d{1,5}$/.test(line.trim())) resolve(Number(line.trim()));
        else reject(new Error(`the plugin's first line is not a port: ${JSON.stringify(line)}; stderr: ${stderr}`));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the plugin exited (${code}) before printing its port; stderr: ${stderr}`));
    });
  });
}

function getSchema(port: number): Promise<Schema> {
  const client = new services.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.getSchema(new messages.GetSchemaRequest(), (err, res) => {
      client.close();
      if (err || !res) reject(new Error(`GetSchema failed: ${err?.message}; plugin stderr: ${stderr}`));
      else resolve(JSON.parse(res.getSchema()) as Schema);
    });
  });
}

interface Property {
  type?: string;
  $ref?: string;
  plain?: boolean;
  items?: Property;
}
interface Schema {
  name: string;
  resources: Record<
    string,
    { isComponent?: boolean; inputProperties: Record<string, Property>; requiredInputs: string[]; properties: Record<string, Property>; required: string[] }
  >;
  types: Record<string, { properties: Record<string, Property> }>;
}

let schema: Schema;
beforeAll(async () => {
  schema = await getSchema(await startPlugin());
}, 2 * START_MS);
afterAll(() => {
  plugin?.kill("SIGTERM");
});

describe("the component package's schema (GetSchema on the running plugin)", () => {
  it("is package ha-lb with one resource, the Cluster component (HaLbCluster's args do not infer, so it is not exported)", () => {
    expect(schema.name).toBe("ha-lb");
    expect(Object.keys(schema.resources)).toEqual(["ha-lb:index:Cluster"]);
    expect(schema.resources["ha-lb:index:Cluster"].isComponent).toBe(true);
  });

  it("has the inputs: shaping args plain, the two secrets as Inputs", () => {
    const c = schema.resources["ha-lb:index:Cluster"];
    const plain = [
      "region",
      "image",
      "size",
      "blueCount",
      "greenCount",
      "blueSize",
      "greenSize",
      "activeColor",
      "witnessRegion",
      "vpcUuid",
      "sshKeys",
      "adminCidrs",
      "metricsCidrs",
      "backends",
      "listenPorts",
      "reservedIp",
      "retainReservedIp",
      "peerKeyGeneration",
      "namePrefix",
    ];
    expect(Object.keys(c.inputProperties).sort()).toEqual([...plain, "agentToken", "sshPrivateKey"].sort());
    for (const k of plain) expect(c.inputProperties[k].plain, k).toBe(true);
    for (const k of ["agentToken", "sshPrivateKey"]) expect(c.inputProperties[k]).toMatchObject({ type: "string" });
    for (const k of ["agentToken", "sshPrivateKey"]) expect(c.inputProperties[k].plain, k).toBeUndefined();
    expect(c.inputProperties.backends).toMatchObject({ type: "array", items: { type: "string" } });
    expect(c.inputProperties.listenPorts).toMatchObject({ type: "array", items: { type: "number" } });
    expect(c.inputProperties.blueCount.type).toBe("number");
    expect(c.requiredInputs.sort()).toEqual(["adminCidrs", "agentToken", "backends", "region", "sshKeys", "sshPrivateKey"]);
  });

  it("has the outputs, load balancers as an object type", () => {
    const c = schema.resources["ha-lb:index:Cluster"];
    expect(Object.keys(c.properties).sort()).toEqual(["activeColor", "loadBalancers", "membershipVersion", "reservedIp", "witnessIp"]);
    expect(c.properties.reservedIp.type).toBe("string");
    expect(c.properties.membershipVersion.type).toBe("number");
    expect(c.required.sort()).toEqual(["activeColor", "loadBalancers", "membershipVersion", "reservedIp"]);
    expect(c.properties.loadBalancers).toEqual(expect.objectContaining({ type: "array", items: { $ref: "#/types/ha-lb:index:LoadBalancerInfo" } }));
    expect(Object.keys(schema.types["ha-lb:index:LoadBalancerInfo"].properties).sort()).toEqual(["color", "name", "privateIp", "publicIp"]);
  });
});

describe("examples/yaml/Pulumi.yaml", () => {
  const doc = parseYaml(readFileSync(join(root, "examples", "yaml", "Pulumi.yaml"), "utf8")) as {
    runtime: string;
    packages: Record<string, string>;
    resources: Record<string, { type: string; properties: Record<string, unknown> }>;
    outputs: Record<string, string>;
  };

  it("uses the package from this repository, with inputs and outputs the schema has and values the component accepts", () => {
    expect(doc.runtime).toBe("yaml");
    expect(join(root, "examples", "yaml", doc.packages["ha-lb"])).toBe(join(root));
    const used = Object.entries(doc.resources).filter(([, r]) => r.type.startsWith("ha-lb:"));
    expect(used.map(([, r]) => r.type)).toEqual(["ha-lb:index:Cluster"]);
    const [name, tier] = used[0];
    const c = schema.resources[tier.type];
    for (const k of Object.keys(tier.properties)) expect(Object.keys(c.inputProperties), k).toContain(k);
    for (const k of c.requiredInputs) expect(Object.keys(tier.properties), k).toContain(k);
    // The secrets come from secret config (`${…}`), never written in the file.
    expect(tier.properties.agentToken).toBe("${agentToken}");
    expect(tier.properties.sshPrivateKey).toBe("${sshPrivateKey}");
    expect(() => clusterConfig(tier.properties as unknown as ClusterArgs)).not.toThrow();
    for (const ref of Object.values(doc.outputs)) {
      const m = /^\$\{(\w+)\.(\w+)\}$/.exec(ref);
      expect(m?.[1], ref).toBe(name);
      expect(Object.keys(c.properties), ref).toContain(m![2]);
    }
  });
});
