/** Run the Pulumi program under mocks and collect every resource it declares. */
import * as pulumi from "@pulumi/pulumi";
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { openSshPublicKey } from "../../agent/identity.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { vi } from "vitest";
import { load as parseYaml } from "js-yaml";

export interface Declared {
  type: string;
  name: string;
  inputs: Record<string, any>;
  /** Set for reads (`Resource.get`). */
  id?: string;
  /** The state the mock answered with (inputs plus the mocked outputs). */
  state?: Record<string, unknown>;
}

const SECRET_SIG = "4dabf18193072939515e22adb298388d";
export const isSecretValue = (v: unknown): v is { value: unknown } => typeof v === "object" && v !== null && SECRET_SIG in v;
/** The inputs with secret-wrapped values replaced by a marker: what Pulumi would show or store in plain text. */
export function plainView(v: unknown): unknown {
  if (isSecretValue(v)) return "[secret]";
  if (Array.isArray(v)) return v.map(plainView);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainView(x)]));
  return v;
}
export const unwrap = (v: unknown): unknown => (isSecretValue(v) ? v.value : v);

export const BASE_CONFIG: Record<string, string> = {
  "ha-lb:region": "nyc3",
  "ha-lb:witnessRegion": "sfo3",
  "ha-lb:sshKeys": JSON.stringify(["ab:cd:ef"]),
  "ha-lb:sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----SSHKEYSECRET-----END",
  "ha-lb:adminCidrs": JSON.stringify(["203.0.113.0/24"]),
  "ha-lb:backends": JSON.stringify(["10.10.0.5:8080", "10.10.0.6:8080"]),
  "ha-lb:agentToken": "dop_v1_0123456789abcdef0123456789abcdefTOKENSECRET",
};

