/**
 * The local control socket behind `fipd status`, `handover`, `maintenance` and `reload`: a unix
 * socket, mode 0600. Newline-delimited JSON: each line a client sends is one request, answered by
 * one JSON line, in order, one at a time. Each request runs exactly once, after it is parsed
 * against the schema of its command (`REQUEST_SCHEMAS`).
 *
 * Bounds, so a stuck or hostile local client costs nothing lasting: at most
 * CONTROL_MAX_CONNECTION_BYTES received per connection (over all its data, not per chunk), and a
 * connection that sends nothing for CONTROL_IDLE_TIMEOUT_MS while no request of it runs is closed.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { dirname } from "node:path";
import * as v from "valibot";
import { boolean, check, crossCheck, formatIssues, matching, nodeId, oneOf, printable, show, strictObject } from "./schema.js";
import { BUILD_ID } from "./build-id.js";

/** All the bytes one connection may send; a request is a few dozen bytes. */
export const CONTROL_MAX_CONNECTION_BYTES = 64 * 1024;
/** A connection silent this long, with no request of it running, is closed. */
export const CONTROL_IDLE_TIMEOUT_MS = 10_000;
/** The largest answer a client reads (a status of many members is a few KiB). */
const CONTROL_MAX_ANSWER_BYTES = 1024 * 1024;

const COMMANDS = ["status", "handover", "maintenance", "reload"] as const;
type Command = (typeof COMMANDS)[number];

/** One schema per command: the command is known first, so a bad request names the field that is wrong. */
export const REQUEST_SCHEMAS = {
  status: strictObject({ cmd: v.literal("status") }),
  handover: v.pipe(
    strictObject({
      cmd: v.literal("handover"),
      to: v.optional(nodeId),
      preferBuild: v.optional(matching(BUILD_ID, "a build id: 16 lowercase hex digits (the start of the bundle's SHA-256)")),
    }),
    crossCheck<{ cmd: "handover"; to?: string; preferBuild?: string }>([["to"], ["preferBuild"]], (r, report) => {
      if (r.to !== undefined && r.preferBuild !== undefined) report([], "to and preferBuild exclude each other: to names the successor");
    }),
  ),
  maintenance: strictObject({ cmd: v.literal("maintenance"), on: boolean }),
  reload: strictObject({ cmd: v.literal("reload") }),
} satisfies Record<Command, v.GenericSchema>;

export type ControlRequest = { [C in Command]: v.InferOutput<(typeof REQUEST_SCHEMAS)[C]> }[Command];

/** One request line to a request, or the one-line reason it is refused. Never echoes more than a short excerpt. */
export function parseControlRequest(line: string): { ok: true; request: ControlRequest } | { ok: false; error: string } {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    return { ok: false, error: `request is not valid JSON (${line.length} characters); expected one JSON object per line` };
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) return { ok: false, error: `request must be a JSON object, got ${show(doc)}` };
  const cmd = (doc as { cmd?: unknown }).cmd;
  const known = check(oneOf(COMMANDS), cmd);
  if (!known.ok) return { ok: false, error: `bad request: cmd: ${printable(known.issues[0].message)}` };
  const r = check(REQUEST_SCHEMAS[known.value], doc);
  if (!r.ok) return { ok: false, error: `bad ${known.value} request: ${formatIssues(r.issues).join("; ")}` };
  return { ok: true, request: r.value as ControlRequest };
}

export async function controlRequest(path: string, req: ControlRequest, o: { timeoutMs: number }): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    const chunks: Buffer[] = [];
    let bytes = 0;
    let done = false;
    const finish = (err: Error | null, value?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new Error(`no answer on ${path} within ${o.timeoutMs} ms`)), o.timeoutMs);
    sock.on("connect", () => sock.write(JSON.stringify(req) + "\n"));
    sock.on("data", (d: Buffer) => {
      const i = d.indexOf(0x0a);
      chunks.push(i >= 0 ? d.subarray(0, i) : d);
      bytes += d.length;
      if (i < 0) {
        if (bytes > CONTROL_MAX_ANSWER_BYTES) finish(new Error(`answer on ${path} longer than ${CONTROL_MAX_ANSWER_BYTES} bytes`));
        return;
      }
      try {
        finish(null, JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        finish(new Error(`bad answer on ${path}: not JSON`));
      }
    });
    sock.on("close", () => finish(new Error(`${path}: the agent closed the connection without an answer`)));
    sock.on("error", (e: NodeJS.ErrnoException) => {
      const why =
        e.code === "ENOENT"
          ? "no such socket"
          : e.code === "ECONNREFUSED"
            ? "nobody listens (stale socket)"
            : e.code === "EACCES"
              ? "permission denied (run as root or the fipd user)"
              : e.code === "EPIPE" || e.code === "ECONNRESET"
                ? "the agent closed the connection without an answer"
                : e.message;
      finish(new Error(`${path}: ${why}`));
    });
  });
}

