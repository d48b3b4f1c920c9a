// The controller's live view: the topology drawn with sigma (WebGL), node states and link
// loads pushed by the controller every second (server-sent events), a panel for the selected
// link or node, and the flows. Built with `npm run build` into crates/controller/assets/app.js.

import Graph from "graphology";
import Sigma from "sigma";
import { circular } from "graphology-layout";
import forceAtlas2 from "graphology-layout-forceatlas2";

const $ = (id) => document.getElementById(id);
const NODE_COLOURS = { p: "#9aa0a6", c: "#4285f4", r: "#34a853", f: "#ea4335" };
const NODE_STATES = { p: "connecting", c: "connected", r: "ready", f: "failed" };
const DOWN = "#202124";
const DROPPING = "#a142f4";
const HIGHLIGHT = "#1a73e8";

let topo = null;
let graph = null;
let renderer = null;
let edgeKeys = [];
let frame = null;
let previousDrops = null;
let dropping = [];
let selected = null;
let highlighted = new Set();
// What the last change from the panel said, shown under its form.
let editMessage = "";
let token = sessionStorage.getItem("nextmini-token");
const stats = { updates: 0, lastUpdateMs: 0, meanUpdateMs: 0, renders: 0, lastRenderMs: 0 };

async function api(path, body) {
  const options = { headers: {} };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
    if (token) options.headers.authorization = "Bearer " + token;
  }
  const response = await fetch(path, options);
  const text = await response.text();
  if (!response.ok) throw new Error(text || response.statusText);
  return text ? JSON.parse(text) : null;
}

function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// Green to yellow to red as a link fills.
function loadColour(load) {
  if (load <= 0.01) return "#c7d0d8";
  const l = Math.min(load, 1);
  const mix = (a, b, t) => Math.round(a + (b - a) * t);
  const [from, to, t] = l < 0.5 ? [[52, 168, 83], [251, 188, 4], l / 0.5] : [[251, 188, 4], [234, 67, 53], (l - 0.5) / 0.5];
  return `rgb(${mix(from[0], to[0], t)},${mix(from[1], to[1], t)},${mix(from[2], to[2], t)})`;
}

function formatRate(bps) {
  if (bps >= 1e9) return (bps / 1e9).toFixed(2) + " Gbit/s";
  if (bps >= 1e6) return (bps / 1e6).toFixed(2) + " Mbit/s";
  if (bps >= 1e3) return (bps / 1e3).toFixed(1) + " kbit/s";
  return bps + " bit/s";
}

function build(t) {
  const g = new Graph({ type: "undirected" });
  // Small enough on large graphs that the links (and their load) show between the nodes.
  const size = Math.max(0.8, Math.min(6, 600 / t.nodes));
  for (let i = 1; i <= t.nodes; i++) {
    g.addNode(String(i), { label: (t.names && t.names[i - 1]) || String(i), size, color: NODE_COLOURS.p, x: 0, y: 0 });
  }
  edgeKeys = t.edges.map(([a, b]) => {
    const key = `${a}-${b}`;
    g.addEdgeWithKey(key, String(a), String(b), { size: 1, color: "#c7d0d8" });
    return key;
  });
  if (t.coords) {
    t.coords.forEach(([lon, lat], i) => g.mergeNodeAttributes(String(i + 1), { x: lon, y: lat }));
  } else {
    circular.assign(g);
    // Rings and lines read best as a circle; other shapes get a force layout when small
    // enough to settle quickly.
    if (t.nodes <= 3000 && !/^(ring|line)/.test(t.label)) {
      const settings = forceAtlas2.inferSettings(g);
      forceAtlas2.assign(g, { iterations: t.nodes > 1000 ? 60 : 200, settings: { ...settings, barnesHutOptimize: t.nodes > 300 } });
    }
  }
  return g;
}

function edgeIndex(a, b) {
  const key = `${Math.min(a, b)}-${Math.max(a, b)}`;
  return edgeKeys.indexOf(key);
}

