/** ha-lb:frontends, ha-lb:pools and ha-lb:certificates: the schema, the rules across them, the short form. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StackConfigError, loadStackConfig, parseStackConfig } from "../../components/config.js";
import { resolveTaggedPools } from "../../components/pool-servers.js";
import { BASE_CONFIG, isSecretValue, plainView, runProgram, taggedDroplets, unwrap } from "./harness.js";
import { makePki, type TestPki } from "./pki.js";

const base: Record<string, unknown> = Object.fromEntries(
  Object.entries(BASE_CONFIG)
    .filter(([k]) => k !== "ha-lb:backends")
    .map(([k, v]) => [k.slice("ha-lb:".length), /^[[{]/.test(v) ? JSON.parse(v) : v]),
);

let pki: TestPki;
/** Valid for one day: expired once the test's clock is moved two days on. */
let shortLived: TestPki;
beforeAll(() => {
  pki = makePki(["www.example.com", "api.example.com"], 30);
  shortLived = makePki(["old.example.com"], 1);
});
afterAll(() => (pki.cleanup(), shortLived.cleanup()));

/** A typical site: 80 redirects, 443 with h2 routes two hosts to two pools. */
const site = () => ({
  frontends: [
    { port: 80, protocol: "http", pool: "web", redirectToHttps: true },
    { port: 443, protocol: "https", pool: "web", certificates: ["www", "api"], hsts: 31536000, routes: [{ host: "api.example.com", pool: "api" }] },
  ],
  pools: {
    web: { servers: ["10.10.0.5:8080", "10.10.0.6:8080"], healthCheck: { type: "http", path: "/healthz" }, stickySessions: { cookie: "SRV" } },
    api: { servers: ["10.10.0.7:9000"], balance: "leastconn" },
  },
  certificates: { www: pki.certs["www.example.com"], api: pki.certs["api.example.com"] },
});

type Site = ReturnType<typeof site>;
const parse = (over: (s: Site) => Record<string, unknown>, now = new Date()) => parseStackConfig({ ...base, ...over(site()) }, now);
const errorsOf = (over: (s: Site) => Record<string, unknown>, now?: Date): string[] => {
  try {
    parse(over, now);
  } catch (e) {
    expect(e).toBeInstanceOf(StackConfigError);
    return (e as StackConfigError).lines;
  }
  throw new Error("expected a StackConfigError");
};
const secretParts = () => Object.values(site().certificates).flatMap((c) => [c.privateKey, c.certificate].map((p) => p.split("\n")[1]));

describe("the long form", () => {
  it("accepts a typical site, with no warnings; the firewall's listenPorts are the frontends' ports", () => {
    const { config, warnings } = parse((s) => s);
    expect(warnings).toEqual([]);
    expect(config.frontends.map((f) => [f.port, f.protocol, f.pool])).toEqual([
      [80, "http", "web"],
      [443, "https", "web"],
    ]);
    expect(Object.keys(config.pools)).toEqual(["web", "api"]);
    expect(config.listenPorts).toEqual([80, 443]);
  });

  it("hands the certificates out apart from the public config", () => {
    const s = site();
    const m: Record<string, unknown> = { ...base, frontends: s.frontends, pools: s.pools, certificates: s.certificates };
    const r = loadStackConfig((k) => (m[k] === undefined ? undefined : typeof m[k] === "string" ? m[k] : JSON.stringify(m[k])), Object.keys(m));
    expect(Object.keys(r.certificates)).toEqual(["www", "api"]);
    expect(JSON.stringify(r.config)).not.toContain("PRIVATE KEY");
    expect(r.config).not.toHaveProperty("certificates");
  });

  it("the short form (backends + listenPorts) is one pool `app` behind http frontends", () => {
    const { config } = parseStackConfig({ ...base, backends: ["10.10.0.5:8080"], listenPorts: [80, 8080] });
    expect(config.frontends).toEqual([
      { port: 80, protocol: "http", pool: "app" },
      { port: 8080, protocol: "http", pool: "app" },
    ]);
    expect(config.pools.app.servers).toEqual(["10.10.0.5:8080"]);
    expect(parseStackConfig({ ...base, backends: ["10.10.0.5:8080"] }).config.listenPorts).toEqual([80]);
    expect(parseStackConfig({ ...base, backends: ["10.10.0.5:8080"], listenPorts: [80, 443] }).warnings.join("\n")).toMatch(/443 serves plain HTTP/);
  });

  it("warns about a certificate expiring within 14 days, an unused certificate and an unused pool", () => {
    const soon = new Date(Date.now() + 20 * 86_400_000);
    const { warnings } = parse((s) => ({ ...s, frontends: [{ ...s.frontends[1], certificates: ["www"], routes: undefined }] }), soon);
    expect(warnings).toEqual([
      'ha-lb:pools: the pool "api" serves no frontend',
      expect.stringMatching(/^ha-lb:certificates: www: certificate expires on .*, within 14 days$/),
      expect.stringMatching(/^ha-lb:certificates: api: certificate expires on .*, within 14 days$/),
      "ha-lb:certificates: api: no frontend uses it",
    ]);
  });
});

