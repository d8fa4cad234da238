/** The control socket (agent/control.ts): what a broken or hostile local client can and cannot do. */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CONTROL_MAX_CONNECTION_BYTES, controlRequest, createControlServer, parseControlRequest, type ControlRequest } from "../agent/control.js";

let dir = "";
let closeServer: (() => Promise<void>) | null = null;
afterEach(async () => {
  await closeServer?.();
  closeServer = null;
  rmSync(dir, { recursive: true, force: true });
});

/** A server that records every request it runs and answers `{ ok: true, cmd }`. */
async function recordingServer(o: { idleTimeoutMs?: number } = {}) {
  dir = mkdtempSync(join(tmpdir(), "halb-control-"));
  const path = join(dir, "fipd.sock");
  const seen: ControlRequest[] = [];
  const server = await createControlServer(
    path,
    async (req) => {
      await new Promise((r) => setTimeout(r, 5));
      seen.push(req);
      return { ok: true, cmd: req.cmd };
    },
    o,
  );
  closeServer = () => server.close();
  return { path, seen };
}

/** A raw client: writes what the test says, collects answer lines, notes when the server closes. */
function rawClient(path: string) {
  const sock: Socket = createConnection(path);
  const answers: Array<Record<string, unknown>> = [];
  let buf = "";
  let closed = false;
  sock.on("data", (d) => {
    buf += d.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      answers.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
      buf = buf.slice(i + 1);
    }
  });
  sock.on("error", () => undefined);
  sock.on("close", () => (closed = true));
  const connected = new Promise<void>((r) => sock.once("connect", () => r()));
  return {
    sock,
    answers,
    closed: () => closed,
    connected,
    write: (s: string | Buffer) => new Promise<void>((r) => sock.write(s, () => r())),
  };
}

/** Waits (bounded) until `cond` holds; false when it never did. */
async function until(cond: () => boolean, withinMs = 3_000): Promise<boolean> {
  const end = Date.now() + withinMs;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return cond();
}
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("control socket path", () => {
  it("never removes a regular file at the socket path, and says what is there", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-control-"));
    const path = join(dir, "fipd.sock");
    writeFileSync(path, "precious\n");
    await expect(createControlServer(path, () => Promise.resolve({}))).rejects.toThrow(
      `the control socket path ${path} holds a regular file, not a socket; refusing to remove it (move it away or set controlSocket to another path)`,
    );
    expect(readFileSync(path, "utf8")).toBe("precious\n");
  });

  it("replaces a stale socket (nobody answers), and refuses a live one", async () => {
    const { path } = await recordingServer();
    await expect(createControlServer(path, () => Promise.resolve({}))).rejects.toThrow(`another fipd already answers on ${path}`);
    await closeServer!();
    // A socket left by a killed agent: a socket file nobody listens on.
    const { createServer } = await import("node:net");
    const stale = createServer();
    await new Promise<void>((r) => stale.listen(path, () => r()));
    await new Promise<void>((r) => stale.close(() => r()));
    writeFileSync(join(dir, "marker"), "");
    const again = await createControlServer(path, () => Promise.resolve({ ok: true }));
    closeServer = () => again.close();
    expect(await controlRequest(path, { cmd: "status" }, { timeoutMs: 2_000 })).toEqual({ ok: true });
    await again.close();
    closeServer = null;
    expect(existsSync(path)).toBe(false);
  });
});

describe("control requests", () => {
  it("runs a request split over chunks exactly once, and each later line once", async () => {
    const { path, seen } = await recordingServer();
    const c = rawClient(path);
    await c.connected;
    await c.write('{"cmd":"rel');
    await pause(50);
    await c.write('oad"}\n');
    await pause(50);
    await c.write('{"cmd":"status"}\n');
    expect(await until(() => c.answers.length >= 2)).toBe(true);
    await pause(100);
    expect(seen.map((r) => r.cmd)).toEqual(["reload", "status"]);
    expect(c.answers).toEqual([
      { ok: true, cmd: "reload" },
      { ok: true, cmd: "status" },
    ]);
    c.sock.destroy();
  });

  it("answers a client that sends its request and ends its side (printf … | nc -U)", async () => {
    const { path, seen } = await recordingServer();
    const c = rawClient(path);
    await c.connected;
    c.sock.end('{"cmd":"status"}');
    expect(await until(() => c.closed())).toBe(true);
    expect(c.answers).toEqual([{ ok: true, cmd: "status" }]);
    expect(seen).toEqual([{ cmd: "status" }]);
  });

  it.each([
    [{ cmd: "maintenance", on: "false" }, 'bad maintenance request: on: must be true or false, got "false"'],
    [{ cmd: "maintenance" }, "bad maintenance request: on: is required (true or false)"],
    [
      { cmd: "handover", to: 123 },
      "bad handover request: to: must be a node id: 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit, got 123",
    ],
    [
      { cmd: "handover", preferBuild: "abc" },
      'bad handover request: preferBuild: must be a build id: 16 lowercase hex digits (the start of the bundle\'s SHA-256), got "abc"',
    ],
    [
      { cmd: "handover", to: "b2", preferBuild: "0123456789abcdef" },
      "bad handover request: (root): to and preferBuild exclude each other: to names the successor",
    ],
    [{ cmd: "reload", force: true }, 'bad reload request: (root): has unknown key "force" (known keys: cmd)'],
    [{ cmd: "shutdown" }, 'bad request: cmd: must be one of "status", "handover", "maintenance", "reload", got "shutdown"'],
    [["status"], "request must be a JSON object, got a list of 1"],
  ])("refuses %j without running it", async (req, error) => {
    const { path, seen } = await recordingServer();
    expect(await controlRequest(path, req as unknown as ControlRequest, { timeoutMs: 2_000 })).toEqual({ error });
    expect(seen).toEqual([]);
  });

  it("refuses a line that is not JSON without echoing it", () => {
    expect(parseControlRequest("{secret-ish\u0007")).toEqual({
      ok: false,
      error: "request is not valid JSON (12 characters); expected one JSON object per line",
    });
  });

  it("passes a valid request through with its types", async () => {
    const { path, seen } = await recordingServer();
    await controlRequest(path, { cmd: "maintenance", on: false }, { timeoutMs: 2_000 });
    await controlRequest(path, { cmd: "handover", to: "b2" }, { timeoutMs: 2_000 });
    expect(seen).toEqual([
      { cmd: "maintenance", on: false },
      { cmd: "handover", to: "b2" },
    ]);
  });
});

