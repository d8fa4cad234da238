// The page of `npm run demo -- --web` (demo/web.ts serves it): plain DOM, no framework, no build step.
// The server pushes the cluster's state four times a second over Server-Sent Events ("update"), with
// the client's samples, the demo's events and the API's requests that this page has not seen yet.
"use strict";

const WINDOW_MS = 60_000; // the chart's span, as the server keeps it
const MAX_LOG = 300; // lines kept in each list

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const clock = (t) => new Date(t).toLocaleTimeString([], { hour12: false }) + "." + String(t % 1000).padStart(3, "0");

let samples = [];
let api = [];
let latest = null;
// The last item of each kind this page has: after a reconnect the server sends its history again.
const seen = { samples: 0, events: 0, api: 0 };
const fresh = (kind, items) => {
  const out = items.filter((x) => x.seq > seen[kind]);
  if (out.length) seen[kind] = out[out.length - 1].seq;
  return out;
};

// ---------------------------------------------------------------- actions
async function act(body) {
  const msg = $("message");
  msg.className = "message";
  msg.textContent = "…";
  try {
    const res = await fetch("/api/actions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const answer = await res.json();
    msg.textContent = answer.ok ? answer.message : answer.error;
    if (!answer.ok) msg.className = "message error";
  } catch (e) {
    msg.textContent = `the demo did not answer: ${e.message}`;
    msg.className = "message error";
  }
}
$("kill-leader").addEventListener("click", () => act({ action: "kill-leader" }));
$("switch-color").addEventListener("click", () => act({ action: "switch-color" }));
$("rolling-upgrade").addEventListener("click", () => act({ action: "rolling-upgrade" }));
// One listener for every node's buttons: the cards are built once and only updated after.
$("nodes").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  const node = b.closest("[data-node]").dataset.node;
  const n = latest?.nodes.find((x) => x.id === node);
  if (!n) return;
  if (b.dataset.act === "haproxy") act({ action: "haproxy", node, up: n.haproxy === "down" });
  else act({ action: "partition", node, cut: !n.partitioned });
});

// ---------------------------------------------------------------- nodes
function card(n) {
  const c = el("article", { class: "node", "data-node": n.id, "data-color": n.color ?? "witness" });
  const head = el("header");
  head.append(el("span", { class: "name" }, n.id), el("span", { class: "role" }));
  const dl = el("dl");
  for (const [k, label] of [
    ["color", "color"],
    ["term", "term"],
    ["health", "health"],
    ["peers", "peers"],
    ["build", "build"],
    ["agent", "agent"],
  ]) {
    dl.append(el("dt", {}, label), el("dd", { class: k }));
  }
  const foot = el("footer");
  if (n.kind === "lb") foot.append(el("button", { type: "button", "data-act": "haproxy" }), el("button", { type: "button", "data-act": "partition" }));
  else foot.append(el("button", { type: "button", "data-act": "partition" }));
  c.append(head, el("p", { class: "ip" }), dl, foot);
  return c;
}

function renderNodes(state) {
  const box = $("nodes");
  for (const n of state.nodes) {
    let c = box.querySelector(`[data-node="${n.id}"]`);
    if (!c) box.append((c = card(n)));
    const down = n.agent !== "running";
    const role = down ? (n.agent === "restarting" ? "restarting" : "stopped") : (n.role ?? "…");
    c.classList.toggle("holder", n.holdsIp);
    c.classList.toggle("down", down);
    c.dataset.role = role;
    const r = c.querySelector(".role");
    r.textContent = role;
    r.className = `role ${down ? "down" : role}`;
    c.querySelector(".ip").textContent = n.holdsIp ? `holds ${state.cluster.reservedIp}` : "";
    c.querySelector(".color").textContent = n.color ?? "witness (votes, never leads)";
    c.querySelector(".term").textContent = n.term ?? "–";
    const health = c.querySelector(".health");
    if (n.kind === "witness") health.textContent = "–";
    else health.textContent = `${n.healthy === null ? "–" : n.healthy ? "up" : "DOWN"} (HAProxy ${n.haproxy})`;
    health.classList.toggle("bad", n.healthy === false || n.haproxy === "down");
    const peers = c.querySelector(".peers");
    peers.textContent = n.partitioned ? "PARTITIONED" : n.majorityReachable === null ? "–" : n.majorityReachable ? "majority reachable" : "no majority";
    peers.classList.toggle("bad", n.partitioned || n.majorityReachable === false);
    c.querySelector(".build").textContent = n.build ?? "–";
    c.querySelector(".build").classList.add("mono");
    c.querySelector(".agent").textContent = n.pid ? `fipd pid ${n.pid}` : n.agent;
    const hb = c.querySelector('[data-act="haproxy"]');
    if (hb) hb.textContent = n.haproxy === "down" ? "start HAProxy" : "stop HAProxy";
    c.querySelector('[data-act="partition"]').textContent = n.partitioned ? "heal" : "partition";
  }
}

// ---------------------------------------------------------------- the chart (SVG)
const SVG = "http://www.w3.org/2000/svg";
const W = 1000;
const LEFT = 92;
const LANE = 30;
const TOP = 14;
const svg = (tag, attrs, text) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const SHADES = { blue: ["#2f6fdf", "#7aa3ee"], green: ["#1f9d55", "#6cc795"] };

