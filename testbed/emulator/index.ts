/**
 * A DigitalOcean API + metadata emulator, owned by the project, for the tests, the demo and the
 * benchmarks. It follows the OpenAPI subset in testbed/emulator/do-openapi (a contract test validates every
 * response against it) and the behaviour in ../shared/do-api-notes.md:
 *  - assign/unassign actions complete after a configurable delay; meanwhile the IP is `locked` and
 *    another action gets 422 "The reserved IP already has a pending event.";
 *  - 250 requests a minute per token (configurable), `ratelimit-*` headers on every answer, 429 with
 *    `retry-after` past the limit;
 *  - injectable faults (any status for the next N matching requests, or for a time, with extra
 *    headers such as a past `ratelimit-reset`) and latency;
 *  - metadata per droplet: under /droplets/<id>/metadata/v1/... or, at /metadata/v1/..., by the
 *    caller's source address or an `X-Droplet-Id` header (for the network-namespace tests);
 *  - a hook when an assign completes, so a test network can move the address (1:1 NAT).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { actionObject, dropletObject, errorBody, regionObject, type ActionState, type DropletState, type ReservedIpState } from "./objects.js";

export interface AssignEvent {
  ip: string;
  dropletId: number | null;
  previousDropletId: number | null;
}
export interface Fault {
  status: number;
  /** How many matching requests get the fault (default: all of them while `forMs` lasts). */
  count?: number;
  /** The fault lasts this long from `faults.set` (a timed outage), as well as at most `count` requests. */
  forMs?: number;
  /** Extra or replacing response headers, e.g. a `ratelimit-reset` in the past or far ahead. */
  headers?: Record<string, string>;
  /** Substring of "METHOD /path" that selects requests (default: every API request). */
  match?: string;
  retryAfterS?: number;
  latencyMs?: number;
  body?: unknown;
}
export interface LoggedRequest {
  method: string;
  path: string;
  status: number;
  at: number;
}

export interface Emulator {
  apiUrl: string;
  metadataUrl(dropletId: number): string;
  metadataServer: { host: string; port: number };
  addReservedIp(o: { ip: string; region: string; dropletId?: number }): void;
  addDroplet(o: { name: string; region: string; publicIpv4: string; privateIpv4: string; anchorIpv4: string; tags?: string[]; sourceAddress?: string }): {
    id: number;
  };
  reservedIpHolder(ip: string): number | null;
  /** An assign or unassign of this IP is still in progress (the API shows it `locked`). */
  reservedIpLocked(ip: string): boolean;
  setActionDelayMs(ms: number): void;
  requestLog(): LoggedRequest[];
  clearRequestLog(): void;
  faults: { set(f: Fault): void; clear(): void };
  onAssign(cb: (ev: AssignEvent) => void | Promise<void>): void;
  close(): Promise<void>;
}

export interface EmulatorOptions {
  tokens: string[];
  actionDelayMs?: number;
  rateLimitPerMinute?: number;
  host?: string;
  port?: number;
  onAssign?: (ev: AssignEvent) => void | Promise<void>;
}

const HOURLY_LIMIT = 5000;

/** A fault's `match`: a substring of "METHOD /path", where `*` stands for one path segment. */
function matches(pattern: string | undefined, request: string): boolean {
  if (!pattern) return true;
  if (!pattern.includes("*")) return request.includes(pattern);
  const re = new RegExp(
    pattern
      .split("*")
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
      .join("[^/]+"),
  );
  return re.test(request);
}