describe("bad input: a precise error, one line per problem", () => {
  const cases: [string, (s: Site) => Record<string, unknown>, RegExp, Date?][] = [
    [
      "a certificate whose key does not match",
      (s) => ({ ...s, certificates: { ...s.certificates, api: { ...s.certificates.api, privateKey: s.certificates.www.privateKey } } }),
      /^ha-lb:certificates: api: privateKey does not match the certificate \(CN=api\.example\.com\); expected a current certificate chain and its matching key, in PEM$/,
    ],
    [
      "an expired certificate",
      (s) => ({ ...s, certificates: { ...s.certificates, www: shortLived.certs["old.example.com"] } }),
      /^ha-lb:certificates: www: certificate expired on \d{4}-.*; expected a current certificate/,
      new Date(Date.now() + 2 * 86_400_000),
    ],
    [
      "https without certificates",
      (s) => ({ ...s, frontends: [s.frontends[0], { port: 443, protocol: "https", pool: "web" }] }),
      /^ha-lb:frontends: needs certificates: an https frontend terminates TLS with them .* \(at 1\); expected/,
    ],
    [
      "a frontend naming an unknown pool",
      (s) => ({ ...s, frontends: [{ ...s.frontends[0], pool: "nope" }, s.frontends[1]] }),
      /^ha-lb:frontends: names the pool "nope", which ha-lb:pools does not define \(at 0\.pool\); expected one of web, api$/,
    ],
    [
      "a route naming an unknown pool",
      (s) => ({ ...s, frontends: [s.frontends[0], { ...s.frontends[1], routes: [{ pathPrefix: "/x", pool: "gone" }] }] }),
      /^ha-lb:frontends: names the pool "gone", .* \(at 1\.routes\[0\]\.pool\); expected one of web, api$/,
    ],
    [
      "a frontend naming an unknown certificate",
      (s) => ({ ...s, frontends: [s.frontends[0], { ...s.frontends[1], certificates: ["www", "shop"] }] }),
      /^ha-lb:frontends: names the certificate "shop", which ha-lb:certificates does not define \(at 1\.certificates\[1\]\); expected one of www, api$/,
    ],
    [
      "two frontends on one port",
      (s) => ({ ...s, frontends: [s.frontends[0], { ...s.frontends[1], port: 80 }] }),
      /^ha-lb:frontends: repeats port 80 of frontend \[0\]; one frontend per port \(at 1\.port\); expected/,
    ],
    [
      "stickySessions on a pool behind a tcp frontend",
      (s) => ({
        ...s,
        frontends: [...s.frontends, { port: 8443, protocol: "tcp", pool: "sticky" }],
        pools: { ...s.pools, sticky: { servers: ["10.10.0.9:443"], stickySessions: { cookie: "S" } } },
      }),
      /^ha-lb:pools: stickySessions is for http pools, and "sticky" serves the tcp frontend on port 8443 \(at sticky\.stickySessions\)/,
    ],
    [
      "routes on a tcp frontend",
      (s) => ({
        ...s,
        frontends: [...s.frontends, { port: 8443, protocol: "tcp", pool: "tcp", routes: [{ host: "a.example.com", pool: "tcp" }] }],
        pools: { ...s.pools, tcp: { servers: ["10.10.0.9:443"] } },
      }),
      /^ha-lb:frontends: is for http and https frontends only, not tcp \(tcp sees no host or path\) \(at 2\.routes\)/,
    ],
    [
      "redirectToHttps on https",
      (s) => ({ ...s, frontends: [s.frontends[0], { ...s.frontends[1], redirectToHttps: true }] }),
      /^ha-lb:frontends: is for http frontends only, not https \(it is https already\) \(at 1\.redirectToHttps\)/,
    ],
    [
      "a malformed CIDR",
      (s) => ({ ...s, frontends: [{ ...s.frontends[0], allowCidrs: ["198.51.100.0/24", "10.0.0.300/8"] }, s.frontends[1]] }),
      /^ha-lb:frontends: must be an IPv4 CIDR such as 198\.51\.100\.0\/24, got "10\.0\.0\.300\/8" \(at 0\.allowCidrs\[1\]\)/,
    ],
    [
      "a pool with neither servers nor tag",
      (s) => ({ ...s, pools: { ...s.pools, api: { balance: "leastconn" } } }),
      /^ha-lb:pools: needs exactly one of servers, tag, got none \(at api\); expected/,
    ],
    [
      "a pool with both servers and tag",
      (s) => ({ ...s, pools: { ...s.pools, api: { servers: ["10.10.0.7:9000"], tag: "api", port: 9000 } } }),
      /^ha-lb:pools: needs exactly one of servers, tag, got servers, tag \(at api\)/,
    ],
    [
      "a health path without a leading /",
      (s) => ({ ...s, pools: { ...s.pools, web: { ...s.pools.web, healthCheck: { type: "http", path: "healthz" } } } }),
      /^ha-lb:pools: must be a path starting with '\/', such as \/api\/, got "healthz" \(at web\.healthCheck\.path\)/,
    ],
    [
      "a reserved port (SSH)",
      (s) => ({ ...s, frontends: [{ ...s.frontends[0], port: 22 }, s.frontends[1]] }),
      /^ha-lb:frontends: 22 is the tier's own SSH port; choose another \(at 0\.port\)/,
    ],
    [
      "a reserved port (HAProxy health) in the short form",
      () => ({ backends: ["10.10.0.5:8080"], listenPorts: [80, 8405] }),
      /^ha-lb:listenPorts: 8405 is the tier's own HAProxy health port; choose another \(at 1\)/,
    ],
    ["frontends with the short form's backends", (s) => ({ ...s, backends: ["10.10.0.5:8080"] }), /^ha-lb:backends: cannot be combined with frontends/],
    [
      "tls verify without a CA",
      (s) => ({ ...s, pools: { ...s.pools, api: { ...s.pools.api, tls: { verify: true, serverName: "api.internal" } } } }),
      /^ha-lb:pools: verify needs ca and serverName: VPC addresses match no certificate .* \(at api\.tls\)/,
    ],
    ["a tag without its port", (s) => ({ ...s, pools: { ...s.pools, api: { tag: "api" } } }), /^ha-lb:pools: needs port with tag/],
  ];

  it.each(cases)("%s", (_what, over, re, now) => {
    const lines = errorsOf(over, now);
    expect(lines, lines.join("\n")).toHaveLength(1);
    expect(lines[0]).toMatch(re);
    for (const part of secretParts()) expect(lines[0]).not.toContain(part);
  });

  it("reports several problems of one key at once, one line each", () => {
    const lines = errorsOf((s) => ({
      ...s,
      frontends: [
        { ...s.frontends[0], port: 9465 },
        { ...s.frontends[1], redirectToHttps: true, denyCidrs: ["x"] },
      ],
    }));
    expect(lines).toHaveLength(3);
    expect(lines.join("\n")).toMatch(/fipd metrics port/);
    expect(lines.join("\n")).toMatch(/at 1\.redirectToHttps/);
    expect(lines.join("\n")).toMatch(/at 1\.denyCidrs\[0\]/);
  });

  it("a certificate that is not PEM is named, its value is not shown", () => {
    const lines = errorsOf((s) => ({ ...s, certificates: { ...s.certificates, www: { certificate: "SECRETGARBAGE", privateKey: "SECRETKEY" } } }));
    expect(lines).toEqual([expect.stringMatching(/^ha-lb:certificates: www: certificate has no PEM certificate/)]);
    expect(lines.join("\n")).not.toMatch(/SECRETGARBAGE|SECRETKEY/);
    const typed = errorsOf((s) => ({ ...s, certificates: { www: { certificate: 7, privateKey: "SECRETKEY" }, api: s.certificates.api } }));
    expect(typed.join("\n")).not.toContain("SECRETKEY");
  });
});

