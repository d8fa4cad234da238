/** ACME certificates in ha-lb:certificates: the schema, the preview refusals, the keys and placeholders the program makes and ships. */
import { createPrivateKey } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { applyConfig } from "../../agent/apply-config.js";
import { loadAgentConfigFile } from "../../agent/config-file.js";
import { parseAgentConfig } from "../../agent/config.js";
import { planCluster, type PlanInput } from "../../components/plan.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StackConfigError, loadStackConfig, parseStackConfig } from "../../components/config.js";
import { LETS_ENCRYPT_DIRECTORY } from "../../components/lb-config.js";
import { ACME_RESPONDER_PORT } from "../../agent/ports.js";
import { makePki, type TestPki } from "./pki.js";
import { BASE_CONFIG, isSecretValue, mockPlaceholder, plainView, runProgram, unwrap } from "./harness.js";
import { newIdentity } from "../../testbed/identity.js";
import { FIPD_DIR } from "../../components/scripts.js";

const base: Record<string, unknown> = Object.fromEntries(
  Object.entries(BASE_CONFIG)
    .filter(([k]) => k !== "ha-lb:backends")
    .map(([k, v]) => [k.slice("ha-lb:".length), /^[[{]/.test(v) ? JSON.parse(v) : v]),
);
const HMAC = "c2VjcmV0LWhtYWMta2V5LWZvci1lYWItdGVzdHM";

/** 80 redirects (and answers the CA), 443 serves the ACME certificate `site`. */
const site = () => ({
  frontends: [
    { port: 80, protocol: "http", pool: "web", redirectToHttps: true, rateLimit: { requestsPerSecond: 5 } } as Record<string, unknown>,
    { port: 443, protocol: "https", pool: "web", certificates: ["site"] } as Record<string, unknown>,
  ],
  pools: { web: { servers: ["10.10.0.5:8080"] } },
  certificates: { site: { acme: { domains: ["www.example.com", "example.com"], email: "ops@example.com" } as Record<string, unknown> } } as Record<
    string,
    unknown
  >,
});
type Site = ReturnType<typeof site>;
const parse = (over: (s: Site) => Record<string, unknown> = (s) => s) => parseStackConfig({ ...base, ...over(site()) });
const errorsOf = (over: (s: Site) => Record<string, unknown>): string[] => {
  try {
    parse(over);
  } catch (e) {
    expect(e).toBeInstanceOf(StackConfigError);
    return (e as StackConfigError).lines;
  }
  throw new Error("expected a StackConfigError");
};
const withAcme = (acme: Record<string, unknown>) => (s: Site) => ({
  ...s,
  certificates: { site: { acme: { ...(s.certificates.site as { acme: object }).acme, ...acme } } },
});

describe("an ACME certificate in ha-lb:certificates", () => {
  it("is accepted in place of PEMs; an https frontend uses it like any other; the directory defaults to Let's Encrypt production", () => {
    const { config, warnings } = parse();
    expect(warnings).toEqual([]);
    expect(config.acme).toEqual([
      { name: "site", domains: ["www.example.com", "example.com"], email: "ops@example.com", directoryUrl: LETS_ENCRYPT_DIRECTORY },
    ]);
    expect(LETS_ENCRYPT_DIRECTORY).toBe("https://acme-v02.api.letsencrypt.org/directory");
  });

  it("keeps the EAB HMAC key out of the public part; the key id, the directory and its CA are public", () => {
    const raw: Record<string, unknown> = {
      ...base,
      ...withAcme({ directoryUrl: "https://acme.example.net/dir", eab: { kid: "kid-1", hmacKey: HMAC } })(site()),
    };
    const { config, certificates } = loadStackConfig((k) => raw[k], Object.keys(raw));
    expect(certificates.site.acme?.eab?.hmacKey).toBe(HMAC);
    expect(config.acme).toEqual([expect.objectContaining({ directoryUrl: "https://acme.example.net/dir", eabKid: "kid-1" })]);
    expect(JSON.stringify(config)).not.toContain(HMAC);
  });

  it.each([
    [
      "both PEMs and acme",
      (s: Site) => ({ ...s, certificates: { site: { certificate: "C", privateKey: "K", acme: (s.certificates.site as { acme: object }).acme } } }),
      /^ha-lb:certificates: needs exactly one of acme or certificate \+ privateKey, got both .*\(at site\)/,
    ],
    [
      "neither",
      (s: Site) => ({ ...s, certificates: { site: {} } }),
      /^ha-lb:certificates: needs exactly one of acme or certificate \+ privateKey, got none .*\(at site\)/,
    ],
    [
      "a certificate without its key",
      (s: Site) => ({ ...s, certificates: { site: { certificate: "C" } } }),
      /^ha-lb:certificates: needs privateKey \(the PEM key\) with certificate \(at site\)/,
    ],
    [
      "a wildcard",
      withAcme({ domains: ["*.example.com"] }),
      /^ha-lb:certificates: must be a DNS name for HTTP-01: "\*\.example\.com" is a wildcard: ha-lb validates names with ACME's HTTP-01 challenge, which cannot prove a wildcard \(only DNS-01 can.*\(at site\.acme\.domains\[0\]\)/,
    ],
    ["an IP address", withAcme({ domains: ["203.0.113.7"] }), /"203\.0\.113\.7" is an IP address.*\(at site\.acme\.domains\[0\]\)/],
    ["a single label", withAcme({ domains: ["intranet"] }), /"intranet" is a single label.*\(at site\.acme\.domains\[0\]\)/],
    ["an upper-case name", withAcme({ domains: ["WWW.example.com"] }), /"WWW\.example\.com" is not a lowercase DNS name/],
    ["no domain", withAcme({ domains: [] }), /needs at least one domain.*\(at site\.acme\.domains\)/],
    ["a repeated domain", withAcme({ domains: ["example.com", "example.com"] }), /repeats "example\.com" \(at site\.acme\.domains\[1\]\)/],
    ["an invalid email", withAcme({ email: "ops-at-example.com" }), /must be an email address such as ops@example\.com .*\(at site\.acme\.email\)/],
    [
      "a plain-http directory",
      withAcme({ directoryUrl: "http://acme.example.net/dir" }),
      /must be the https URL of an ACME directory, such as https:\/\/acme-staging-v02.*\(at site\.acme\.directoryUrl\)/,
    ],
    [
      "a directory CA that does not parse",
      withAcme({ directoryCaPem: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----" }),
      /does not parse as PEM certificates \(at site\.acme\.directoryCaPem\)/,
    ],
    ["an unknown acme key", withAcme({ challenge: "dns-01" }), /has unknown key "challenge".*\(at site\.acme\)/],
  ])("refuses %s, one line naming where", (_what, over, re) => {
    const lines = errorsOf(over);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(re);
  });

  it("an EAB HMAC key that is not base64url is refused by its length, never shown", () => {
    const lines = errorsOf(withAcme({ eab: { kid: "kid-1", hmacKey: "NOT BASE64 SECRETVALUE!" } }));
    expect(lines).toEqual([
      expect.stringMatching(/^ha-lb:certificates: must be a base64url HMAC key of 16 to 1024 characters, got 23 characters \(at site\.acme\.eab\.hmacKey\)/),
    ]);
    expect(lines.join("\n")).not.toContain("SECRETVALUE");
  });
});

describe("preview refuses an ACME certificate the CA could not validate", () => {
  const expected = '; expected {"port": 80, "protocol": "http", "pool": "web", "redirectToHttps": true} in ha-lb:frontends';
  it.each([
    [
      "no frontend on port 80",
      (s: Site) => ({ ...s, frontends: [{ ...s.frontends[0], port: 8080 }, s.frontends[1]] }),
      `ha-lb:certificates: site: an ACME certificate needs an http frontend on port 80, where the CA's HTTP-01 validation requests arrive; no frontend listens on port 80${expected}`,
    ],
    [
      "port 80 is tcp",
      (s: Site) => ({
        ...s,
        frontends: [{ port: 80, protocol: "tcp", pool: "pass" }, s.frontends[1]],
        pools: { ...s.pools, pass: { servers: ["10.10.0.8:80"] } },
      }),
      `ha-lb:certificates: site: an ACME certificate needs an http frontend on port 80, where the CA's HTTP-01 validation requests arrive; port 80 is a tcp frontend${expected}`,
    ],
    [
      "port 80 admits only allowCidrs",
      (s: Site) => ({ ...s, frontends: [{ ...s.frontends[0], allowCidrs: ["198.51.100.0/24"] }, s.frontends[1]] }),
      "ha-lb:certificates: site: the http frontend on port 80 admits only its allowCidrs, so the CA's HTTP-01 validation requests (from addresses the CA does not publish) would be refused; expected no allowCidrs on the port 80 frontend (denyCidrs is fine), or PEM certificates instead of acme",
    ],
    [
      "the short form without port 80",
      (s: Site) => ({ backends: ["10.10.0.5:8080"], listenPorts: [8080], certificates: s.certificates }),
      `ha-lb:certificates: site: an ACME certificate needs an http frontend on port 80, where the CA's HTTP-01 validation requests arrive; no frontend listens on port 80${expected}`,
    ],
  ])("%s: one precise line", (_what, over, line) => {
    expect(errorsOf(over)).toEqual([line]);
  });

  it("denyCidrs on port 80 is fine; a domain on two ACME certificates is a warning (two orders against the CA's limits)", () => {
    const { warnings } = parse((s) => ({
      ...s,
      frontends: [
        { ...s.frontends[0], denyCidrs: ["192.0.2.0/24"] },
        { ...s.frontends[1], certificates: ["site", "other"] },
      ],
      certificates: { ...s.certificates, other: { acme: { domains: ["example.com"], email: "ops@example.com" } } },
    }));
    expect(warnings).toEqual(['ha-lb:certificates: other: "example.com" is on the ACME certificate site too; each order counts against the CA\'s rate limits']);
  });
});

describe("the program: keys, placeholder and their delivery", () => {
  const run = async () => {
    const { "ha-lb:backends": _short, ...rest } = BASE_CONFIG;
    const s = site();
    const certificates = { site: { acme: { ...(s.certificates.site as { acme: object }).acme, eab: { kid: "kid-1", hmacKey: HMAC } } } };
    return runProgram(
      {
        ...rest,
        "ha-lb:frontends": JSON.stringify(s.frontends),
        "ha-lb:pools": JSON.stringify(s.pools),
        "ha-lb:certificates": JSON.stringify(certificates),
      },
      "dev",
      ["ha-lb:agentToken", "ha-lb:sshPrivateKey", "ha-lb:certificates"],
    );
  };

  it("makes an ECDSA P-256 account key, certificate key and a self-signed placeholder for the domains, per ACME name", async () => {
    const r = await run();
    expect(r.warnings).toEqual([]);
    const keys = r.resources.filter((x) => x.type === "tls:index/privateKey:PrivateKey" && x.name.includes("-acme-"));
    expect(keys.map((k) => [k.name, k.inputs.algorithm, k.inputs.ecdsaCurve]).sort()).toEqual([
      ["ha-lb-acme-site-account-key", "ECDSA", "P256"],
      ["ha-lb-acme-site-key", "ECDSA", "P256"],
    ]);
    const certs = r.resources.filter((x) => x.type === "tls:index/selfSignedCert:SelfSignedCert");
    expect(certs).toHaveLength(1);
    expect(certs[0].inputs.dnsNames).toEqual(["www.example.com", "example.com"]);
    expect(certs[0].inputs.subject).toMatchObject({ commonName: "www.example.com" });
    expect(certs[0].inputs.allowedUses).toContain("server_auth");
    // Signed with the certificate key, so an issued chain for that key replaces it on the same file.
    const keyPem = unwrap(keys.find((k) => k.name === "ha-lb-acme-site-key")!.state!.privateKeyPem);
    expect(unwrap(certs[0].inputs.privateKeyPem)).toBe(keyPem);
  });

  it("copies the ACME child bundle beside the agent's on every LB, and not to the witness", async () => {
    const r = await run();
    const copies = r.resources.filter((x) => x.type === "command:remote:CopyToRemote" && x.name.endsWith("-acme-bundle"));
    expect(copies.map((c) => c.name).sort()).toEqual(["ha-lb-agent-dev-lb-blue-1-acme-bundle", "ha-lb-agent-dev-lb-blue-2-acme-bundle"]);
    for (const c of copies) expect(c.inputs.remotePath).toBe(`${FIPD_DIR}/fipd-acme.cjs`);
  });

  it("every LB's HAProxy bundle carries the placeholder and its key as site.pem, and routes the challenge path to fipd; on secret stdin only", async () => {
    const r = await run();
    const keyPem = String(unwrap(r.resources.find((k) => k.name === "ha-lb-acme-site-key")!.state!.privateKeyPem));
    const installs = r.resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-haproxy"));
    expect(installs).toHaveLength(2);
    for (const c of installs) {
      expect(c.inputs.logging).toBe("none");
      expect(isSecretValue(c.inputs.stdin)).toBe(true);
      const stdin = String(unwrap(c.inputs.stdin));
      expect(stdin).toContain(`#%halb-file site.pem\n${mockPlaceholder("ha-lb-acme-site-placeholder")}${keyPem}`);
      expect(stdin).toContain("ssl crt @CERT_DIR@/site.pem alpn h2,http/1.1");
      expect(stdin).toContain("    use_backend be_acme if acme_challenge\n");
      expect(stdin).toContain(`    server fipd_acme 127.0.0.1:${ACME_RESPONDER_PORT}\n`);
    }
  });

  it("apply-config's secret stdin gives each LB the keys, the EAB HMAC key and the acme section; the witness gets none of it", async () => {
    const r = await run();
    const pem = (name: string) => String(unwrap(r.resources.find((k) => k.name === name)!.state!.privateKeyPem));
    const configs = r.resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config"));
    expect(configs).toHaveLength(3);
    for (const c of configs) {
      expect(isSecretValue(c.inputs.stdin)).toBe(true);
      const doc = JSON.parse(String(unwrap(c.inputs.stdin))) as { config: { acme?: unknown }; acme?: Record<string, Record<string, string>> };
      if (c.name.includes("witness")) {
        expect(doc.acme).toBeUndefined();
        expect(doc.config.acme).toBeUndefined();
        // Its own identity key only: none of the ACME keys, nor the EAB HMAC key.
        const text = String(unwrap(c.inputs.stdin));
        expect(text).not.toMatch(/acme/);
        for (const part of [HMAC, pem("ha-lb-acme-site-key").split("\n")[1], pem("ha-lb-acme-site-account-key").split("\n")[1]])
          expect(text).not.toContain(part);
        continue;
      }
      expect(doc.acme).toEqual({ site: { accountKey: pem("ha-lb-acme-site-account-key"), key: pem("ha-lb-acme-site-key"), eabHmacKey: HMAC } });
      expect(createPrivateKey(doc.acme!.site.key).asymmetricKeyDetails).toEqual({ namedCurve: "prime256v1" });
      expect(doc.config.acme).toEqual({
        certificates: [
          { name: "site", domains: ["www.example.com", "example.com"], email: "ops@example.com", directoryUrl: LETS_ENCRYPT_DIRECTORY, eabKid: "kid-1" },
        ],
      });
    }
    // Nothing Pulumi would show or store in plain text holds a key or the HMAC key.
    const plain = JSON.stringify(plainView(r.resources.map((x) => x.inputs)));
    for (const part of [HMAC, pem("ha-lb-acme-site-key").split("\n")[1], pem("ha-lb-acme-site-account-key").split("\n")[1]]) expect(plain).not.toContain(part);
  });
});

describe("the program's payloads through apply-config", () => {
  let pki: TestPki;
  beforeAll(() => (pki = makePki(["acme.example.net"], 30)));
  afterAll(() => pki.cleanup());

  it("each droplet's stdin is accepted by apply-config: LBs get the key files, the directory's CA and an acme config the agent loads, the witness no acme directory", async () => {
    const { "ha-lb:backends": _short, ...rest } = BASE_CONFIG;
    const s = withAcme({ directoryUrl: "https://acme.example.net/dir", directoryCaPem: pki.ca })(site());
    const r = await runProgram(
      { ...rest, "ha-lb:frontends": JSON.stringify(s.frontends), "ha-lb:pools": JSON.stringify(s.pools), "ha-lb:certificates": JSON.stringify(s.certificates) },
      "dev",
      ["ha-lb:agentToken", "ha-lb:sshPrivateKey", "ha-lb:certificates"],
    );
    const key = String(unwrap(r.resources.find((k) => k.name === "ha-lb-acme-site-key")!.state!.privateKeyPem));
    const dir = mkdtempSync(join(tmpdir(), "halb-acme-payload-"));
    try {
      for (const c of r.resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config"))) {
        const etc = join(dir, c.name);
        await applyConfig(String(unwrap(c.inputs.stdin)), { dir: etc, reload: false });
        const loaded = loadAgentConfigFile(join(etc, "fipd.yaml"));
        if (c.name.includes("witness")) {
          expect(loaded.acme).toBeUndefined();
          expect(readdirSync(etc)).not.toContain("acme");
          continue;
        }
        expect(loaded.acme?.keyDir).toBe(join(etc, "acme"));
        expect(loaded.acme?.certificates.map((x) => x.name)).toEqual(["site"]);
        expect(readdirSync(join(etc, "acme")).sort()).toEqual(["site.account.key", "site.directory-ca.pem", "site.key"]);
        expect(loaded.acme?.certificates[0]).toMatchObject({
          directoryUrl: "https://acme.example.net/dir",
          directoryCaFile: join(etc, "acme", "site.directory-ca.pem"),
        });
        expect(readFileSync(join(etc, "acme", "site.directory-ca.pem"), "utf8")).toBe(pki.ca);
        expect(readFileSync(join(etc, "acme", "site.key"), "utf8")).toBe(key.endsWith("\n") ? key : key + "\n");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the plan (components/plan.ts) with an ACME certificate", () => {
  /** Each droplet's identity: real public keys, the private ones by reference. */
  const IDENTITIES = Object.fromEntries(["lb-1", "witness"].map((n) => [n, { publicKey: newIdentity().publicKey, key: `KEY:${n}` }]));
  const input: PlanInput<string> = {
    config: {
      activeColor: "blue",
      metricsCidrs: [],
      listenPorts: [80],
      backends: ["10.10.0.5:8080"],
      acme: [{ name: "site", domains: ["www.example.com"], email: "ops@example.com", directoryUrl: LETS_ENCRYPT_DIRECTORY, eabKid: "kid-1" }],
    },
    lbs: [{ name: "lb-1", color: "blue", dropletId: 11, publicAddress: "203.0.113.11", vpcAddress: "10.10.0.11" }],
    witness: { name: "witness", dropletId: 12, publicAddress: "198.51.100.50" },
    reservedIp: "198.51.100.7",
    membershipVersion: 1,
    keys: { agentToken: "TOKEN", identities: IDENTITIES, acme: { site: { accountKey: "ACCOUNT", key: "CERTKEY", eabHmacKey: "EAB" } } },
  };

  it("LBs get the acme section the agent accepts, the key references and HAProxy's responder route; the witness nothing", () => {
    const [lb, witness] = planCluster(input).droplets;
    expect(parseAgentConfig(lb.agentConfig, lb.name).acme?.certificates).toEqual([
      { name: "site", domains: ["www.example.com"], email: "ops@example.com", directoryUrl: LETS_ENCRYPT_DIRECTORY, eabKid: "kid-1" },
    ]);
    expect(lb.secrets.acme).toEqual([{ name: "site", accountKey: "ACCOUNT", key: "CERTKEY", eabHmacKey: "EAB" }]);
    expect(lb.haproxy?.acmeResponderPort).toBe(ACME_RESPONDER_PORT);
    expect(witness.agentConfig.acme).toBeUndefined();
    expect(witness.secrets.acme).toBeUndefined();
  });

  it("refuses a certificate without key references, or an EAB key id without its HMAC key", () => {
    expect(() => planCluster({ ...input, keys: { agentToken: "T", identities: IDENTITIES } })).toThrow("plan: the ACME certificate site has no key references");
    expect(() => planCluster({ ...input, keys: { agentToken: "T", identities: IDENTITIES, acme: { site: { accountKey: "A", key: "C" } } } })).toThrow(
      "plan: the ACME certificate site: an EAB key id goes with an EAB HMAC key",
    );
  });
});
