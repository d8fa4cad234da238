#!/usr/bin/env node
// The client of the network test bed and the benchmarks: one new TCP connection per request, on a
// fixed schedule (a request every --interval ms whether or not earlier ones have answered), each
// with a --timeout. One JSON line per finished request on stdout:
//   {"seq":0,"at":0,"ok":true,"status":200,"servedBy":"lb-blue-1","ms":1.2}
// `at` is when the request was due, in ms since the client started. Stops on SIGTERM or --count.
// Plain JavaScript (no build step): it runs inside a network namespace with `ip netns exec`.
import http from "node:http";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    interval: { type: "string", default: "50" },
    timeout: { type: "string", default: "1000" },
    count: { type: "string", default: "0" },
  },
});
if (!values.url) {
  process.stderr.write("usage: probe-client.mjs --url URL [--interval MS] [--timeout MS] [--count N]\n");
  process.exit(2);
}
const interval = Number(values.interval);
const timeout = Number(values.timeout);
const count = Number(values.count);
const started = performance.now();
let seq = 0;
let inFlight = 0;
let stopping = false;

function emit(o) {
  process.stdout.write(JSON.stringify(o) + "\n");
}

function fire(n, dueAt) {
  inFlight++;
  const t0 = performance.now();
  let done = false;
  const finish = (o) => {
    if (done) return;
    done = true;
    inFlight--;
    emit({ seq: n, at: Math.round(dueAt), ms: Math.round((performance.now() - t0) * 10) / 10, ...o });
    if (stopping && inFlight === 0) process.exit(0);
  };
  const req = http.get(values.url, { agent: false, timeout, headers: { connection: "close" } }, (res) => {
    res.resume();
    res.on("end", () => finish({ ok: res.statusCode === 200, status: res.statusCode, servedBy: res.headers["x-served-by"] ?? null }));
    res.on("error", (e) => finish({ ok: false, error: e.code ?? e.message }));
  });
  req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
  req.on("error", (e) => finish({ ok: false, error: e.code ?? e.message }));
  // A hard bound as well: a connect that hangs in SYN retries counts as failed after `timeout`.
  setTimeout(() => {
    if (!done) req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" }));
  }, timeout).unref();
}

function tick() {
  if (stopping) return;
  const due = seq * interval;
  fire(seq++, due);
  if (count && seq >= count) {
    stopping = true;
    return;
  }
  const next = started + seq * interval;
  setTimeout(tick, Math.max(0, next - performance.now()));
}

process.on("SIGTERM", () => {
  stopping = true;
  if (inFlight === 0) process.exit(0);
  setTimeout(() => process.exit(0), timeout + 100).unref();
});
tick();