describe("the cloud firewall", () => {
  it("opens exactly the frontends' ports, each restricted to its allowCidrs; the HAProxy exporter like the agent's metrics", async () => {
    const { "ha-lb:backends": _short, ...rest } = BASE_CONFIG;
    const r = await runProgram({
      ...rest,
      "ha-lb:frontends": JSON.stringify([
        { port: 80, protocol: "http", pool: "web", denyCidrs: ["192.0.2.0/24"] },
        { port: 8443, protocol: "tcp", pool: "pass", allowCidrs: ["198.51.100.0/24", "203.0.113.9/32"] },
      ]),
      "ha-lb:pools": JSON.stringify({ web: { servers: ["10.10.0.5:8080"] }, pass: { servers: ["10.10.0.8:443"] } }),
      "ha-lb:metricsCidrs": JSON.stringify(["10.10.0.0/16"]),
    });
    const fw = r.resources.find((x) => x.type === "digitalocean:index/firewall:Firewall" && x.name.endsWith("-lb"))!;
    const tcp = (fw.inputs.inboundRules as Array<Record<string, any>>).filter((x) => x.protocol === "tcp");
    expect(tcp.map((x) => [x.portRange, x.sourceAddresses])).toEqual([
      ["80", ["0.0.0.0/0", "::/0"]],
      ["8443", ["198.51.100.0/24", "203.0.113.9/32"]],
      ["22", ["203.0.113.0/24"]],
      ["7946", undefined], // ACME chains between LBs: from the LB tag (stack.test.ts)
      ["9465", ["10.10.0.0/16"]],
      ["8404", ["10.10.0.0/16"]],
    ]);
    const witnessFw = r.resources.find((x) => x.type === "digitalocean:index/firewall:Firewall" && x.name.endsWith("-witness"))!;
    expect((witnessFw.inputs.inboundRules as Array<Record<string, any>>).some((x) => x.portRange === "8404")).toBe(false);
  });
});