describe("control connection bounds", () => {
  it(`holds the ${CONTROL_MAX_CONNECTION_BYTES}-byte cap over all the data of a connection, after a first request too`, async () => {
    const { path, seen } = await recordingServer();
    const c = rawClient(path);
    await c.connected;
    await c.write('{"cmd":"status"}\n');
    expect(await until(() => c.answers.length === 1)).toBe(true);
    // Then chunks of 16 KiB without a newline: each under the cap, together over it.
    for (let i = 0; i < 6 && !c.closed(); i++) {
      await c.write(Buffer.alloc(16 * 1024, 0x20));
      await pause(20);
    }
    expect(await until(() => c.closed())).toBe(true);
    expect(c.answers).toEqual([{ ok: true, cmd: "status" }, { error: `more than ${CONTROL_MAX_CONNECTION_BYTES} bytes on one connection; closing` }]);
    expect(seen).toEqual([{ cmd: "status" }]);
  });

  it("counts many small requests against the same cap", async () => {
    const { path, seen } = await recordingServer();
    const c = rawClient(path);
    await c.connected;
    const line = '{"cmd":"status"}\n';
    const n = Math.ceil(CONTROL_MAX_CONNECTION_BYTES / line.length) + 10;
    await c.write(line.repeat(n));
    expect(await until(() => c.closed())).toBe(true);
    expect(c.answers.at(-1)).toEqual({ error: `more than ${CONTROL_MAX_CONNECTION_BYTES} bytes on one connection; closing` });
    expect(seen.length).toBeLessThan(n);
  });

  it("closes a connection idle past the timeout, with a line that says so", async () => {
    const { path, seen } = await recordingServer({ idleTimeoutMs: 200 });
    const silent = rawClient(path);
    const partial = rawClient(path);
    await Promise.all([silent.connected, partial.connected]);
    await partial.write('{"cmd":"sta');
    const t0 = Date.now();
    expect(await until(() => silent.closed() && partial.closed(), 3_000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    for (const c of [silent, partial]) expect(c.answers).toEqual([{ error: "idle for 200 ms without a request; closing" }]);
    expect(seen).toEqual([]);
  });

  it("does not time out a request whose handler runs longer than the idle timeout", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-control-"));
    const path = join(dir, "fipd.sock");
    const server = await createControlServer(path, () => new Promise((r) => setTimeout(() => r({ ok: true }), 400)), { idleTimeoutMs: 100 });
    closeServer = () => server.close();
    expect(await controlRequest(path, { cmd: "reload" }, { timeoutMs: 2_000 })).toEqual({ ok: true });
  });

  it("does not time out a pipelined request that waits behind a slow one", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-control-"));
    const path = join(dir, "fipd.sock");
    const server = await createControlServer(path, (req) => new Promise((r) => setTimeout(() => r({ ok: true, cmd: req.cmd }), 300)), {
      idleTimeoutMs: 100,
    });
    closeServer = () => server.close();
    const c = rawClient(path);
    await c.connected;
    await c.write('{"cmd":"reload"}\n');
    await pause(50);
    await c.write('{"cmd":"status"}\n');
    expect(await until(() => c.answers.length >= 2)).toBe(true);
    expect(c.answers.slice(0, 2)).toEqual([
      { ok: true, cmd: "reload" },
      { ok: true, cmd: "status" },
    ]);
    c.sock.destroy();
  });

  it("the client fails at once when the agent closes without an answer", async () => {
    dir = mkdtempSync(join(tmpdir(), "halb-control-"));
    const path = join(dir, "fipd.sock");
    const { createServer } = await import("node:net");
    const rude = createServer((s) => s.on("data", () => s.destroy()));
    await new Promise<void>((r) => rude.listen(path, () => r()));
    closeServer = () => new Promise((r) => rude.close(() => r()));
    const t0 = Date.now();
    await expect(controlRequest(path, { cmd: "status" }, { timeoutMs: 5_000 })).rejects.toThrow(`${path}: the agent closed the connection without an answer`);
    expect(Date.now() - t0).toBeLessThan(2_000);
  });
});
