/**
 * `npm run bench:reload [-- --rate 200 --window-ms 4000]`
 *
 * Failed requests across HAProxy reloads and one failover, in the network test bed of the
 * end-to-end tests (real HAProxy, the stack's install script, the router's 1:1 NAT, a client in its
 * own namespace reaching the Reserved IP). Two clients run at once, each at `rate` HTTPS requests per
 * second: one opens a new connection (TLS handshake) per request, the other reuses keep-alive
 * connections. Per case, the clients run for `window-ms`, with the action in the middle:
 * three pool changes and two certificate rotations (a reload of both LBs each), then a kill -9 of
 * the holder's agent and HAProxy. Needs root. Not part of CI.
 *
 * The bed runs HAProxy as a daemon replaced with `-sf` (no master-worker, so that several run on one
 * host), not as systemd's master-worker reload; both hand the listeners over before the old process
 * stops accepting.
 *
 * Writes bench/results/reload.{json,md}.
 */
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { HOST_IP, NetBed, RESERVED_IP } from "../testbed/netbed/bed.js";
import type { Frontend, Pool } from "../components/lb-config.js";
import { makePki } from "../test/stack/pki.js";
import { renderReloadSvg } from "./report.js";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "200" },
    "window-ms": { type: "string", default: "4000" },
    out: { type: "string", default: resolve(__dirname, "results") },
  },
});
const rate = Number(values.rate);
const windowMs = Number(values["window-ms"]);
if (!(rate >= 1 && rate <= 2000) || !(windowMs >= 1000 && windowMs <= 60_000))
  throw new Error(`--rate must be 1..2000 requests/s and --window-ms 1000..60000 (got ${values.rate}, ${values["window-ms"]})`);

