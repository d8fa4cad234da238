/**
 * The emulator cannot drift from DigitalOcean's contract: every response of a scripted session is
 * validated (status, body schema) against the official OpenAPI subset vendored in
 * testbed/emulator/do-openapi (see its NOTICE.md).
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import OpenAPIBackend, { type Document } from "openapi-backend";
import { load } from "js-yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmulator, type Emulator } from "../../testbed/emulator/index.js";

const SPEC = resolve(__dirname, "../../testbed/emulator/do-openapi/reserved-ips.openapi.yaml");
const TOKEN = "dop_v1_" + "cd".repeat(32);
let emu: Emulator;
let api: OpenAPIBackend;
let dropletId: number;

beforeAll(async () => {
  api = new OpenAPIBackend({ definition: load(readFileSync(SPEC, "utf8")) as Document, validate: true, quick: false });
  await api.init();
  emu = await startEmulator({ tokens: [TOKEN], actionDelayMs: 300, rateLimitPerMinute: 30 });
  emu.addReservedIp({ ip: "198.51.100.100", region: "nyc3" });
  dropletId = emu.addDroplet({ name: "lb1", region: "nyc3", publicIpv4: "203.0.113.11", privateIpv4: "192.0.2.11", anchorIpv4: "198.51.100.11" }).id;
});
afterAll(async () => emu?.close());

async function call(method: string, path: string, body?: unknown, token = TOKEN) {
  const res = await fetch(emu.apiUrl + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json().catch(() => null);
  const op = api.matchOperation({ method, path, headers: {} });
  expect(op, `${method} ${path} is an operation of the spec`).toBeTruthy();
  const v = api.validateResponse(json, op!, res.status);
  expect(v.errors ?? [], `${method} ${path} → ${res.status} matches the spec: ${JSON.stringify(v.errors)}`).toEqual([]);
  return { status: res.status, json, headers: res.headers };
}

describe("emulator ↔ DigitalOcean OpenAPI", () => {
  it("the validator is strict enough to catch a drift", () => {
    const op = api.matchOperation({ method: "GET", path: "/v2/reserved_ips/198.51.100.100", headers: {} })!;
    expect(api.validateResponse({ reserved_ip: { ip: 42, locked: "no" } }, op, 200).valid).toBe(false);
  });

  it("every response of an assign session validates against the spec", async () => {
    expect((await call("GET", "/v2/reserved_ips")).status).toBe(200);
    expect((await call("GET", "/v2/reserved_ips/198.51.100.100")).json.reserved_ip.droplet).toBeNull();
    const post = await call("POST", "/v2/reserved_ips/198.51.100.100/actions", { type: "assign", droplet_id: dropletId });
    expect(post.status).toBe(201);
    expect(post.json.action.status).toBe("in-progress");
    const locked = await call("GET", "/v2/reserved_ips/198.51.100.100");
    expect(locked.json.reserved_ip.locked).toBe(true);
    expect(emu.reservedIpLocked("198.51.100.100")).toBe(true);
    const busy = await call("POST", "/v2/reserved_ips/198.51.100.100/actions", { type: "assign", droplet_id: dropletId });
    expect(busy.status).toBe(422);
    expect(busy.json.id).toBe("unprocessable_entity");
    await new Promise((r) => setTimeout(r, 400));
    const done = await call("GET", `/v2/reserved_ips/198.51.100.100/actions/${post.json.action.id}`);
    expect(done.json.action.status).toBe("completed");
    expect(done.json.action.resource_id).toBe(198 * 2 ** 24 + 51 * 2 ** 16 + 100 * 2 ** 8 + 100);
    expect((await call("GET", `/v2/actions/${post.json.action.id}`)).status).toBe(200);
    const after = await call("GET", "/v2/reserved_ips/198.51.100.100");
    expect(after.json.reserved_ip.droplet.id).toBe(dropletId);
    expect(emu.reservedIpLocked("198.51.100.100")).toBe(false);
    expect((await call("GET", "/v2/reserved_ips/198.51.100.100/actions")).json.actions.length).toBe(1);
    expect((await call("GET", `/v2/droplets/${dropletId}`)).status).toBe(200);
    expect((await call("GET", "/v2/reserved_ips/203.0.113.250")).status).toBe(404);
    expect((await call("GET", "/v2/reserved_ips", undefined, "dop_v1_bad")).status).toBe(401);
    expect((await call("GET", "/v2/floating_ips/198.51.100.100")).json.floating_ip.ip).toBe("198.51.100.100");
  });

  it("rate limits with ratelimit-* headers and a spec-shaped 429", async () => {
    let last = await call("GET", "/v2/reserved_ips/198.51.100.100");
    expect(last.headers.get("ratelimit-limit")).toBe("5000");
    for (let i = 0; i < 40 && last.status !== 429; i++) last = await call("GET", "/v2/reserved_ips/198.51.100.100");
    expect(last.status).toBe(429);
    expect(Number(last.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(last.headers.get("ratelimit-remaining")).toBe("0");
  });

  it("serves metadata per droplet as the real service does (text/plain)", async () => {
    const base = emu.metadataUrl(dropletId);
    const get = async (p: string) => (await fetch(`${base}/metadata/v1/${p}`)).text();
    expect(await get("id")).toBe(String(dropletId));
    expect(await get("interfaces/public/0/anchor_ipv4/address")).toBe("198.51.100.11");
    expect(await get("reserved_ip/ipv4/active")).toBe("true");
    expect(await get("reserved_ip/ipv4/ip_address")).toBe("198.51.100.100");
    expect((await fetch(`${base}/metadata/v1/nope`)).status).toBe(404);
  });
});
