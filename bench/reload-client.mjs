// One client of bench/reload.ts, run in the client namespace: HTTPS GETs at a fixed rate for a
// fixed time, each on a new connection ("new") or over a keep-alive pool ("keepalive"). Prints one
// JSON summary line: total, failed, failures by error, requests per second achieved.
import https from "node:https";
import { readFileSync } from "node:fs";

const [mode, host, caFile, rateS, durationS] = process.argv.slice(2);
const rate = Number(rateS);
const durationMs = Number(durationS);
const ca = readFileSync(caFile);
const agent = mode === "keepalive" ? new https.Agent({ keepAlive: true, maxSockets: 16 }) : false;
const errors = {};
let total = 0;
let failed = 0;
let done = 0;
const fail = (why) => ((failed += 1), (errors[why] = (errors[why] ?? 0) + 1));
const one = () =>
  new Promise((resolve) => {
    total += 1;
    const req = https.get(
      { host, port: 443, path: "/", servername: "www.example.com", headers: { host: "www.example.com" }, ca, agent, timeout: 2000 },
      (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? null : fail(`http ${res.statusCode}`), resolve()));
        res.on("error", (e) => (fail(e.code ?? e.message), resolve()));
      },
    );
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (e) => (fail(e.code ?? e.message), resolve()));
  }).then(() => (done += 1));
const start = Date.now();
const pending = [];
for (let i = 0; Date.now() - start < durationMs && i < rate * (durationMs / 1000) + 1; i++) {
  const due = start + (i * 1000) / rate;
  const wait = due - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  pending.push(one());
}
await Promise.all(pending);
if (agent) agent.destroy();
process.stdout.write(JSON.stringify({ mode, total, failed, errors, rps: Math.round((total / (Date.now() - start)) * 1000) }) + "\n");