describe("certificate delivery", () => {
  it("certificates reach the droplets only on the secret stdin of a command that logs nothing", async () => {
    const { "ha-lb:backends": _short, ...rest } = BASE_CONFIG;
    const s = site();
    const r = await runProgram(
      {
        ...rest,
        "ha-lb:frontends": JSON.stringify(s.frontends),
        "ha-lb:pools": JSON.stringify(s.pools),
        "ha-lb:certificates": JSON.stringify(s.certificates),
      },
      "dev",
      ["ha-lb:agentToken", "ha-lb:sshPrivateKey", "ha-lb:certificates"],
    );
    expect(r.warnings).toEqual([]);
    const installs = r.resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-haproxy"));
    expect(installs).toHaveLength(2);
    for (const c of installs) {
      expect(c.inputs.logging).toBe("none");
      expect(isSecretValue(c.inputs.stdin)).toBe(true);
      const stdin = String(unwrap(c.inputs.stdin));
      expect(stdin).toContain("ssl crt @CERT_DIR@/www.pem crt @CERT_DIR@/api.pem alpn h2,http/1.1");
      expect(stdin).toContain(`#%halb-file www.pem\n${s.certificates.www.certificate}${s.certificates.www.privateKey}`);
      expect(c.inputs.create).not.toContain("PRIVATE KEY");
    }
    // Nothing Pulumi would show or store in plain text holds a key or a certificate.
    const plain = JSON.stringify(plainView(r.resources.map((x) => x.inputs)));
    for (const part of secretParts()) expect(plain).not.toContain(part);
  });
});

describe("pools given by tag", () => {
  const d = (name: string, addr: string, vpc = "vpc-lb") => ({ name, ipv4AddressPrivate: addr, vpcUuid: vpc });

  it("resolve to the tagged droplets' VPC addresses on the pool's port, sorted; pools with servers stay as they are", () => {
    const pools = { app: { tag: "app", port: 8080, balance: "leastconn" as const }, fixed: { servers: ["10.10.0.9:80"] } };
    expect(resolveTaggedPools(pools, { app: [d("app-2", "10.10.0.22"), d("app-1", "10.10.0.21")] }, { id: "vpc-lb", fromConfig: false })).toEqual({
      app: { servers: ["10.10.0.21:8080", "10.10.0.22:8080"], balance: "leastconn" },
      fixed: { servers: ["10.10.0.9:80"] },
    });
  });

  it("a tagged droplet outside the LBs' VPC, or no tagged droplet at all, fails with the reason", () => {
    const pools = { app: { tag: "app", port: 8080 }, api: { tag: "api", port: 9000 } };
    expect(() =>
      resolveTaggedPools(pools, { app: [d("app-1", "10.10.0.21"), d("app-9", "10.99.0.5", "vpc-other")] }, { id: "vpc-lb", fromConfig: false }),
    ).toThrow(
      /ha-lb:pools: app: the droplet app-9 \(tag "app"\) is in VPC vpc-other, but the LBs use VPC vpc-lb \(the stack's own VPC\), so the LBs cannot reach it; set ha-lb:vpcUuid to vpc-other[\s\S]*ha-lb:pools: api: no droplet has the tag "api"/,
    );
  });

  it("the program resolves a tag at `pulumi up` into the HAProxy config", async () => {
    const { "ha-lb:backends": _short, ...rest } = BASE_CONFIG;
    // The mocked VPC's id is its resource name + "_id" (harness.ts).
    taggedDroplets.app = [d("app-1", "10.10.0.21", "ha-lb-network-vpc_id")];
    try {
      const r = await runProgram({
        ...rest,
        "ha-lb:frontends": JSON.stringify([{ port: 80, protocol: "http", pool: "app" }]),
        "ha-lb:pools": JSON.stringify({ app: { tag: "app", port: 8080 } }),
      });
      const install = r.resources.find((x) => x.type === "command:remote:Command" && x.name.endsWith("-haproxy"))!;
      expect(String(unwrap(install.inputs.stdin))).toContain("server s_10_10_0_21_8080 10.10.0.21:8080 check");
    } finally {
      delete taggedDroplets.app;
    }
  });
});