const b64sha = (s: string) => createHash("sha256").update(s).digest("base64");
/** The mocked tls.PrivateKey (ED25519) of a resource name, in OpenSSH forms: deterministic, so two runs agree. */
export const mockHostKey = (resourceName: string) => ({
  privateKeyOpenssh: `-----BEGIN OPENSSH PRIVATE KEY-----\nHOSTKEYSECRET${b64sha(`private ${resourceName}`)}\n-----END OPENSSH PRIVATE KEY-----\n`,
  publicKeyOpenssh: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${b64sha(`public ${resourceName}`)}\n`,
});

/** A member identity's resource name (components/cluster.ts): `<droplet>-identity-g<generation>`. */
export const IDENTITY_KEY = /-identity-g\d+$/;
/**
 * The mocked tls.PrivateKey of a member identity: a real Ed25519 key (the agent's parsers check it),
 * seeded from the resource name so two runs agree, in the provider's forms (PKCS#8 PEM, OpenSSH public
 * key with its newline). The PEM carries a marker, so a test can find it wherever it leaks.
 */
export const mockIdentityKey = (resourceName: string) => {
  const seed = createHash("sha256").update(`identity ${resourceName}`).digest();
  const key = createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" });
  return {
    privateKeyPem: key.export({ format: "pem", type: "pkcs8" }).toString(),
    publicKeyOpenssh: `${openSshPublicKey(createPublicKey(key))}\n`,
  };
};
/** A mocked ECDSA tls.PrivateKey (the ACME keys): a real P-256 key, so the agent's parsers accept it. */
export const mockEcdsaKey = () => ({
  privateKeyPem: generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string,
});
/** A mocked tls.SelfSignedCert's certPem: recognisable by its resource name (not a parsable certificate). */
export const mockPlaceholder = (resourceName: string) => `-----BEGIN CERTIFICATE-----\nPLACEHOLDER${b64sha(resourceName)}\n-----END CERTIFICATE-----\n`;

/** What the mocked getDroplets answers, per tag (tests set it). */
export const taggedDroplets: Record<string, { name: string; ipv4AddressPrivate: string; vpcUuid: string }[]> = {};

/** What the mocked getVpc answers, per id (tests set it). */
export const existingVpcs: Record<string, { id: string; name: string; region: string; ipRange: string }> = {};

const promiseOf = <T>(o: pulumi.Output<T>) => new Promise<T>((r) => o.apply((v) => (r(v), v)));

/** Mocks the provider; returns the list every declared resource lands in. `localCommand` gives a command:local:Command's stdout. */
/** `preview`: run as `pulumi preview` does (a dry run: what is to be created has no id yet). */
export async function setupMocks(stack = "dev", localCommand?: (a: pulumi.runtime.MockResourceArgs) => string, preview = false): Promise<Declared[]> {
  const resources: Declared[] = [];
  let ip = 10;
  await pulumi.runtime.setMocks(
    {
      newResource(a) {
        const state: Record<string, unknown> = { ...a.inputs };
        resources.push({ type: a.type, name: a.name, inputs: a.inputs, id: a.id, state });
        // As the engine previews a create: no id yet, and the outputs beyond the inputs unknown.
        if (preview && !a.id) return { id: "", state };
        if (a.type === "digitalocean:index/droplet:Droplet") {
          ip++;
          state.ipv4Address = `203.0.113.${ip}`;
          state.ipv4AddressPrivate = `10.10.10.${ip}`;
        }
        // A read (`ReservedIp.get`, adopting an address) arrives with its id: the IP itself.
        if (a.type === "digitalocean:index/reservedIp:ReservedIp") Object.assign(state, { ipAddress: a.id || "198.51.100.7", region: "nyc3" });
        if (a.type === "random:index/randomBytes:RandomBytes") state.hex = `${a.name.endsWith("0") ? "aa" : "bb"}`.repeat(32);
        if (a.type === "tls:index/privateKey:PrivateKey" && a.inputs.algorithm === "ECDSA") Object.assign(state, mockEcdsaKey());
        else if (a.type === "tls:index/privateKey:PrivateKey") Object.assign(state, IDENTITY_KEY.test(a.name) ? mockIdentityKey(a.name) : mockHostKey(a.name));
        if (a.type === "tls:index/selfSignedCert:SelfSignedCert") state.certPem = mockPlaceholder(a.name);
        if (a.type === "command:local:Command") state.stdout = localCommand ? localCommand(a) : "1767225600";
        return { id: a.type.endsWith(":Droplet") ? String(400000 + ip) : `${a.name}_id`, state };
      },
      call(a) {
        // Pools given by tag (components/pool-servers.ts): the droplets taggedDroplets holds for the tag.
        if (a.token === "digitalocean:index/getDroplets:getDroplets") {
          const tag = (a.inputs.filters as { key: string; values: string[] }[])[0].values[0];
          return { id: "droplets", droplets: taggedDroplets[tag] ?? [] };
        }
        // ha-lb:vpcUuid (components/network.ts): the VPC existingVpcs holds for the id.
        if (a.token === "digitalocean:index/getVpc:getVpc") {
          const vpc = existingVpcs[String(a.inputs.id)];
          if (!vpc) throw new Error(`unmocked VPC ${String(a.inputs.id)}`);
          return { ...vpc, urn: `do:vpc:${vpc.id}`, default: false, description: "", createdAt: "2026-01-01T00:00:00Z" };
        }
        throw new Error(`unmocked invoke ${a.token}`);
      },
    },
    "ha-lb",
    stack,
    preview,
  );
  return resources;
}

/** The example stack files' config (Pulumi.<stack>.yaml), as the CLI would hand it over. */
export function exampleStackConfig(stack: "dev" | "prod"): Record<string, string> {
  const doc = parseYaml(readFileSync(join(__dirname, "..", "..", `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> };
  return Object.fromEntries(Object.entries(doc.config).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
}

export async function runProgram(
  config: Record<string, string>,
  stack = "dev",
  secretKeys = ["ha-lb:agentToken", "ha-lb:sshPrivateKey"],
  preview = false,
): Promise<{ resources: Declared[]; outputs: Record<string, unknown>; warnings: string[] }> {
  const resources = await setupMocks(stack, undefined, preview);
  pulumi.runtime.setAllConfig({ ...config }, secretKeys);
  const warnings: string[] = [];
  const warn = vi.spyOn(pulumi.log, "warn").mockImplementation(async (m: string) => void warnings.push(m));
  vi.resetModules();
  const program = await import("../../index.js");
  const outputs = {
    reservedIp: await promiseOf(program.reservedIp),
    activeColor: program.activeColor,
    loadBalancers: await promiseOf(program.loadBalancers),
    witness: await promiseOf(program.witness),
  };
  // The agents' configs register only once the plan resolves (every droplet and the membership
  // version): wait for one per droplet (bounded), then let the last registrations land.
  const droplets = (outputs.loadBalancers as unknown[]).length + (outputs.witness ? 1 : 0);
  const configs = () => resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config")).length;
  for (let i = 0; i < 500 && configs() < droplets; i++) await new Promise((r) => setTimeout(r, 20));
  let n = -1;
  for (let i = 0; i < 50 && n !== resources.length; i++) {
    n = resources.length;
    await new Promise((r) => setTimeout(r, 20));
  }
  warn.mockRestore();
  return { resources, outputs, warnings };
}