function applyFrame(f) {
  const started = performance.now();
  frame = f;
  const drops = f.drops;
  dropping = edgeKeys.map((_, i) => previousDrops !== null && drops[2 * i] + drops[2 * i + 1] > previousDrops[2 * i] + previousDrops[2 * i + 1]);
  previousDrops = drops;
  let maxBps = 1;
  for (const b of f.bps) if (b > maxBps) maxBps = b;
  graph.updateEachNodeAttributes((node, attrs) => {
    attrs.color = NODE_COLOURS[f.nodes[Number(node) - 1]] || NODE_COLOURS.p;
    return attrs;
  }, { attributes: ["color"] });
  const index = new Map(edgeKeys.map((k, i) => [k, i]));
  graph.updateEachEdgeAttributes((key, attrs) => {
    const i = index.get(key);
    const up = f.links[i] === "1";
    const shaped = Math.max(f.utilization[2 * i], f.utilization[2 * i + 1]);
    const load = shaped > 0 ? shaped : Math.max(f.bps[2 * i], f.bps[2 * i + 1]) / maxBps;
    attrs.state = up ? "up" : "down";
    attrs.load = load;
    if (highlighted.has(key)) {
      attrs.color = HIGHLIGHT;
      attrs.size = 4;
    } else if (!up) {
      attrs.color = DOWN;
      attrs.size = 1;
    } else if (dropping[i]) {
      attrs.color = DROPPING;
      attrs.size = 2 + 3 * Math.min(load, 1);
    } else {
      attrs.color = loadColour(load);
      attrs.size = 1 + 3 * Math.min(load, 1);
    }
    return attrs;
  }, { attributes: ["color", "size", "state", "load"] });
  const ready = [...f.nodes].filter((c) => c === "r").length;
  const failed = [...f.nodes].filter((c) => c === "f").length;
  const up = [...f.links].filter((c) => c === "1").length;
  $("counts").textContent = `${topo.label}: ${topo.nodes} nodes (${ready} ready, ${failed} failed), ${edgeKeys.length} links (${up} up), ${f.phase}`;
  const took = performance.now() - started;
  stats.updates += 1;
  stats.lastUpdateMs = took;
  stats.meanUpdateMs += (took - stats.meanUpdateMs) / stats.updates;
  $("perf").textContent = `update ${took.toFixed(1)} ms, render ${stats.lastRenderMs.toFixed(1)} ms`;
  if (selected && selected.kind === "link") refreshLink();
}

// The panel ------------------------------------------------------------------------------

function directionRow(from, to, d, i) {
  const p = d.params;
  const c = d.counters;
  const util = frame ? frame.utilization[i] : 0;
  const bps = frame ? frame.bps[i] : 0;
  return `<tr><td>${from}→${to}</td><td>${p.rate || "unshaped"}</td><td>${p.delay}</td><td>${p.loss}</td>` +
    `<td>${formatRate(bps)}${util > 0 ? ` (${(util * 100).toFixed(0)}%)` : ""}</td>` +
    `<td>${c.dropped_down + c.dropped_loss + c.dropped_queue + c.dropped_red}</td><td>${c.queue_packets}</td></tr>`;
}

async function refreshLink() {
  const { a, b } = selected;
  let row;
  try {
    row = await api(`/api/links/${a}/${b}`);
  } catch (e) {
    $("panel").innerHTML = `<p class="error">${escape(e.message)}</p>`;
    return;
  }
  if (!selected || selected.kind !== "link" || selected.a !== a || selected.b !== b) return;
  const i = edgeIndex(a, b);
  const state = frame && frame.links[i] === "1" ? "up" : "down";
  const editable = topo.token_required;
  const keep = document.activeElement && document.activeElement.closest && document.activeElement.closest("form.edit");
  if (keep) return; // don't redraw under the user's typing
  $("panel").innerHTML =
    `<h3>Link ${row.a}–${row.b} <span id="link-state" class="state-${state}">${state}</span></h3>` +
    `<table><tr><th></th><th>rate</th><th>delay</th><th>loss</th><th>now</th><th>drops</th><th>queue</th></tr>` +
    directionRow(row.a, row.b, row.a_to_b, 2 * i) + directionRow(row.b, row.a, row.b_to_a, 2 * i + 1) + `</table>` +
    `<canvas class="chart" id="chart" width="340" height="120"></canvas>` +
    (editable
      ? `<form class="edit" id="edit">` +
        `<label>delay</label><input name="delay" placeholder="${row.a_to_b.params.delay}">` +
        `<label>rate</label><input name="rate" placeholder="${row.a_to_b.params.rate || "unshaped"}">` +
        `<label>loss</label><input name="loss" placeholder="${row.a_to_b.params.loss}">` +
        (token ? "" : `<label>token</label><input name="token" type="password" placeholder="from run.json">`) +
        `<span></span><span><button type="submit" id="apply">Apply</button> <button type="button" id="take-down">Down</button> <button type="button" id="bring-up">Up</button></span>` +
        `</form><p id="edit-result">${editMessage}</p>`
      : `<p class="hint">Read-only: start the experiment with <code>--token</code> to change links here.</p>`);
  if (editable) {
    $("edit").addEventListener("submit", (e) => {
      e.preventDefault();
      const form = new FormData(e.target);
      const change = {};
      for (const k of ["delay", "rate", "loss"]) if (form.get(k)) change[k] = form.get(k);
      applyChange(form, change);
    });
    $("take-down").addEventListener("click", () => applyChange(new FormData($("edit")), { up: false }));
    $("bring-up").addEventListener("click", () => applyChange(new FormData($("edit")), { up: true }));
  }
  drawChart(a, b);
}

