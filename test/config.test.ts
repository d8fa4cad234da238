import { describe, expect, it } from "vitest";
import { ConfigError, parseAgentConfig } from "../agent/config.js";

const members = [
  { id: "lb-blue-1", address: "10.10.0.2", color: "blue" },
  { id: "lb-blue-2", address: "10.10.0.3", color: "blue" },
  { id: "witness", address: "203.0.113.9", role: "witness" },
];

describe("agent config", () => {
  it("fills defaults for a minimal LB config", () => {
    const c = parseAgentConfig({ nodeId: "lb-blue-1", reservedIp: "198.51.100.7", members });
    expect(c.failover.leaseMs).toBe(300);
    expect(c.api.tokenFile).toBe("/etc/fipd/token");
    expect(c.metrics.address).toBe("127.0.0.1");
    expect(c.members[2].role).toBe("witness");
  });

  it("lists every problem with its path", () => {
    const bad = { nodeId: "lb-blue-1", members: [{ id: "lb-blue-1", address: "x" }], failover: { leaseMs: 60, bogus: 1 } };
    let err: unknown;
    try {
      parseAgentConfig(bad, "fipd.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems).toContain('members[0].color: is required for a member with role "lb" ("blue" or "green")');
    expect(problems.some((p) => p.startsWith("failover.leaseMs: must be at least 3 × heartbeatIntervalMs"))).toBe(true);
    expect(problems.some((p) => p.startsWith("failover:") && p.includes("bogus"))).toBe(true);
    expect((err as Error).message).toMatch(/^invalid configuration in fipd.yaml/);
  });

  it("requires the node to be a member and an LB to know the reserved IP", () => {
    expect(() => parseAgentConfig({ nodeId: "nobody", reservedIp: "198.51.100.7", members })).toThrow(/nodeId: "nobody" is not one of members/);
    expect(() => parseAgentConfig({ nodeId: "lb-blue-1", members })).toThrow(/reservedIp: is required on a load-balancer node/);
    expect(parseAgentConfig({ nodeId: "witness", members }).nodeId).toBe("witness");
  });

  describe("addresses, URLs and paths", () => {
    const lb = { nodeId: "lb-blue-1", reservedIp: "198.51.100.7", members };
    const problems = (doc: Record<string, unknown>): string[] => {
      try {
        parseAgentConfig(doc, "fipd.yaml");
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as ConfigError).problems;
      }
      return [];
    };

    it("takes health over http on loopback or this droplet's own address, nothing else", () => {
      for (const url of ["http://127.0.0.1:8405/healthz", "http://localhost:8405/", "http://[::1]:8405/healthz", "http://10.10.0.2:8405/healthz"]) {
        expect(problems({ ...lb, health: { url } }), url).toEqual([]);
      }
      expect(problems({ ...lb, listen: { address: "10.10.0.9" }, health: { url: "http://10.10.0.9:8405/" } })).toEqual([]);
      expect(problems({ ...lb, health: { url: "ftp://127.0.0.1/healthz" } })).toEqual([
        'health.url: must be an http URL (HAProxy\'s monitor-uri), got the scheme "ftp"',
      ]);
      expect(problems({ ...lb, health: { url: "https://127.0.0.1:8405/healthz" } })[0]).toMatch(/^health.url: must be an http URL/);
      expect(problems({ ...lb, health: { url: "http://10.10.0.3:8405/healthz" } })).toEqual([
        "health.url: must be on loopback (127.0.0.1, ::1, localhost) or one of this droplet's own addresses (10.10.0.2), got 10.10.0.3",
      ]);
      expect(problems({ ...lb, health: { url: "http://example.com/healthz" } })[0]).toMatch(/^health.url: must be on loopback .* got example.com$/);
    });

    it("takes the API over https, or http on loopback, or http elsewhere only with allowInsecureHttp", () => {
      expect(problems({ ...lb, api: { baseUrl: "https://api.digitalocean.com" } })).toEqual([]);
      expect(problems({ ...lb, api: { baseUrl: "http://127.0.0.1:8080" } })).toEqual([]);
      expect(problems({ ...lb, api: { baseUrl: "http://[::1]:8080" } })).toEqual([]);
      expect(problems({ ...lb, api: { baseUrl: "http://api.example.com" } })).toEqual([
        "api.baseUrl: must be https (the token would cross the network in clear), got http to api.example.com; plain http is allowed on loopback, or with api.allowInsecureHttp: true in a test bed",
      ]);
      expect(problems({ ...lb, api: { baseUrl: "http://203.0.113.253:8080", allowInsecureHttp: true } })).toEqual([]);
      expect(problems({ ...lb, api: { baseUrl: "ftp://api.example.com" } })).toEqual(['api.baseUrl: must be an https URL, got the scheme "ftp"']);
      expect(problems({ ...lb, api: { allowInsecureHttp: "yes" } })).toEqual(['api.allowInsecureHttp: must be true or false, got "yes"']);
    });

    it("takes IP addresses to bind and IPs or host names for members", () => {
      expect(problems({ ...lb, listen: { address: "not an address" } })).toEqual([
        'listen.address: must be an IP address such as 0.0.0.0, 127.0.0.1 or ::1, got "not an address"',
      ]);
      expect(problems({ ...lb, metrics: { address: "localhost" } })[0]).toMatch(/^metrics.address: must be an IP address/);
      expect(problems({ ...lb, listen: { address: "::" }, metrics: { address: "::1" } })).toEqual([]);
      const withAddress = (address: string) => ({ ...lb, members: [{ ...members[0], address }, ...members.slice(1)] });
      for (const bad of ["@@@", "", "a b", "-lb.example.com", "lb..example.com", "999.1.1.1", "10.10.0", "x".repeat(64), "10.10.0.2:7946"]) {
        expect(problems(withAddress(bad)), bad).toEqual([
          expect.stringMatching(/^members\[0\]\.address: must be an IP address or a host name such as 10\.10\.0\.2 or lb-1\.example\.com, got "/),
        ]);
      }
      for (const good of ["10.10.0.2", "lb-blue-1", "lb-1.example.com", "fd00::2", "LB.Example.com."]) expect(problems(withAddress(good)), good).toEqual([]);
    });

    it("takes an absolute control socket path only", () => {
      expect(problems({ ...lb, controlSocket: "fipd.sock" })).toEqual(['controlSocket: must be an absolute path such as /run/fipd/fipd.sock, got "fipd.sock"']);
      expect(problems({ ...lb, controlSocket: "/tmp/halb-x/fipd.sock" })).toEqual([]);
    });
  });

  describe("acme", () => {
    const lb = { nodeId: "lb-blue-1", reservedIp: "198.51.100.7", members };
    const cert = {
      name: "web",
      domains: ["www.example.com", "example.com"],
      email: "ops@example.com",
      directoryUrl: "https://acme-v02.api.letsencrypt.org/directory",
    };
    const problems = (acme: unknown, extra: Record<string, unknown> = {}): string[] => {
      try {
        parseAgentConfig({ ...lb, ...extra, acme }, "fipd.yaml");
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as ConfigError).problems;
      }
      return [];
    };

    it("is absent by default and fills its defaults when given", () => {
      expect(parseAgentConfig(lb).acme).toBeUndefined();
      const a = parseAgentConfig({ ...lb, acme: { certificates: [cert] } }).acme!;
      expect(a.responderPort).toBe(8406);
      expect(a.stateDir).toBe("/var/lib/fipd/acme");
      expect(a.keyDir).toBe("/etc/fipd/acme");
      expect(a.renewAtRemainingFraction).toBeCloseTo(1 / 3);
      expect(a.certificates[0]).toEqual(cert);
    });

    it("names each bad certificate field precisely", () => {
      expect(problems({ certificates: [] })).toEqual(["acme.certificates: must have at least 1 entry, got a list of 0"]);
      expect(problems({ certificates: [{ ...cert, domains: ["*.example.com"] }] })).toEqual([
        "acme.certificates[0].domains[0]: must be an exact host name: HTTP-01 cannot validate a wildcard (*.) name",
      ]);
      expect(problems({ certificates: [{ ...cert, domains: ["198.51.100.7"] }] })).toEqual([
        'acme.certificates[0].domains[0]: must be a lower-case DNS name with a dot, such as www.example.com, got "198.51.100.7"',
      ]);
      expect(problems({ certificates: [{ ...cert, domains: ["a.example.com", "a.example.com"] }] })).toEqual([
        'acme.certificates[0].domains[1]: duplicate domain "a.example.com"',
      ]);
      expect(problems({ certificates: [{ ...cert, email: "ops" }] })).toEqual([
        'acme.certificates[0].email: must be an email address such as ops@example.com, got "ops"',
      ]);
      expect(problems({ certificates: [{ ...cert, directoryUrl: "http://acme.example.com/dir" }] })).toEqual([
        'acme.certificates[0].directoryUrl: must be an https URL (RFC 8555 requires it), got "http://acme.example.com/dir"',
      ]);
      expect(problems({ certificates: [{ ...cert, directoryCaFile: "ca.pem" }] })).toEqual([
        'acme.certificates[0].directoryCaFile: must be an absolute path such as /run/fipd/fipd.sock, got "ca.pem"',
      ]);
      expect(problems({ certificates: [cert, { ...cert }] })).toEqual(['acme.certificates[1].name: duplicate certificate name "web"']);
      expect(problems({ certificates: [{ ...cert, name: "../x" }] })[0]).toMatch(/^acme.certificates\[0\].name: must be a certificate name/);
      expect(problems({ certificates: [{ ...cert, bogus: 1 }] })[0]).toMatch(/^acme.certificates\[0\]: .*bogus/);
    });

    it("checks the responder port, the renewal fraction and the retry bounds", () => {
      expect(problems({ certificates: [cert], responderPort: 9465 })).toEqual([
        "acme.responderPort: must differ from fipd's metrics (metrics.port): both are 9465",
      ]);
      expect(problems({ certificates: [cert], responderPort: 9465 }, { metrics: { enabled: false } })).toEqual([]);
      expect(problems({ certificates: [cert], responderPort: 8405 })).toEqual([
        "acme.responderPort: must differ from HAProxy's health frontend: both are 8405",
      ]);
      expect(problems({ certificates: [cert], renewAtRemainingFraction: 1 })).toEqual([
        "acme.renewAtRemainingFraction: must be a fraction from 0.05 to 0.9, got 1",
      ]);
      expect(problems({ certificates: [cert], retryInitialMs: 60_000, retryMaxMs: 10_000 })).toEqual([
        "acme.retryMaxMs: must be at least retryInitialMs (60000)",
      ]);
    });
  });
});
