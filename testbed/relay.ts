/**
 * A userspace UDP relay that delays every datagram by `delayMs + uniform(-jitterMs, +jitterMs)` (at least 0), in
 * both directions, for test beds whose kernel has no netem. Each distinct client address:port gets its own
 * socket towards the target, so the target's replies can be relayed back to the right client. Datagrams may be
 * reordered; that is what jitter does. `drop` cuts clients off, for a partition without root: the loopback
 * harness routes every peer datagram through one relay per node and drops a partitioned node's traffic.
 *
 * CLI: npx tsx testbed/relay.ts --listen 127.0.0.1:7000 --target 127.0.0.1:7001 --delay 10 --jitter 20
 */
import { createSocket, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";
import { performance } from "node:perf_hooks";
import { resolve } from "node:path";
import { parseArgs } from "node:util";

export interface RelayOptions {
  listenAddress: string;
  listenPort: number;
  targetAddress: string;
  targetPort: number;
  delayMs: number;
  jitterMs: number;
  /** Uniform in [0, 1); Math.random by default. */
  random?: () => number;
  /**
   * Asked for every datagram when it arrives and again when it is due: true drops it (so a cut also
   * drops what is in flight). `client` is the address:port the relay serves (the sender of a forwarded
   * datagram, the receiver of a reply). Asked each time, so a caller can cut and heal while it runs.
   */
  drop?: (client: { address: string; port: number }) => boolean;
}

export interface UdpRelay {
  port: number;
  close(): Promise<void>;
  stats(): { forwarded: number; replied: number; dropped: number };
}

export async function startUdpRelay(o: RelayOptions): Promise<UdpRelay> {
  const random = o.random ?? Math.random;
  const type = isIPv6(o.listenAddress) ? "udp6" : "udp4";
  const targetType = isIPv6(o.targetAddress) ? "udp6" : "udp4";
  const timers = new Set<NodeJS.Timeout>();
  const clients = new Map<string, Socket>();
  let closed = false;
  let forwarded = 0;
  let replied = 0;
  let dropped = 0;
  const dropping = (client: { address: string; port: number }) => {
    if (!o.drop?.({ address: client.address, port: client.port })) return false;
    dropped++;
    return true;
  };

  const delay = () => Math.max(0, o.delayMs + (random() * 2 - 1) * o.jitterMs);

  /**
   * Runs fn once at least ms of real time have passed. Timers run off the event loop's cached, millisecond-
   * truncated clock and can fire a little early by performance.now(); re-arm for the remainder if so. No delay
   * (a relay that only cuts links) forwards at once: a timer per datagram would add latency for nothing.
   */
  const later = (ms: number, fn: () => void) => {
    if (ms <= 0) return fn();
    const due = performance.now() + ms;
    const arm = (wait: number) => {
      const t = setTimeout(() => {
        timers.delete(t);
        if (closed) return;
        const left = due - performance.now();
        if (left > 0) arm(Math.ceil(left));
        else fn();
      }, wait);
      timers.add(t);
    };
    arm(ms);
  };

  const ignore = () => undefined;
  const listen = createSocket({ type });
  listen.on("error", ignore); // a relay for test beds: a failed send is a lost datagram, not a crash

  listen.on("message", (msg, rinfo) => {
    if (closed || dropping(rinfo)) return;
    const key = `${rinfo.address}|${rinfo.port}`;
    let up = clients.get(key);
    if (!up) {
      const sock = createSocket({ type: targetType });
      sock.on("error", ignore);
      sock.on("message", (reply) => {
        if (closed || dropping(rinfo)) return;
        later(delay(), () => {
          if (dropping(rinfo)) return;
          listen.send(reply, rinfo.port, rinfo.address, (err) => {
            if (!err) replied++;
          });
        });
      });
      clients.set(key, (up = sock));
    }
    const s = up;
    later(delay(), () => {
      if (dropping(rinfo)) return;
      // An unbound socket binds to an ephemeral port on its first send, and then receives the replies.
      s.send(msg, o.targetPort, o.targetAddress, (err) => {
        if (!err) forwarded++;
      });
    });
  });

  await new Promise<void>((res, rej) => {
    const onError = (err: Error) => rej(err);
    listen.once("error", onError);
    listen.bind(o.listenPort, o.listenAddress, () => {
      listen.off("error", onError);
      res();
    });
  }).catch((err: unknown) => {
    closed = true;
    try {
      listen.close();
    } catch {
      /* already closed */
    }
    throw err;
  });

  const port = listen.address().port;
  let closing: Promise<void> | undefined;

  return {
    port,
    stats: () => ({ forwarded, replied, dropped }),
    close() {
      if (closing) return closing;
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const sockets = [listen, ...clients.values()];
      clients.clear();
      closing = Promise.all(
        sockets.map(
          (s) =>
            new Promise<void>((res) => {
              try {
                s.close(() => res());
              } catch {
                res(); // never bound (no datagram was sent yet) or already closed
              }
            }),
        ),
      )
        // dgram emits 'close' before libuv has released the handle (its close callbacks run after the check
        // phase); two turns of the loop later it is gone, so callers see no leftover handle.
        .then(() => new Promise<void>((res) => setImmediate(() => setImmediate(res))));
      return closing;
    },
  };
}

/** "127.0.0.1:7000", "[::1]:7000" → address and port. */
export function parseHostPort(s: string): { address: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`expected host:port or [v6]:port, got ${JSON.stringify(s)}`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port in ${JSON.stringify(s)}`);
  return { address: m[1]!, port };
}

async function cli(): Promise<void> {
  const { values } = parseArgs({
    options: {
      listen: { type: "string" },
      target: { type: "string" },
      delay: { type: "string", default: "0" },
      jitter: { type: "string", default: "0" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  const usage = "usage: npx tsx testbed/relay.ts --listen HOST:PORT --target HOST:PORT [--delay MS] [--jitter MS]";
  if (values.help) {
    console.log(usage);
    return;
  }
  if (!values.listen || !values.target) throw new Error(usage);
  const listen = parseHostPort(values.listen);
  const target = parseHostPort(values.target);
  const delayMs = Number(values.delay);
  const jitterMs = Number(values.jitter);
  if (!Number.isFinite(delayMs) || delayMs < 0 || !Number.isFinite(jitterMs) || jitterMs < 0)
    throw new Error(`--delay and --jitter must be numbers ≥ 0\n${usage}`);
  const relay = await startUdpRelay({
    listenAddress: listen.address,
    listenPort: listen.port,
    targetAddress: target.address,
    targetPort: target.port,
    delayMs,
    jitterMs,
  });
  console.log(`relay ${listen.address}:${relay.port} -> ${values.target}, delay ${delayMs} ms ± ${jitterMs} ms`);
  const stop = () => {
    const s = relay.stats();
    void relay.close().then(() => console.log(`relay closed: ${s.forwarded} forwarded, ${s.replied} replied`));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

/**
 * Whether this file is the program's entry point. The package has no "type": "module", so tsx and tsc treat it
 * as CommonJS (where `import.meta` is not allowed) and `require.main === module` is the test; should the package
 * ever turn ESM, those names are gone and the script path in argv decides.
 */
function isEntryPoint(): boolean {
  if (typeof require !== "undefined" && typeof module !== "undefined") return require.main === module;
  const entry = process.argv[1];
  return !!entry && /(^|[\\/])relay\.[cm]?[jt]s$/.test(resolve(entry));
}

if (isEntryPoint()) {
  cli().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(2);
  });
}
