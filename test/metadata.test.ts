/**
 * The droplet metadata client (agent/metadata.ts) against a real HTTP server that plays the metadata
 * service: what it reads, what it refuses (with the value, cut short), status codes, the
 * reserved_ip/floating_ip fallback, and timeouts.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createMetadataClient } from "../agent/metadata.js";

let server: Server | null = null;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = null;
});

/** Serves `routes` (path under /metadata/v1/ → [status, body]); anything else is a 404. Records the paths asked. */
async function metadataService(routes: Record<string, [number, string] | "hang">): Promise<{ base: string; asked: string[] }> {
  const asked: string[] = [];
  server = createServer((req, res) => {
    const path = (req.url ?? "").replace(/^\/metadata\/v1\//, "");
    asked.push(req.url ?? "");
    const r = routes[path];
    if (r === "hang") return;
    const [status, body] = r ?? [404, "not found\n"];
    res.writeHead(status, { "content-type": "text/plain" }).end(body);
  });
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, asked };
}

const errorOf = (p: Promise<unknown>): Promise<string> =>
  p.then(
    (v) => `resolved ${JSON.stringify(v)}`,
    (e: unknown) => String(e),
  );

describe("metadata client", () => {
  it("reads the droplet id, region and anchor address, trimmed; a trailing slash on the base is dropped", async () => {
    const { base, asked } = await metadataService({
      id: [200, "123456\n"],
      region: [200, "ams3\n"],
      "interfaces/public/0/anchor_ipv4/address": [200, "10.18.0.5\n"],
    });
    const md = createMetadataClient({ baseUrl: `${base}//`, timeoutMs: 1_000 });
    expect(await md.dropletId()).toBe(123456);
    expect(await md.region()).toBe("ams3");
    expect(await md.anchorIpv4()).toBe("10.18.0.5");
    expect(asked).toEqual(["/metadata/v1/id", "/metadata/v1/region", "/metadata/v1/interfaces/public/0/anchor_ipv4/address"]);
  });

  it("refuses a droplet id that is not a positive integer, quoting at most 40 characters of it", async () => {
    for (const [body, shown] of [
      ["0", '"0"'],
      ["-3", '"-3"'],
      ["12.5", '"12.5"'],
      ["<html>" + "x".repeat(100), JSON.stringify(("<html>" + "x".repeat(100)).slice(0, 40))],
    ]) {
      const { base } = await metadataService({ id: [200, body!] });
      const md = createMetadataClient({ baseUrl: base, timeoutMs: 1_000 });
      expect(await errorOf(md.dropletId())).toBe(`Error: metadata id is not a droplet ID: ${shown}`);
      server!.closeAllConnections();
      await new Promise((r) => server!.close(r));
      server = null;
    }
  });

  it("refuses an anchor address that is not IPv4, and says why there may be none", async () => {
    const { base } = await metadataService({ "interfaces/public/0/anchor_ipv4/address": [200, "fe80::1\n"] });
    const md = createMetadataClient({ baseUrl: base, timeoutMs: 1_000 });
    expect(await errorOf(md.anchorIpv4())).toBe('Error: metadata anchor_ipv4 is not an IPv4 address: "fe80::1" (droplets from custom images have none)');
  });

  it("a status outside 2xx is an error that names the URL and the status; a missing required value too", async () => {
    const { base } = await metadataService({ id: [500, "oops"], region: [301, ""] });
    const md = createMetadataClient({ baseUrl: base, timeoutMs: 1_000 });
    expect(await errorOf(md.dropletId())).toBe(`Error: metadata ${base}/metadata/v1/id: HTTP 500`);
    expect(await errorOf(md.region())).toBe(`Error: metadata ${base}/metadata/v1/region: HTTP 301`);
    expect(await errorOf(md.anchorIpv4())).toBe(`Error: metadata ${base}/metadata/v1/interfaces/public/0/anchor_ipv4/address: HTTP 404`);
  });

  it("the reserved IP: active with its address, inactive, or from the legacy floating_ip path", async () => {
    const cases: Array<[Record<string, [number, string]>, { active: boolean; ipAddress: string | null }]> = [
      [
        { "reserved_ip/ipv4/active": [200, "true\n"], "reserved_ip/ipv4/ip_address": [200, "192.0.2.10\n"] },
        { active: true, ipAddress: "192.0.2.10" },
      ],
      [
        { "reserved_ip/ipv4/active": [200, "false\n"], "reserved_ip/ipv4/ip_address": [200, "192.0.2.10\n"] },
        { active: false, ipAddress: null },
      ],
      [
        { "floating_ip/ipv4/active": [200, "true"], "floating_ip/ipv4/ip_address": [200, "198.51.100.7"] },
        { active: true, ipAddress: "198.51.100.7" },
      ],
      [{}, { active: false, ipAddress: null }],
      // Active but the address is not (yet) there: active, address unknown.
      [{ "reserved_ip/ipv4/active": [200, "true"] }, { active: true, ipAddress: null }],
    ];
    for (const [routes, want] of cases) {
      const { base } = await metadataService(routes);
      const md = createMetadataClient({ baseUrl: base, timeoutMs: 1_000 });
      expect(await md.reservedIpv4()).toEqual(want);
      server!.closeAllConnections();
      await new Promise((r) => server!.close(r));
      server = null;
    }
  });

  it("a 404 is optional only where it may be: an error status on the reserved IP path is an error", async () => {
    const { base } = await metadataService({ "reserved_ip/ipv4/active": [503, "busy"] });
    const md = createMetadataClient({ baseUrl: base, timeoutMs: 1_000 });
    expect(await errorOf(md.reservedIpv4())).toBe(`Error: metadata ${base}/metadata/v1/reserved_ip/ipv4/active: HTTP 503`);
  });

  it("a service that never answers fails at the timeout, naming the URL", async () => {
    const { base } = await metadataService({ id: "hang" });
    const md = createMetadataClient({ baseUrl: base, timeoutMs: 80 });
    const t0 = performance.now();
    expect(await errorOf(md.dropletId())).toBe(`Error: metadata ${base}/metadata/v1/id: no answer within 80 ms`);
    expect(performance.now() - t0).toBeLessThan(2_000);
  });
});
