/**
 * The configs of testbed/haproxy-versions.ts (short form, the README's typical site, every option
 * as on a droplet and as in the test bed) with the haproxy on PATH: accepted without a warning or a
 * diagnostic remark. The same script checks other HAProxy binaries (2.8, as the droplets run) by hand:
 * README "Tests", "HAProxy versions".
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkLb } from "../../components/lb-config.js";
import { checkWithHaproxy, haproxyFixtures, readmeSite } from "../../testbed/haproxy-versions.js";
import { makePki } from "./pki.js";

describe("every kind of rendered HAProxy config", () => {
  it("the fixtures are valid stack configs (frontends, pools and certificates pass the stack's checks)", () => {
    const pki = makePki(["www.example.com", "api.example.com"], 30);
    try {
      const certificates = { www: pki.certs["www.example.com"], api: pki.certs["api.example.com"] };
      const fixtures = haproxyFixtures(pki.ca, "/tmp/halb-unused", "/tmp/halb-unused");
      expect(Object.keys(fixtures).length).toBe(4);
      for (const [name, o] of Object.entries(fixtures)) {
        const lb = o.frontends
          ? { frontends: [...o.frontends], pools: { ...o.pools }, certificates }
          : { backends: [...o.backends!], listenPorts: [...o.listenPorts!] };
        const r = checkLb(lb, new Date());
        expect(r.errors, name).toEqual([]);
      }
    } finally {
      pki.cleanup();
    }
  });

  it("the README's typical site is read from the README itself", () => {
    const site = readmeSite(readFileSync(join(__dirname, "..", "..", "README.md"), "utf8"));
    expect(site.frontends.map((f) => `${f.port}/${f.protocol}`)).toEqual(["80/http", "443/https"]);
    expect(Object.keys(site.pools).sort()).toEqual(["api", "www"]);
    expect(() => readmeSite("no example here")).toThrow(/README.md has no `pulumi config set ha-lb:frontends '…'` example/);
  });

  it("haproxy -c (diagnostic mode, zero-warning mode) accepts each one without a remark", () => {
    const { version, results } = checkWithHaproxy(["haproxy"]);
    expect(version.haproxy).toMatch(/^\d+\.\d+/);
    expect(results.haproxy.map((r) => r.fixture)).toHaveLength(4);
    for (const r of results.haproxy) {
      expect(r.status, `${r.fixture}\n${r.out}`).toBe(0);
      expect(r.complaints, r.fixture).toEqual([]);
      expect(r.out, r.fixture).toContain("Configuration file is valid");
    }
  });
});