async function applyChange(form, change) {
  if (form.get("token")) {
    token = form.get("token");
    sessionStorage.setItem("nextmini-token", token);
  }
  const { a, b } = selected;
  try {
    const params = await api(`/api/links/${a}/${b}`, change);
    editMessage = escape(`applied: ${params.rate || "unshaped"}, ${params.delay}, loss ${params.loss}${params.up ? "" : ", down"}`);
  } catch (e) {
    editMessage = `<span class="error">${escape(e.message)}</span>`;
  }
  document.activeElement.blur();
  refreshLink();
}

async function drawChart(a, b) {
  const since = (Date.now() - 120000) * 1e6;
  let points;
  try {
    points = await api(`/api/metrics/links?src=${a}&dst=${b}&since_ns=${since}`);
  } catch (e) {
    return;
  }
  const canvas = $("chart");
  if (!canvas) return;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!points.length) {
    ctx.fillStyle = "#5f6368";
    ctx.fillText("no samples yet", 10, 20);
    return;
  }
  const t0 = points[0].time_ns;
  const t1 = Math.max(points[points.length - 1].time_ns, t0 + 1);
  const series = {};
  const previous = {};
  for (const p of points) {
    const k = `${p.src}→${p.dst}`;
    const prev = previous[k];
    previous[k] = p.time_ns;
    if (prev === undefined) continue;
    (series[k] = series[k] || []).push({ t: p.time_ns, bps: (p.bytes * 8e9) / (p.time_ns - prev), q: p.queue_packets, d: p.dropped });
  }
  let max = 1;
  for (const s of Object.values(series)) for (const p of s) max = Math.max(max, p.bps);
  const x = (t) => 30 + ((t - t0) / (t1 - t0)) * (canvas.width - 40);
  const y = (v) => canvas.height - 15 - (v / max) * (canvas.height - 30);
  const colours = ["#1a73e8", "#e37400"];
  Object.entries(series).forEach(([k, s], n) => {
    ctx.strokeStyle = colours[n % 2];
    ctx.beginPath();
    s.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.bps)) : ctx.moveTo(x(p.t), y(p.bps))));
    ctx.stroke();
    ctx.fillStyle = colours[n % 2];
    ctx.fillText(k, 35 + n * 60, 12);
    for (const p of s) if (p.d > 0) { ctx.fillStyle = DROPPING; ctx.fillRect(x(p.t) - 1, canvas.height - 14, 3, 4); }
  });
  ctx.fillStyle = "#5f6368";
  ctx.fillText(formatRate(Math.round(max)), 2, 22);
  ctx.fillText("0", 2, canvas.height - 15);
}

async function showNode(id) {
  const code = frame ? frame.nodes[id - 1] : "p";
  let routes = null;
  let flows = [];
  try {
    routes = await api(`/api/nodes/${id}/routes`);
  } catch (e) {
    routes = null;
  }
  try {
    flows = (await api("/api/flows")).filter((f) => f.src === id || f.dst === id);
  } catch (e) {
    flows = [];
  }
  const table = routes
    ? `<table><tr><th>destinations</th><th>next hops</th></tr>` +
      routes.routes.map((r) => `<tr><td>${r.first === r.last ? r.first : `${r.first}–${r.last}`}</td><td>${r.next_hops.join(", ")}</td></tr>`).join("") +
      routes.pinned.map((p) => `<tr><td>${p.src}→${p.dst}${p.flow !== null && p.flow !== undefined ? " (one flow)" : ""} pinned</td><td>${p.next_hops.join(", ")}</td></tr>`).join("") +
      `</table>`
    : `<p class="hint">no routes</p>`;
  $("panel").innerHTML =
    `<h3>Node ${id} <span id="node-state">${NODE_STATES[code]}</span></h3>` +
    `<h3>Routes</h3>${table}<h3>Flows</h3>` +
    (flows.length ? `<table>${flows.map((f) => `<tr><td>${f.id}</td><td>${f.src}→${f.dst}</td><td>${f.state}</td><td>${f.fct_seconds ? f.fct_seconds.toFixed(3) + " s" : ""}</td></tr>`).join("")}</table>` : `<p class="hint">none</p>`);
}