function renderChart(state) {
  const chart = $("chart");
  const lbs = state.nodes.filter((n) => n.kind === "lb");
  const lanes = [...lbs.map((n) => n.id), "failed"];
  const height = TOP + lanes.length * LANE + 26;
  chart.setAttribute("viewBox", `0 0 ${W} ${height}`);
  const now = state.now;
  const x = (t) => LEFT + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (W - LEFT - 8);
  const fill = {};
  const perColor = {};
  for (const n of lbs) {
    const i = (perColor[n.color] = (perColor[n.color] ?? -1) + 1);
    fill[n.id] = SHADES[n.color][i % 2];
  }
  fill.failed = "#d64545";
  const parts = [];
  lanes.forEach((lane, i) => {
    const y = TOP + i * LANE;
    parts.push(svg("rect", { x: LEFT, y, width: W - LEFT - 8, height: LANE - 6, fill: i % 2 ? "#f7f8fa" : "#fbfcfd" }));
    parts.push(svg("text", { x: LEFT - 8, y: y + LANE / 2, "text-anchor": "end", class: "lane-label", style: `fill: ${fill[lane]}` }, lane));
  });
  // Each request is a tick in the lane of the node that answered it, or in "failed".
  const width = Math.max(1.5, ((W - LEFT) * 50) / WINDOW_MS);
  for (const s of samples) {
    const lane = lanes.indexOf(s.by ?? "failed");
    if (lane < 0 || s.t < now - WINDOW_MS) continue;
    const by = s.by ?? "failed";
    const tick = svg("rect", { class: "tick", "data-by": by, x: x(s.t), y: TOP + lane * LANE + 3, width, height: LANE - 12, fill: fill[by] });
    if (s.error) tick.append(svg("title", {}, s.error));
    parts.push(tick);
  }
  // Assigns of the Reserved IP (POSTs to its actions), as dashed lines across the lanes.
  let labelledAt = -Infinity; // one label where assigns crowd together
  for (const a of api) {
    if (a.method !== "POST" || a.t < now - WINDOW_MS) continue;
    const ax = x(a.t);
    parts.push(svg("line", { x1: ax, x2: ax, y1: TOP - 4, y2: TOP + lanes.length * LANE - 6, stroke: "#d98a00", "stroke-dasharray": "4 3" }));
    if (ax - labelledAt < 90) continue;
    labelledAt = ax;
    parts.push(svg("text", { x: Math.min(ax + 3, W - 90), y: TOP - 4 }, `assign (${a.status})`));
  }
  for (let s = 0; s <= WINDOW_MS / 1000; s += 10) {
    const tx = x(now - WINDOW_MS + s * 1000);
    const last = s === WINDOW_MS / 1000;
    parts.push(svg("text", { x: tx, y: height - 6, "text-anchor": last ? "end" : "middle" }, last ? "now" : `−${WINDOW_MS / 1000 - s} s`));
  }
  chart.replaceChildren(...parts);

  // The client's numbers over the window: requests, failures and the longest run of failures.
  const recent = samples.filter((s) => s.t >= now - WINDOW_MS).sort((a, b) => a.t - b.t);
  let longest = 0;
  let runStart = null;
  for (const s of recent) {
    if (s.by === null) runStart ??= s.t;
    else if (runStart !== null) {
      longest = Math.max(longest, s.t - runStart);
      runStart = null;
    }
  }
  if (runStart !== null) longest = Math.max(longest, now - runStart);
  const failed = recent.filter((s) => s.by === null);
  const last = failed[failed.length - 1];
  $("client-stats").textContent =
    `last 60 s: ${recent.length} requests, ${failed.length} failed` + (failed.length ? `; longest outage ${longest} ms; last failure: ${last.error}` : "");
}

// ---------------------------------------------------------------- the lists
function prepend(list, items) {
  for (const item of items) list.prepend(item);
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

function update(u) {
  latest = u;
  u.samples = fresh("samples", u.samples);
  u.events = fresh("events", u.events);
  u.api = fresh("api", u.api);
  samples = samples.concat(u.samples).filter((s) => s.t >= u.now - WINDOW_MS);
  api = api.concat(u.api).slice(-MAX_LOG);
  const c = u.cluster;
  $("reserved-ip").textContent = c.reservedIp;
  $("holder").textContent = c.holder ?? "no droplet";
  $("assigning").hidden = !c.assignInProgress;
  $("leader").textContent = c.leader ?? "none";
  $("color").textContent = c.colorInForce ?? "…";
  $("pending").textContent = c.pendingSwitch ? `(switch to ${c.requestedColor} pending: ${c.pendingSwitch})` : "";
  $("build").textContent = c.build;
  $("switch-color").textContent = `switch to ${c.requestedColor === "blue" ? "green" : "blue"}`;
  $("busy").textContent = c.busy ? `${c.busy}…` : "";
  for (const id of ["switch-color", "rolling-upgrade"]) $(id).disabled = c.busy !== null;
  renderNodes(u);
  renderChart(u);
  prepend(
    $("events"),
    u.events.map((e) => {
      const li = el("li", { class: e.level });
      li.append(el("time", {}, clock(e.t)), e.text);
      return li;
    }),
  );
  prepend(
    $("api"),
    u.api.map((a) => {
      const li = el("li", { class: a.method === "POST" ? "assign" : "" });
      li.append(el("time", {}, clock(a.t)), `${a.method} ${a.path} → ${a.status}`);
      return li;
    }),
  );
  $("api-stats").textContent = `${c.apiRequests} requests, ${c.assigns} assigns (an assign takes ${c.actionDelayMs} ms)`;
}

const events = new EventSource("/events");
events.addEventListener("update", (m) => {
  $("connection").textContent = "live";
  $("connection").className = "connection";
  update(JSON.parse(m.data));
});
events.addEventListener("error", () => {
  $("connection").textContent = "connection to the demo lost; retrying…";
  $("connection").className = "connection lost";
});
