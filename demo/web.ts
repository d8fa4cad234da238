/**
 * `npm run demo -- --web`: the loopback cluster, live in a browser.
 *
 * Two blue and two green load-balancer agents and a witness run as real fipd processes against the
 * DigitalOcean emulator (testbed/harness/local-cluster.ts), every peer datagram through a relay so a
 * node can be partitioned without root, each agent supervised as systemd does (Restart=always after
 * 1 s). A client sends a request every 50 ms "through the Reserved IP": to the stand-in HAProxy of the
 * droplet the emulator says holds it. One page on 127.0.0.1 shows the nodes, the client's answers and
 * the API's request log, live over Server-Sent Events, with buttons that break things.
 *
 * The color switch and the rolling upgrade run the stack's own scripts (components/scripts.ts), in
 * the stack's order (components/rolling-order.ts), with the harness as their service manager.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import * as v from "valibot";
import type { Color } from "../agent/config.js";
import { boolean, formatIssues, nonEmptyString, strictObject } from "../agent/schema.js";
import { buildId } from "../agent/build-id.js";
import type { StatusReport } from "../agent/controller.js";
import { httpGet } from "../agent/http-get.js";
import { rollingOrder } from "../components/rolling-order.js";
import { applyConfigCommand, leaderRestartScript, rollingRestartScript, switchColorCheckScript } from "../components/scripts.js";
import { BUNDLE, LocalCluster, RESERVED_IP, sha256File } from "../testbed/harness/local-cluster.js";

export interface WebDemoOptions {
  /** 0: a free port. */
  port: number;
  actionDelayMs: number;
  /** Where the demo says what happens (the terminal). */
  say: (line: string) => void;
}

export interface WebDemo {
  url: string;
  close(): Promise<void>;
}

/** The client's cadence, and how long it waits for an answer (as the benchmarks' client). */
const PROBE_INTERVAL_MS = 50;
const PROBE_TIMEOUT_MS = 1_000;
/** How often the page gets the cluster's state. */
const PUSH_INTERVAL_MS = 250;
/** What the page can show: the chart's window, and the longest lists. */
const HISTORY_MS = 60_000;
const MAX_EVENTS = 400;
const MAX_API = 400;
/** A generous bound for the page's requests (the largest is a few dozen bytes). */
const MAX_BODY_BYTES = 1024;
/** Agents restart this long after an exit nobody asked for: the unit's RestartSec. */
const RESTART_AFTER_MS = 1_000;
/** The stack waits 120 s; the demo gives up sooner and says why. */
const SCRIPT_HEALTHY_TIMEOUT_S = 60;
const SWITCH_CHECK_TIMEOUT_S = 30;

const STATIC: Record<string, { file: string; type: string }> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/style.css": { file: "style.css", type: "text/css; charset=utf-8" },
};

const NodeId = nonEmptyString("a node id");
/** One schema per action, chosen by `action` first, so that an error names the field that is wrong. */
const ACTIONS = {
  "kill-leader": strictObject({ action: v.literal("kill-leader") }),
  haproxy: strictObject({ action: v.literal("haproxy"), node: NodeId, up: boolean }),
  partition: strictObject({ action: v.literal("partition"), node: NodeId, cut: boolean }),
  "switch-color": strictObject({ action: v.literal("switch-color") }),
  "rolling-upgrade": strictObject({ action: v.literal("rolling-upgrade") }),
} as const;
type Action = v.InferOutput<(typeof ACTIONS)[keyof typeof ACTIONS]>;

function parseAction(body: unknown): Action {
  const name = typeof body === "object" && body !== null ? (body as { action?: unknown }).action : undefined;
  if (typeof name !== "string" || !Object.hasOwn(ACTIONS, name)) {
    throw new HttpError(400, `bad action: action: must be one of ${Object.keys(ACTIONS).join(", ")}`);
  }
  const parsed = v.safeParse(ACTIONS[name as keyof typeof ACTIONS], body);
  if (!parsed.success) throw new HttpError(400, `bad action: ${formatIssues(parsed.issues).join("; ")}`);
  return parsed.output;
}

