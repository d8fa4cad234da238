/**
 * The local control socket behind `fipd status`, `handover`, `maintenance` and `reload`: a unix
 * socket, mode 0600, one JSON request line and one JSON answer line per connection.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { dirname } from "node:path";

/** A build id: the first 16 hex digits of the SHA-256 of a bundle, as in its deployed file name. */
export const BUILD_ID = /^[0-9a-f]{16}$/;
export const buildId = (sha256Hex: string) => sha256Hex.slice(0, 16);

export type ControlRequest =
  { cmd: "status" } | { cmd: "handover"; to?: string; preferBuild?: string } | { cmd: "maintenance"; on: boolean } | { cmd: "reload" };

export async function controlRequest(path: string, req: ControlRequest, o: { timeoutMs: number }): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer on ${path} within ${o.timeoutMs} ms`));
    }, o.timeoutMs);
    sock.on("connect", () => sock.write(JSON.stringify(req) + "\n"));
    sock.on("data", (d) => {
      buf += d.toString();
      const i = buf.indexOf("\n");
      if (i >= 0) {
        clearTimeout(timer);
        sock.end();
        try {
          resolve(JSON.parse(buf.slice(0, i)));
        } catch {
          reject(new Error(`bad answer on ${path}`));
        }
      }
    });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        e.code === "ENOENT"
          ? "no such socket"
          : e.code === "ECONNREFUSED"
            ? "nobody listens (stale socket)"
            : e.code === "EACCES"
              ? "permission denied (run as root or the fipd user)"
              : e.message;
      reject(new Error(`${path}: ${why}`));
    });
  });
}

export async function createControlServer(path: string, handler: (req: ControlRequest) => Promise<unknown>): Promise<{ close(): Promise<void> }> {
  mkdirSync(dirname(path), { recursive: true });
  if (existsSync(path)) {
    // A live agent answering here means a second fipd: refuse rather than steal its socket.
    const alive = await controlRequest(path, { cmd: "status" }, { timeoutMs: 500 }).then(
      () => true,
      () => false,
    );
    if (alive) throw new Error(`another fipd already answers on ${path}`);
    unlinkSync(path);
  }
  const server = createServer((sock) => {
    let buf = "";
    sock.on("error", () => undefined);
    const onData = async (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf("\n");
      if (i < 0) {
        if (buf.length > 65536) sock.destroy();
        return;
      }
      let answer: unknown;
      try {
        answer = await handler(JSON.parse(buf.slice(0, i)) as ControlRequest);
      } catch (e) {
        answer = { error: e instanceof SyntaxError ? "request is not valid JSON" : (e as Error).message };
      }
      sock.end(JSON.stringify(answer) + "\n");
    };
    // The handler answers its own errors; what is left (a socket gone under us) ends that connection.
    sock.on("data", (d: Buffer) => void onData(d).catch(() => sock.destroy()));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return {
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        try {
          unlinkSync(path);
        } catch {
          /* already gone */
        }
      }),
  };
}