export async function startEmulator(opts: EmulatorOptions): Promise<Emulator> {
  const tokens = new Set(opts.tokens);
  let actionDelayMs = opts.actionDelayMs ?? 0;
  const perMinute = opts.rateLimitPerMinute ?? 250;
  const droplets = new Map<number, DropletState>();
  const ips = new Map<string, ReservedIpState>();
  const actions = new Map<number, ActionState>();
  const log: LoggedRequest[] = [];
  const recent = new Map<string, number[]>(); // token → request times (ms)
  let faults: Array<Fault & { count: number; until: number }> = [];
  const hooks: Array<(ev: AssignEvent) => void | Promise<void>> = opts.onAssign ? [opts.onAssign] : [];
  const timers = new Set<NodeJS.Timeout>();
  let nextDropletId = 500_000_001;
  let nextActionId = 2_000_000_001;

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = body === undefined ? "" : JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "x-request-id": "00000000-0000-4000-8000-000000000000", ...headers });
    res.end(text);
  };
  const text = (res: ServerResponse, status: number, body: string) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
    res.end(body);
  };

  const complete = (a: ActionState, ip: ReservedIpState, target: number | null) => {
    const previous = ip.dropletId;
    a.status = "completed";
    a.completedAt = new Date().toISOString();
    ip.dropletId = target;
    ip.pendingActionId = null;
    for (const h of hooks) {
      try {
        void Promise.resolve(h({ ip: ip.ip, dropletId: target, previousDropletId: previous })).catch(() => undefined);
      } catch {
        /* a test hook's failure must not break the emulator */
      }
    }
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<string>((resolve) => {
      let b = "";
      req.on("data", (d) => (b += d));
      req.on("end", () => resolve(b));
    });

  async function api(req: IncomingMessage, res: ServerResponse, method: string, path: string): Promise<number> {
    const auth = req.headers.authorization ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    if (!tokens.has(token)) {
      send(res, 401, errorBody("unauthorized", "Unable to authenticate you."));
      return 401;
    }
    // Rate limit: a sliding minute per token; headers on every answer.
    const now = Date.now();
    const times = (recent.get(token) ?? []).filter((t) => t > now - 60_000);
    recent.set(token, times);
    const resetS = Math.ceil(((times[0] ?? now) + 60_000) / 1000);
    const rl = (remaining: number) => ({
      "ratelimit-limit": String(HOURLY_LIMIT),
      "ratelimit-remaining": String(Math.max(0, remaining)),
      "ratelimit-reset": String(resetS),
    });
    if (times.length >= perMinute) {
      const retry = Math.max(1, resetS - Math.floor(now / 1000));
      send(res, 429, errorBody("too_many_requests", "API Rate limit exceeded."), { ...rl(0), "retry-after": String(retry) });
      return 429;
    }
    times.push(now);
    const headers = rl(perMinute - times.length);

    const fault = faults.find((f) => f.count > 0 && now < f.until && matches(f.match, `${method} ${path}`));
    if (fault) {
      fault.count--;
      if (fault.latencyMs) await new Promise((r) => setTimeout(r, fault.latencyMs));
      if (fault.status && fault.status !== 200) {
        const ids: Record<number, [string, string]> = {
          422: ["unprocessable_entity", "The reserved IP already has a pending event."],
          429: ["too_many_requests", "API Rate limit exceeded."],
          500: ["server_error", "Unexpected server-side error"],
          503: ["service_unavailable", "Service Unavailable"],
          401: ["unauthorized", "Unable to authenticate you."],
          403: ["forbidden", "You do not have permission to perform this action."],
        };
        const [id, message] = ids[fault.status] ?? ["error", `injected ${fault.status}`];
        send(res, fault.status, fault.body ?? errorBody(id, message), {
          ...headers,
          ...(fault.retryAfterS !== undefined ? { "retry-after": String(fault.retryAfterS) } : {}),
          ...fault.headers,
        });
        return fault.status;
      }
    }

    const ipObject = (ip: ReservedIpState) => ({
      ip: ip.ip,
      region: regionObject(ip.region),
      droplet: ip.dropletId !== null && droplets.has(ip.dropletId) ? dropletObject(droplets.get(ip.dropletId)!) : null,
      locked: ip.pendingActionId !== null,
      project_id: "746c6152-2fa2-11ed-92d3-27aaa54e4988",
    });
    const notFound = () => {
      send(res, 404, errorBody("not_found", "The resource you requested could not be found."), headers);
      return 404;
    };
    let m: RegExpMatchArray | null;
    const kind = path.startsWith("/v2/floating_ips") ? "floating_ip" : "reserved_ip";
    const ipPath = "/v2/(?:reserved_ips|floating_ips)";
    if (method === "GET" && (m = path.match(new RegExp(`^${ipPath}$`)))) {
      const list = [...ips.values()].map(ipObject);
      send(res, 200, { [`${kind}s`]: list, links: {}, meta: { total: list.length } }, headers);
      return 200;
    }
    if (method === "GET" && (m = path.match(new RegExp(`^${ipPath}/([0-9.]+)$`)))) {
      const ip = ips.get(m[1]);
      if (!ip) return notFound();
      send(res, 200, { [kind]: ipObject(ip) }, headers);
      return 200;
    }
    if (method === "POST" && (m = path.match(new RegExp(`^${ipPath}/([0-9.]+)/actions$`)))) {
      const ip = ips.get(m[1]);
      if (!ip) return notFound();
      let body: { type?: string; droplet_id?: number };
      try {
        body = JSON.parse(await readBody(req));
      } catch {
        send(res, 400, errorBody("bad_request", "error parsing request body"), headers);
        return 400;
      }
      if (body.type !== "assign" && body.type !== "unassign") {
        send(res, 422, errorBody("unprocessable_entity", "request payload validation failed"), headers);
        return 422;
      }
      if (body.type === "assign" && (typeof body.droplet_id !== "number" || !droplets.has(body.droplet_id))) {
        if (typeof body.droplet_id !== "number") {
          send(res, 422, errorBody("unprocessable_entity", "droplet_id is required"), headers);
          return 422;
        }
        return notFound();
      }
      if (ip.pendingActionId !== null) {
        send(res, 422, errorBody("unprocessable_entity", `The ${kind === "floating_ip" ? "floating" : "reserved"} IP already has a pending event.`), headers);
        return 422;
      }
      if (body.type === "assign" && droplets.get(body.droplet_id!)!.region !== ip.region) {
        send(res, 422, errorBody("unprocessable_entity", "Droplet and reserved IP must be in the same region."), headers);
        return 422;
      }
      const a: ActionState = {
        id: nextActionId++,
        status: "in-progress",
        type: body.type === "assign" ? "assign_ip" : "unassign_ip",
        startedAt: new Date().toISOString(),
        completedAt: null,
        ip: ip.ip,
        region: ip.region,
      };
      actions.set(a.id, a);
      ip.pendingActionId = a.id;
      const target = body.type === "assign" ? body.droplet_id! : null;
      if (actionDelayMs <= 0) complete(a, ip, target);
      else {
        const t = setTimeout(() => {
          timers.delete(t);
          complete(a, ip, target);
        }, actionDelayMs);
        timers.add(t);
      }
      send(res, 201, { action: { ...actionObject(a), project_id: "746c6152-2fa2-11ed-92d3-27aaa54e4988" } }, headers);
      return 201;
    }
    if (method === "GET" && (m = path.match(new RegExp(`^${ipPath}/([0-9.]+)/actions$`)))) {
      const ip = ips.get(m[1]);
      if (!ip) return notFound();
      const list = [...actions.values()].filter((a) => a.ip === ip.ip).map(actionObject);
      send(res, 200, { actions: list, links: {}, meta: { total: list.length } }, headers);
      return 200;
    }
    if (method === "GET" && ((m = path.match(new RegExp(`^${ipPath}/([0-9.]+)/actions/(\\d+)$`))) || (m = path.match(/^\/v2\/actions\/()(\d+)$/)))) {
      const a = actions.get(Number(m[2]));
      if (!a || (m[1] && a.ip !== m[1])) return notFound();
      send(res, 200, { action: actionObject(a) }, headers);
      return 200;
    }
    if (method === "GET" && (m = path.match(/^\/v2\/droplets\/(\d+)$/))) {
      const d = droplets.get(Number(m[1]));
      if (!d) return notFound();
      send(res, 200, { droplet: dropletObject(d) }, headers);
      return 200;
    }
    if (method === "GET" && path === "/v2/droplets") {
      const list = [...droplets.values()].map(dropletObject);
      send(res, 200, { droplets: list, links: {}, meta: { total: list.length } }, headers);
      return 200;
    }
    return notFound();
  }

  function metadata(res: ServerResponse, d: DropletState | undefined, sub: string): number {
    if (!d) {
      text(res, 404, "droplet not found\n");
      return 404;
    }
    const held = [...ips.values()].find((ip) => ip.dropletId === d.id);
    const values: Record<string, string> = {
      id: String(d.id),
      hostname: d.name,
      region: d.region,
      tags: d.tags.join("\n"),
      "interfaces/public/0/ipv4/address": d.publicIpv4,
      "interfaces/public/0/anchor_ipv4/address": d.anchorIpv4,
      "interfaces/public/0/anchor_ipv4/netmask": "255.255.255.0",
      "interfaces/public/0/anchor_ipv4/gateway": d.anchorIpv4.replace(/\.\d+$/, ".1"),
      "interfaces/private/0/ipv4/address": d.privateIpv4,
      "reserved_ip/ipv4/active": held ? "true" : "false",
      "floating_ip/ipv4/active": held ? "true" : "false",
    };
    if (held) {
      values["reserved_ip/ipv4/ip_address"] = held.ip;
      values["floating_ip/ipv4/ip_address"] = held.ip;
    }
    if (sub === "v1.json") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          droplet_id: d.id,
          hostname: d.name,
          region: d.region,
          tags: d.tags,
          interfaces: {
            public: [
              {
                ipv4: { ip_address: d.publicIpv4 },
                anchor_ipv4: { ip_address: d.anchorIpv4, netmask: "255.255.255.0", gateway: values["interfaces/public/0/anchor_ipv4/gateway"] },
              },
            ],
            private: [{ ipv4: { ip_address: d.privateIpv4 } }],
          },
          reserved_ip: { ipv4: { ip_address: held?.ip ?? "", active: !!held } },
          floating_ip: { ipv4: { ip_address: held?.ip ?? "", active: !!held } },
        }),
      );
      return 200;
    }
    const key = sub.replace(/^v1\//, "");
    if (key in values) {
      text(res, 200, values[key]);
      return 200;
    }
    text(res, 404, "not found\n");
    return 404;
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? "GET";
    const path = (req.url ?? "/").split("?")[0];
    let status = 500;
    try {
      let m: RegExpMatchArray | null;
      if ((m = path.match(/^\/droplets\/(\d+)\/metadata\/(v1\.json|v1\/.+)$/))) {
        status = metadata(res, droplets.get(Number(m[1])), m[2]);
        return; // metadata is free: not in the API request log
      }
      if ((m = path.match(/^\/metadata\/(v1\.json|v1\/.+)$/))) {
        const byHeader = req.headers["x-droplet-id"];
        const src = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
        const d = byHeader ? droplets.get(Number(byHeader)) : [...droplets.values()].find((x) => x.sourceAddress === src);
        status = metadata(res, d, m[1]);
        return;
      }
      status = await api(req, res, method, path);
      log.push({ method, path, status, at: Date.now() });
    } catch (e) {
      if (!res.headersSent) send(res, 500, errorBody("server_error", `emulator: ${(e as Error).message}`));
      log.push({ method, path, status, at: Date.now() });
    }
  };
  // handle() answers its own errors with a 500.
  const server: Server = createServer((req, res) => void handle(req, res));
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = opts.host ?? "127.0.0.1";
  const url = `http://${host}:${addr.port}`;

  return {
    apiUrl: url,
    metadataUrl: (id) => `${url}/droplets/${id}`,
    metadataServer: { host, port: addr.port },
    addReservedIp(o) {
      ips.set(o.ip, { ip: o.ip, region: o.region, dropletId: o.dropletId ?? null, pendingActionId: null });
    },
    addDroplet(o) {
      const id = nextDropletId++;
      droplets.set(id, {
        id,
        name: o.name,
        region: o.region,
        publicIpv4: o.publicIpv4,
        privateIpv4: o.privateIpv4,
        anchorIpv4: o.anchorIpv4,
        tags: o.tags ?? [],
        sourceAddress: o.sourceAddress,
        createdAt: new Date().toISOString(),
      });
      return { id };
    },
    reservedIpHolder: (ip) => ips.get(ip)?.dropletId ?? null,
    reservedIpLocked: (ip) => (ips.get(ip)?.pendingActionId ?? null) !== null,
    setActionDelayMs(ms) {
      actionDelayMs = ms;
    },
    requestLog: () => [...log],
    clearRequestLog() {
      log.length = 0;
    },
    faults: {
      set(f) {
        if (f.count === undefined && f.forMs === undefined) throw new Error("emulator fault: give a count, a duration (forMs) or both");
        faults.push({ ...f, count: f.count ?? Number.POSITIVE_INFINITY, until: f.forMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + f.forMs });
      },
      clear() {
        faults = [];
      },
    },
    onAssign(cb) {
      hooks.push(cb);
    },
    close: () =>
      new Promise<void>((r) => {
        for (const t of timers) clearTimeout(t);
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