/** What lies at `path`: nothing, a socket, or something else (named, for the error). */
function whatIsAt(path: string): "nothing" | "socket" | string {
  try {
    const st = lstatSync(path);
    if (st.isSocket()) return "socket";
    if (st.isSymbolicLink()) return "a symbolic link";
    if (st.isDirectory()) return "a directory";
    if (st.isFile()) return "a regular file";
    if (st.isFIFO()) return "a FIFO";
    return "a device or other special file";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "nothing";
    throw new Error(`cannot inspect the control socket path ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Serves one connection: its lines in order, each request once, within the byte cap and the idle timeout. */
function serveConnection(sock: Socket, handler: (req: ControlRequest) => Promise<unknown>, idleTimeoutMs: number): void {
  let received = 0;
  let partial: Buffer = Buffer.alloc(0);
  const lines: string[] = [];
  let running = false;
  let ended = false;
  let closing = false;
  let idle: NodeJS.Timeout | undefined;

  /** Answers once more, then closes: for a connection over its bounds. */
  const refuse = (error: string) => {
    closing = true;
    clearTimeout(idle);
    lines.length = 0;
    sock.end(JSON.stringify({ error }) + "\n", () => sock.destroy());
  };
  const armIdle = () => {
    clearTimeout(idle);
    // A running request is not idleness: next() arms the timer again once it has answered.
    if (running) return;
    idle = setTimeout(() => refuse(`idle for ${idleTimeoutMs} ms without a request; closing`), idleTimeoutMs);
  };
  const next = async () => {
    if (running || closing) return;
    const line = lines.shift();
    if (line === undefined) {
      if (ended) sock.end();
      else armIdle();
      return;
    }
    running = true;
    clearTimeout(idle);
    const parsed = parseControlRequest(line);
    let answer: unknown;
    if (!parsed.ok) answer = { error: parsed.error };
    else {
      try {
        answer = await handler(parsed.request);
      } catch (e) {
        answer = { error: printable((e as Error).message) };
      }
    }
    running = false;
    if (closing || sock.destroyed) return;
    sock.write(JSON.stringify(answer) + "\n");
    await next();
  };
  // The handler answers its own errors; what is left (a socket gone under us) ends that connection.
  const pump = () => void next().catch(() => sock.destroy());

  sock.on("error", () => undefined);
  sock.on("close", () => {
    closing = true;
    clearTimeout(idle);
  });
  sock.on("data", (d: Buffer) => {
    if (closing) return;
    received += d.length;
    if (received > CONTROL_MAX_CONNECTION_BYTES) {
      refuse(`more than ${CONTROL_MAX_CONNECTION_BYTES} bytes on one connection; closing`);
      return;
    }
    partial = partial.length ? Buffer.concat([partial, d]) : d;
    for (let i = partial.indexOf(0x0a); i >= 0; i = partial.indexOf(0x0a)) {
      lines.push(partial.subarray(0, i).toString("utf8").replace(/\r$/, ""));
      partial = partial.subarray(i + 1);
    }
    armIdle();
    pump();
  });
  sock.on("end", () => {
    // A last line without its newline (`printf '{"cmd":"status"}' | nc -U …`) is still a request.
    if (partial.length && !closing) lines.push(partial.toString("utf8"));
    partial = Buffer.alloc(0);
    ended = true;
    pump();
  });
  armIdle();
}

export async function createControlServer(
  path: string,
  handler: (req: ControlRequest) => Promise<unknown>,
  o: { idleTimeoutMs?: number } = {},
): Promise<{ close(): Promise<void> }> {
  const idleTimeoutMs = o.idleTimeoutMs ?? CONTROL_IDLE_TIMEOUT_MS;
  mkdirSync(dirname(path), { recursive: true });
  const found = whatIsAt(path);
  if (found !== "nothing") {
    // Only ever a socket is removed: a path set by mistake to a real file must not cost that file.
    if (found !== "socket")
      throw new Error(
        `the control socket path ${path} holds ${found}, not a socket; refusing to remove it (move it away or set controlSocket to another path)`,
      );
    // A live agent answering here means a second fipd: refuse rather than steal its socket.
    const alive = await controlRequest(path, { cmd: "status" }, { timeoutMs: 500 }).then(
      () => true,
      () => false,
    );
    if (alive) throw new Error(`another fipd already answers on ${path}`);
    unlinkSync(path);
  }
  // allowHalfOpen: a client that sends its request and then ends its side still gets the answer.
  const open = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    open.add(sock);
    sock.on("close", () => open.delete(sock));
    serveConnection(sock, handler, idleTimeoutMs);
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
        for (const sock of open) sock.destroy();
        // Remove our socket, and nothing that has taken its place.
        try {
          if (whatIsAt(path) === "socket") unlinkSync(path);
        } catch {
          /* already gone, or unreadable: leave it */
        }
      }),
  };
}