async function highlightFlow(id) {
  const f = (await api("/api/flows")).find((x) => x.id === id);
  if (!f) throw new Error(`no flow ${id}`);
  const path = await api(`/api/routes/path?src=${f.src}&dst=${f.dst}&flow=${id}`);
  const edges = path.path ? path.path.slice(1).map((n, i) => [path.path[i], n]) : path.edges;
  highlighted = new Set(edges.map(([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`));
  if (frame) applyFrame(frame);
  for (const row of document.querySelectorAll("tr.flow")) row.classList.toggle("on", Number(row.dataset.id) === id);
  return [...highlighted];
}

async function refreshFlows() {
  let flows;
  try {
    flows = await api("/api/flows");
  } catch (e) {
    return;
  }
  const shown = flows.slice(-200).reverse();
  $("flow-table").innerHTML = shown.length
    ? `<table><tr><th>id</th><th>path</th><th>state</th><th>fct</th><th>throughput</th></tr>` +
      shown.map((f) => `<tr class="flow" data-id="${f.id}"><td>${f.id}</td><td>${f.src}→${f.dst}</td><td>${f.state}</td>` +
        `<td>${f.fct_seconds ? f.fct_seconds.toFixed(3) + " s" : ""}</td><td>${f.throughput_bps ? formatRate(Math.round(f.throughput_bps)) : ""}</td></tr>`).join("") +
      `</table>`
    : `<p class="hint">No generated flows.</p>`;
  for (const row of document.querySelectorAll("tr.flow")) {
    row.addEventListener("click", () => highlightFlow(Number(row.dataset.id)));
  }
}

function select(text) {
  const t = String(text).trim();
  let m;
  if ((m = t.match(/^(\d+)\s*-\s*(\d+)$/))) {
    const a = Number(m[1]);
    const b = Number(m[2]);
    if (edgeIndex(a, b) < 0) throw new Error(`no link ${a}-${b}`);
    selected = { kind: "link", a: Math.min(a, b), b: Math.max(a, b) };
    editMessage = "";
    return refreshLink();
  }
  if ((m = t.match(/^flow\s+(\d+)$/))) return highlightFlow(Number(m[1]));
  if ((m = t.match(/^(\d+)$/)) && Number(m[1]) >= 1 && Number(m[1]) <= topo.nodes) {
    selected = { kind: "node", id: Number(m[1]) };
    return showNode(selected.id);
  }
  throw new Error(`find what? "${t}"`);
}

// Start ----------------------------------------------------------------------------------

async function start() {
  topo = await api("/api/topology");
  graph = build(topo);
  renderer = new Sigma(graph, $("graph"), {
    enableEdgeEvents: true,
    renderLabels: topo.nodes <= 300,
    labelRenderedSizeThreshold: 8,
    defaultEdgeType: "line",
  });
  let renderStart = 0;
  renderer.on("beforeRender", () => (renderStart = performance.now()));
  renderer.on("afterRender", () => {
    stats.renders += 1;
    stats.lastRenderMs = performance.now() - renderStart;
  });
  renderer.on("clickNode", ({ node }) => select(node));
  renderer.on("clickEdge", ({ edge }) => select(edge));
  $("find").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    Promise.resolve()
      .then(() => select(e.target.value))
      .catch((err) => ($("panel").innerHTML = `<p class="error">${escape(err.message)}</p>`));
  });
  $("title").textContent = `nextmini — ${topo.label}`;
  const events = new EventSource("/api/events");
  events.onmessage = (m) => applyFrame(JSON.parse(m.data));
  refreshFlows();
  setInterval(refreshFlows, 2000);
}

// What tests and benchmarks read: counts, states, timings; and a frame-rate probe that
// keeps the camera moving so that every frame is drawn.
window.nextmini = {
  stats,
  get ready() { return frame !== null; },
  order: () => graph.order,
  size: () => graph.size,
  linkState: (a, b) => graph.getEdgeAttribute(`${Math.min(a, b)}-${Math.max(a, b)}`, "state"),
  nodeColour: (id) => graph.getNodeAttribute(String(id), "color"),
  highlighted: () => [...highlighted],
  select: (text) => Promise.resolve(select(text)),
  // Frames per second with the whole graph drawn again every frame (the camera turning),
  // and the mean time the drawing took in JavaScript.
  measureFps: (ms) =>
    new Promise((resolve) => {
      const camera = renderer.getCamera();
      let frames = 0;
      let drawing = 0;
      const startedAt = performance.now();
      const turn = () => {
        const t = performance.now() - startedAt;
        if (t >= ms) {
          camera.setState({ angle: 0 });
          resolve({ fps: (frames * 1000) / t, drawMs: drawing / Math.max(frames, 1) });
          return;
        }
        camera.setState({ angle: t / 1000 });
        const before = performance.now();
        renderer.refresh();
        drawing += performance.now() - before;
        frames += 1;
        requestAnimationFrame(turn);
      };
      requestAnimationFrame(turn);
    }),
};

start().catch((e) => {
  document.body.insertAdjacentHTML("afterbegin", `<p class="error">${escape(e.message)}</p>`);
});
