import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_PATH_CHARS, startAcmeResponder, type AcmeResponder } from "../../agent/acme/responder.js";

const token = "tok_ABCDEFGHIJKLMNOP";
const ka = `${token}.${"b".repeat(43)}`;
const tokens = new Map([[token, ka]]);
let r: AcmeResponder;
const served: string[] = [];
const get = (path: string, method = "GET") => fetch(`http://127.0.0.1:${r.port}${path}`, { method });

beforeAll(async () => {
  r = await startAcmeResponder({ port: 0, store: { keyAuthorization: (t) => tokens.get(t) }, onServed: (t) => served.push(t) });
});
afterAll(() => r.close());

describe("ACME HTTP-01 responder", () => {
  it("answers a known token with its key authorization as text/plain", async () => {
    const res = await get(`/.well-known/acme-challenge/${token}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect(await res.text()).toBe(ka);
    expect(served).toEqual([token]);
    const head = await get(`/.well-known/acme-challenge/${token}`, "HEAD");
    expect(head.status).toBe(200);
  });

  it("answers 404 for an unknown or malformed token and other paths, 405 for other methods, 414 for long paths", async () => {
    expect((await get("/.well-known/acme-challenge/tok_ZZZZZZZZZZZZZZZZ")).status).toBe(404);
    expect((await get("/.well-known/acme-challenge/")).status).toBe(404);
    expect((await get(`/.well-known/acme-challenge/${token}/x`)).status).toBe(404);
    expect((await get(`/${token}`)).status).toBe(404);
    expect((await get(`/.well-known/acme-challenge/${token}`, "POST")).status).toBe(405);
    const long = await get(`/.well-known/acme-challenge/${"a".repeat(MAX_PATH_CHARS)}`);
    expect(long.status).toBe(414);
  });

  it("drops a client that never finishes its headers", async () => {
    const started = Date.now();
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(r.port, "127.0.0.1", () => s.write("GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a\r\n"));
      s.on("data", () => undefined);
      s.on("close", () => resolve(true));
      setTimeout(() => {
        s.destroy();
        resolve(false);
      }, 20_000).unref();
    });
    expect(closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(15_000);
  }, 25_000);
});