interface Sample {
  seq: number;
  t: number;
  /** The node that answered, or null for a failed request. */
  by: string | null;
  error?: string;
}
interface DemoEvent {
  seq: number;
  t: number;
  text: string;
  level: "info" | "action" | "error";
}
interface ApiEntry {
  seq: number;
  t: number;
  method: string;
  path: string;
  status: number;
}

/** An answer with a status and a message for the page (a precise one when the request was wrong). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Items of a sequence, kept to a bound, that each page reads from its own cursor on. */
class Journal<T extends { seq: number }> {
  private items: T[] = [];
  private next = 1;
  constructor(private readonly keep: (items: T[]) => T[]) {}
  add(item: Omit<T, "seq">): void {
    this.items.push({ ...item, seq: this.next++ } as T);
    this.items = this.keep(this.items);
  }
  since(seq: number): T[] {
    const i = this.items.findIndex((x) => x.seq > seq);
    return i < 0 ? [] : this.items.slice(i);
  }
  get last(): number {
    return this.next - 1;
  }
}

export async function startWebDemo(o: WebDemoOptions): Promise<WebDemo> {
  const events = new Journal<DemoEvent>((xs) => xs.slice(-MAX_EVENTS));
  const samples = new Journal<Sample>((xs) => {
    const since = Date.now() - HISTORY_MS;
    return xs.length > 0 && xs[0].t < since - 5_000 ? xs.filter((x) => x.t >= since) : xs; // trimmed in batches
  });
  const api = new Journal<ApiEntry>((xs) => xs.slice(-MAX_API));
  const note = (text: string, level: DemoEvent["level"] = "info") => {
    events.add({ t: Date.now(), text, level });
    o.say(text);
  };

  const cluster = await LocalCluster.start({
    lbs: ["blue", "blue", "green", "green"],
    witness: true,
    actionDelayMs: o.actionDelayMs,
    peerRelays: true,
    restartAfterMs: RESTART_AFTER_MS,
    onAgentEvent: (id, ev) => note(`${id}: ${ev}`),
  });
  const lbs = [...cluster.nodes.values()].filter((h) => h.role === "lb");
  /** The bundle the agents run after the last completed upgrade (apply-config runs this one). */
  let currentSha = cluster.initialSha;
  let upgrades = 0;
  /** The long operation running (a color switch or an upgrade), if any: one at a time, as one `pulumi up`. */
  let busy: string | null = null;
  let closing = false;
  note(`emulated DigitalOcean API at ${cluster.emulator.apiUrl} (assign actions take ${o.actionDelayMs} ms)`);
  note(`Reserved IP ${RESERVED_IP}; voters ${[...cluster.nodes.keys()].join(", ")} (majority 3 of 5); blue serves`);
  cluster.startAll();

  // ------------------------------------------------------------------ the client
  const probe = async () => {
    const t = Date.now();
    const holder = cluster.holder();
    if (!holder) return samples.add({ t, by: null, error: "the Reserved IP is on no droplet" });
    try {
      // A new connection each time, as a client arriving at the Reserved IP would open.
      const res = await httpGet(cluster.node(holder).health!.trafficUrl, PROBE_TIMEOUT_MS);
      const body = res.body.trim();
      if (res.status === 200) samples.add({ t, by: body });
      else samples.add({ t, by: null, error: `HTTP ${res.status} from ${holder} (${body})` });
    } catch (e) {
      samples.add({ t, by: null, error: `${holder}: ${(e as Error).message}` });
    }
  };
  // The client starts once a droplet first holds the IP: before that there is no service to measure.
  let prober: NodeJS.Timeout | null = null;
  const startClient = () => {
    if (prober || closing) return;
    note(`client: a request every ${PROBE_INTERVAL_MS} ms through the Reserved IP`);
    prober = setInterval(() => void probe(), PROBE_INTERVAL_MS);
  };

  // ------------------------------------------------------------------ the state the page shows
  let apiSeen = 0;
  let assigns = 0;
  let shownLeader: string | null = null;
  let shownHolder: string | null = null;
  const snapshot = async () => {
    const statuses = new Map<string, StatusReport | null>(
      await Promise.all([...cluster.nodes.keys()].map(async (id) => [id, await cluster.status(id)] as const)),
    );
    const holder = cluster.holder();
    const leaders = [...statuses.values()].filter((s) => s?.role === "leader");
    const leader = leaders.length === 1 ? leaders[0]!.node : null;
    if (holder !== shownHolder) note(`Reserved IP ${RESERVED_IP} is now on ${(shownHolder = holder) ?? "no droplet"}`);
    if (holder) startClient();
    if (leader && leader !== shownLeader) note(`leader: ${(shownLeader = leader)} (term ${statuses.get(leader)?.term})`);
    for (const r of cluster.emulator.requestLog().slice(apiSeen)) {
      api.add({ t: r.at, method: r.method, path: r.path, status: r.status });
      apiSeen++;
      if (r.method === "POST") assigns++;
    }
    // The cluster's view of colors: the leader's, else any agent that answers.
    const view = (leader ? statuses.get(leader) : null) ?? [...statuses.values()].find((s) => s && s.role !== "witness") ?? null;
    return {
      now: Date.now(),
      cluster: {
        reservedIp: RESERVED_IP,
        holder,
        leader,
        assignInProgress: cluster.emulator.reservedIpLocked(RESERVED_IP),
        colorInForce: view?.colorInForce ?? null,
        requestedColor: lbs[0]!.config.activeColor ?? "blue",
        pendingSwitch: view?.pendingSwitch ?? null,
        busy,
        build: buildId(currentSha),
        apiRequests: apiSeen,
        assigns,
        actionDelayMs: o.actionDelayMs,
      },
      nodes: [...cluster.nodes.values()].map((h) => {
        const st = statuses.get(h.id) ?? null;
        return {
          id: h.id,
          kind: h.role,
          color: h.color,
          agent: h.proc ? "running" : h.restartTimer ? "restarting" : "stopped",
          pid: h.proc?.pid ?? null,
          partitioned: h.partitioned,
          haproxy: h.health ? (h.health.isHealthy() ? "up" : "down") : null,
          role: st?.role ?? null,
          term: st?.term ?? null,
          healthy: st?.healthy ?? null,
          build: st?.build ?? null,
          majorityReachable: st?.majorityReachable ?? null,
          holdsIp: holder === h.id,
        };
      }),
    };
  };

  interface Page {
    res: ServerResponse;
    cursors: { samples: number; events: number; api: number };
  }
  const pages = new Set<Page>();
  let pushing = false;
  const push = async () => {
    if (pushing || closing || pages.size === 0) return;
    pushing = true;
    try {
      const state = await snapshot();
      for (const p of pages) {
        const update = {
          ...state,
          samples: samples.since(p.cursors.samples),
          events: events.since(p.cursors.events),
          api: api.since(p.cursors.api),
        };
        p.cursors = { samples: samples.last, events: events.last, api: api.last };
        p.res.write(`event: update\ndata: ${JSON.stringify(update)}\n\n`);
      }
    } finally {
      pushing = false;
    }
  };
  // Leader and holder changes are noted even with no page open.
  const pusher = setInterval(
    () => void (pages.size ? push() : snapshot().then(() => undefined)).catch((e: unknown) => note(`state: ${String(e)}`, "error")),
    PUSH_INTERVAL_MS,
  );

  // ------------------------------------------------------------------ the buttons
  const script = async (id: string, what: string, text: string, stdin = "") => {
    const r = await cluster.runScript(id, text, stdin, 300_000, (line, stream) => {
      if (stream === "err" || line.startsWith("ha-lb:")) note(`${id} $ ${line}`, stream === "err" ? "error" : "info");
    });
    if (r.code !== 0) throw new Error(`${what} on ${id} failed (exit ${r.code})`);
  };

  /** A config change, as `pulumi up` makes it: apply-config with the other color on every droplet, then the check. */
  const switchColor = async (to: Color) => {
    for (const h of cluster.nodes.values()) {
      h.config = { ...h.config, activeColor: to };
      await script(h.id, "apply-config", applyConfigCommand(currentSha, cluster.scriptOptions(h.id)), cluster.applyPayload(h.id));
    }
    note(`every droplet has activeColor ${to}; the stack's switch check waits (at most ${SWITCH_CHECK_TIMEOUT_S} s) until ${to} holds the IP`);
    await script(lbs[0]!.id, "the switch check", switchColorCheckScript(to, SWITCH_CHECK_TIMEOUT_S, cluster.scriptOptions(lbs[0]!.id)));
  };

  /** A bundle change, as `pulumi up` rolls it: every agent but the leader in the stack's order, then the leader after a handover. */
  const rollingUpgrade = async () => {
    upgrades++;
    const file = join(cluster.dir, `fipd-upgrade-${upgrades}.cjs`);
    writeFileSync(file, readFileSync(BUNDLE, "utf8") + `\n// ha-lb web demo: upgrade ${upgrades}\n`);
    const sha = sha256File(file);
    const order = rollingOrder(
      [...cluster.nodes.values()].map((h) => ({ name: h.id, color: h.color, role: h.role })),
      lbs[0]!.config.activeColor ?? "blue",
    ).map((n) => n.name);
    note(`rolling upgrade to build ${buildId(sha)}, in the stack's order: ${order.join(", ")}; the leader waits for the second pass`);
    for (const id of order) {
      cluster.copyBundle(id, file);
      await script(id, "apply-config", applyConfigCommand(sha, cluster.scriptOptions(id)), cluster.applyPayload(id));
      await script(id, "the rolling restart", rollingRestartScript(sha, SCRIPT_HEALTHY_TIMEOUT_S, cluster.scriptOptions(id)));
    }
    for (const id of order) await script(id, "the leader's restart", leaderRestartScript(sha, SCRIPT_HEALTHY_TIMEOUT_S, cluster.scriptOptions(id)));
    currentSha = sha;
  };

  const long = (what: string, run: () => Promise<void>) => {
    if (busy) throw new HttpError(409, `${busy} is still running: one change at a time, as one pulumi up`);
    busy = what;
    note(`${what}: started`, "action");
    run()
      .then(
        () => note(`${what}: done`, "action"),
        (e: unknown) => note(`${what}: stopped: ${(e as Error).message}`, "error"),
      )
      .finally(() => (busy = null));
    return `${what} started`;
  };

  const lb = (id: string) => {
    const h = cluster.nodes.get(id);
    if (!h) throw new HttpError(404, `no node ${JSON.stringify(id)} (have ${[...cluster.nodes.keys()].join(", ")})`);
    return h;
  };

  const act = async (a: Action): Promise<string> => {
    switch (a.action) {
      case "kill-leader": {
        // The leader that serves: the one the agents agree on, holding the IP. Between two leaders (an
        // election, an assign in flight, a busy machine) give them a moment; then take the agreed one.
        const serving = async () => {
          const l = await cluster.leader();
          return l && cluster.holder() === l ? l : null;
        };
        const leader = (await cluster.waitFor("the serving leader", serving, 3_000, 50).catch(() => null)) ?? (await cluster.leader());
        if (!leader) throw new HttpError(409, "no agreed leader right now: nothing to kill");
        const pid = cluster.killNode(leader, "SIGKILL");
        note(`kill -9 ${leader} (pid ${pid}), the leader`, "action");
        return `killed ${leader}`;
      }
      case "haproxy": {
        const h = lb(a.node);
        if (!h.health) throw new HttpError(400, `${a.node} is the witness: it runs no HAProxy`);
        h.health.setHealthy(a.up);
        note(a.up ? `HAProxy on ${a.node} started` : `HAProxy on ${a.node} stopped: its health check and its frontend answer 503`, "action");
        return `HAProxy on ${a.node} ${a.up ? "started" : "stopped"}`;
      }
      case "partition": {
        lb(a.node);
        cluster.partition(a.node, a.cut);
        note(a.cut ? `${a.node} partitioned: its peer datagrams are dropped both ways (the API still answers it)` : `${a.node} healed`, "action");
        return `${a.node} ${a.cut ? "partitioned" : "healed"}`;
      }
      case "switch-color": {
        const to: Color = (lbs[0]!.config.activeColor ?? "blue") === "blue" ? "green" : "blue";
        return long(`switch to ${to}`, () => switchColor(to));
      }
      case "rolling-upgrade":
        return long("rolling upgrade", rollingUpgrade);
    }
  };

  // ------------------------------------------------------------------ HTTP
  let port = o.port;
  const readJson = (req: IncomingMessage) =>
    new Promise<unknown>((resolve, reject) => {
      if (!(req.headers["content-type"] ?? "").startsWith("application/json")) return reject(new HttpError(415, "send the action as application/json"));
      let body = "";
      req.on("data", (d: Buffer) => {
        body += d.toString();
        if (body.length > MAX_BODY_BYTES) {
          reject(new HttpError(413, `the request body is over ${MAX_BODY_BYTES} bytes`));
          req.destroy();
        }
      });
      req.on("end", () => {
        try {
          resolve(JSON.parse(body));
        } catch (e) {
          reject(new HttpError(400, `the request body is not JSON: ${(e as Error).message}`));
        }
      });
      req.on("error", reject);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    // Only this machine's browser, by the names it knows us by: no other site can drive the demo.
    const host = req.headers.host ?? "";
    if (host !== `127.0.0.1:${port}` && host !== `localhost:${port}`) throw new HttpError(403, `unexpected Host ${JSON.stringify(host)}`);
    const path = (req.url ?? "/").split("?")[0]!;
    if (req.method === "GET" && STATIC[path]) {
      const s = STATIC[path];
      res.writeHead(200, { "content-type": s.type, "cache-control": "no-store" });
      return void res.end(readFileSync(join(__dirname, "web", s.file)));
    }
    if (req.method === "GET" && path === "/events") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
      res.write("retry: 1000\n\n");
      const page: Page = { res, cursors: { samples: 0, events: 0, api: 0 } };
      pages.add(page);
      req.on("close", () => pages.delete(page));
      return void push();
    }
    if (req.method === "POST" && path === "/api/actions") {
      const message = await act(parseAction(await readJson(req)));
      res.writeHead(200, { "content-type": "application/json" });
      return void res.end(JSON.stringify({ ok: true, message }));
    }
    throw new HttpError(404, `no ${req.method} ${path} here`);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      if (status === 500) note(`web: ${(e as Error).message}`, "error");
      if (res.headersSent) return void res.end();
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: false, error: (e as Error).message }));
    });
  });

  const close = async () => {
    if (closing) return;
    closing = true;
    if (prober) clearInterval(prober);
    clearInterval(pusher);
    for (const p of pages) p.res.end();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await cluster.close();
  };

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: NodeJS.ErrnoException) =>
        reject(e.code === "EADDRINUSE" ? new Error(`port ${o.port} on 127.0.0.1 is in use: choose another with --port, or --port 0 for a free one`) : e),
      );
      server.listen(o.port, "127.0.0.1", () => resolve());
    });
  } catch (e) {
    await close();
    throw e;
  }
  port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/`, close };
}