interface ClientResult {
  mode: "new" | "keepalive";
  total: number;
  failed: number;
  errors: Record<string, number>;
  rps: number;
}
interface CaseResult {
  case: string;
  kind: "reload" | "failover";
  clients: ClientResult[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One client run in the client namespace, bounded by its window plus the requests' 2 s timeout. */
function runClient(mode: ClientResult["mode"], caFile: string): Promise<ClientResult> {
  return new Promise((resolvePromise, reject) => {
    const p = spawn("ip", [
      "netns",
      "exec",
      "halb-cl",
      process.execPath,
      join(__dirname, "reload-client.mjs"),
      mode,
      RESERVED_IP,
      caFile,
      String(rate),
      String(windowMs),
    ]);
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    const t = setTimeout(() => p.kill("SIGKILL"), windowMs + 15_000);
    p.on("close", (code) => {
      clearTimeout(t);
      if (code !== 0) reject(new Error(`client ${mode} exited ${code}: ${err.slice(0, 2000)}`));
      else resolvePromise(JSON.parse(out.trim()) as ClientResult);
    });
  });
}

async function main() {
  const pki = makePki(["www.example.com"], 30);
  const caFile = join(pki.dir, "both-ca.pem");
  const rotations = [makePki(["www.example.com"], 60), makePki(["www.example.com"], 90)];
  writeFileSync(caFile, [pki, ...rotations].map((p) => p.ca).join(""));
  // A second app server, so that a pool change changes which servers answer.
  const second: Server = createServer((_req, res) => res.end("second\n"));
  const pools: Record<string, Pool> = { web: { servers: ["@APP@"] } };
  const frontends: Frontend[] = [{ port: 443, protocol: "https", pool: "web", certificates: ["www"] }];
  const lb = { frontends, pools, certificates: { www: pki.certs["www.example.com"] } };
  const bed = await NetBed.start({ lbs: ["blue", "blue"], witness: true, lb });
  const results: CaseResult[] = [];
  try {
    await new Promise<void>((r, j) => (second.once("error", j), second.listen(0, HOST_IP, () => r())));
    const secondAddr = `${HOST_IP}:${(second.address() as AddressInfo).port}`;
    for (const id of ["lb-blue-1", "lb-blue-2"]) await bed.installHaproxy(id);
    for (const id of bed.nodes.keys()) await bed.startAgent(id);
    await bed.waitForStableLeader();
    const reloadBoth = async () => {
      for (const id of ["lb-blue-1", "lb-blue-2"]) if (bed.haproxyPid(id)) await bed.installHaproxy(id);
    };
    const cases: { name: string; kind: CaseResult["kind"]; act: () => Promise<void> }[] = [
      { name: "reload: pool change (a server added)", kind: "reload", act: () => ((pools.web = { servers: ["@APP@", secondAddr] }), reloadBoth()) },
      {
        name: "reload: certificate rotation (1)",
        kind: "reload",
        act: () => ((lb.certificates = { www: rotations[0].certs["www.example.com"] }), reloadBoth()),
      },
      { name: "reload: pool change (a server removed)", kind: "reload", act: () => ((pools.web = { servers: [secondAddr] }), reloadBoth()) },
      {
        name: "reload: certificate rotation (2)",
        kind: "reload",
        act: () => ((lb.certificates = { www: rotations[1].certs["www.example.com"] }), reloadBoth()),
      },
      { name: "reload: pool change (back to one server)", kind: "reload", act: () => ((pools.web = { servers: ["@APP@"] }), reloadBoth()) },
      {
        name: "failover: kill -9 of the holder (agent and HAProxy)",
        kind: "failover",
        act: async () => {
          const victim = bed.holder()!;
          await bed.stopAgent(victim, "SIGKILL");
          await bed.stopHaproxy(victim);
        },
      },
    ];
    for (const c of cases) {
      const clients = Promise.all([runClient("new", caFile), runClient("keepalive", caFile)]);
      await sleep(windowMs / 2);
      await c.act();
      const r = await clients;
      results.push({ case: c.name, kind: c.kind, clients: r });
      process.stdout.write(`${c.name}: ${r.map((x) => `${x.mode} ${x.failed}/${x.total} failed (${x.rps}/s)`).join(", ")}\n`);
      await sleep(500);
    }
  } finally {
    await bed.close();
    await new Promise<void>((r) => second.close(() => r()));
    for (const p of [pki, ...rotations]) p.cleanup();
  }

  const reloadFailed = results.filter((r) => r.kind === "reload").reduce((n, r) => n + r.clients.reduce((m, c) => m + c.failed, 0), 0);
  const json = { when: new Date().toISOString(), host: hostname(), rate, windowMs, results, reloadFailed, target: "0 failed requests across the reloads" };
  mkdirSync(values.out!, { recursive: true });
  writeFileSync(join(values.out!, "reload.json"), JSON.stringify(json, null, 2) + "\n");
  const errs = (c: ClientResult) =>
    Object.entries(c.errors)
      .map(([k, v]) => `${k} ×${v}`)
      .join(", ") || "";
  const md = [
    "# Reload benchmark",
    "",
    `\`npm run bench:reload\` on ${json.host}, ${json.when}: two HTTPS clients at ${rate} requests/s each (one new connection per request; keep-alive), ${windowMs} ms per case with the action in the middle. The network test bed: HAProxy replaced with \`-sf\`, the stack's install script, the Reserved IP through the router's NAT.`,
    "",
    "| case | new connections: failed / total | keep-alive: failed / total | errors |",
    "| --- | --- | --- | --- |",
    ...results.map((r) => {
      const [n, k] = r.clients;
      return `| ${r.case} | ${n.failed} / ${n.total} | ${k.failed} / ${k.total} | ${[errs(n) && `new: ${errs(n)}`, errs(k) && `keep-alive: ${errs(k)}`].filter(Boolean).join("; ")} |`;
    }),
    "",
    `Failed requests across the five reloads: **${reloadFailed}** (target: 0).`,
    "",
  ].join("\n");
  writeFileSync(join(values.out!, "reload.md"), md);
  writeFileSync(join(values.out!, "reload.svg"), renderReloadSvg(json));
  process.stdout.write(md);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`bench:reload failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
