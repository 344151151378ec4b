// fieldlink dashboard, device detail (loaded after app.js, whose globals it uses): the
// outputs of one device, desired vs reported, set with the admin role; history charts per
// quantity and the device's health over time, from server-side buckets (min/avg/max), kept
// up to date by the /live events. SVG drawn here; nothing from elsewhere.
"use strict";

const detail = { dev: null, outputs: null, range: "hour", charts: new Map(), health: new Map() };
const SVG = "http://www.w3.org/2000/svg";
const CHART_W = 560, CHART_H = 110;

function api(path, opts) {
  return fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, opts || {}));
}

function devPath(rest) { return "api/devices/" + encodeURIComponent(detail.dev) + rest; }

async function selectDevice(id) {
  detail.dev = id;
  detail.outputs = null;
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-dev").textContent = id;
  document.getElementById("control-msg").textContent = "";
  await Promise.all([loadOutputs(), loadCharts()]);
}

document.querySelector("#devices tbody").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-dev]");
  if (tr) selectDevice(tr.dataset.dev);
});

// -- outputs --------------------------------------------------------------------------------

async function loadOutputs() {
  const dev = detail.dev;
  detail.early = [];      // /live events that come while the GET is in flight
  const r = await api(devPath("/outputs"));
  if (dev !== detail.dev) return;
  const o = r.status === 200 ? await r.json() : { desired: {}, reported: {} };
  // an event may be newer than what the GET read: kept unless the GET has a newer ver
  for (const [kind, out] of detail.early) mergeOut(o[kind], out);
  detail.early = [];
  detail.outputs = o;
  renderOutputs();
}

function mergeOut(have, out) {
  for (const [n, rec] of Object.entries(out))
    if (!have[n] || rec.ver >= have[n].ver) have[n] = rec;
}

function onOutputs(kind, m) {
  if (m.dev !== detail.dev) return;
  if (!detail.outputs) {
    if (detail.early && detail.early.length < 1000) detail.early.push([kind, m.out]);
    return;
  }
  mergeOut(detail.outputs[kind], m.out);
  renderOutputs();
}

function fmtOut(x, withWhy) {
  if (!x) return "–";
  let s = (x.v === null || x.v === undefined ? "–" : x.v) + " (ver " + x.ver;
  if (withWhy) s += ", " + x.why + (x.err ? ": " + x.err : "");
  return s + ")" + (x.rule && x.rule.enabled ? " rule on " + x.rule.n : "");
}

// No kind in the protocol: 0/1 values get a switch, anything else a slider (0-1 a duty,
// above 1 an angle).
function isDigital(d, r) {
  const vals = [d && d.v, r && r.v].filter(v => v !== null && v !== undefined);
  return vals.every(v => v === 0 || v === 1);
}

function outputRow(name, d, r) {
  const tr = el("tr");
  tr.dataset.out = name;
  const pending = d && (!r || d.ver > r.ver);
  const refused = r && r.why === "refused";
  tr.className = pending ? "pending" : refused ? "refused" : "";
  tr.append(el("td", name));
  const cell = el("td");
  const shown = d ? d.v : r ? r.v : 0;
  let input;
  if (isDigital(d, r)) {
    input = el("input", null, "switch");
    input.type = "checkbox";
    input.checked = shown === 1;
    input.addEventListener("change", () => setOutput(name, input.checked ? 1 : 0));
  } else {
    input = el("input", null, "slider");
    input.type = "range";
    input.min = 0;
    input.max = shown > 1 ? 180 : 1;
    input.step = shown > 1 ? 1 : 0.01;
    input.value = shown || 0;
    input.addEventListener("change", () => setOutput(name, Number(input.value)));
  }
  input.setAttribute("aria-label", "set " + name);
  cell.append(input);
  tr.append(cell, el("td", fmtOut(d, false), "desired"), el("td", fmtOut(r, true), "reported"),
            el("td", pending ? "pending" : refused ? "refused" : d ? "confirmed" : "local",
               "state"));
  return tr;
}

function renderOutputs() {
  const o = detail.outputs;
  if (!o) return;
  const names = Array.from(new Set(Object.keys(o.desired).concat(Object.keys(o.reported))))
    .sort();
  document.querySelector("#outputs tbody").replaceChildren(
    ...names.map(n => outputRow(n, o.desired[n], o.reported[n])));
  document.getElementById("no-outputs").hidden = names.length > 0;
}

async function setOutput(name, v) {
  const msg = document.getElementById("control-msg");
  let r = null;
  try {
    r = await api(devPath("/outputs/" + encodeURIComponent(name)), {
      method: "PUT", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ v }) });
  } catch (e) { /* unreachable: said below */ }
  if (r && r.status === 200) {
    const rec = await r.json();
    if (detail.outputs) detail.outputs.desired[name] = rec;
    msg.textContent = "";
  } else {
    msg.textContent = !r ? "not set: collector unreachable"
      : r.status === 401 || r.status === 403
        ? "refused: setting an output needs the admin token (log in with it)"
        : "not set: " + r.status + " " + (await r.text());
  }
  renderOutputs();            // a refused change puts the control back where it was
}

handlers.desired = (m) => {
  onOutputs("desired", m);
  for (const [n, rec] of Object.entries(m.out))
    logEvent(m.dev + " " + n + " set to " + rec.v + " (ver " + rec.ver + ") by " + rec.set_by);
};

handlers.reported = (m) => onOutputs("reported", m);

// -- charts ---------------------------------------------------------------------------------

async function loadCharts() {
  const dev = detail.dev, range = detail.range;
  const names = Array.from(device(dev).values.keys()).sort();
  const hist = await Promise.all(names.map(n =>
    api(devPath("/history?n=" + encodeURIComponent(n) + "&range=" + range))
      .then(r => r.status === 200 ? r.json() : null)));
  const health = await api(devPath("/health?range=" + range))
    .then(r => r.status === 200 ? r.json() : null);
  if (dev !== detail.dev || range !== detail.range) return;
  detail.charts.clear();
  detail.health.clear();
  names.forEach((n, i) => { if (hist[i]) detail.charts.set(n, chartData(hist[i], hist[i].buckets)); });
  if (health) for (const [k, rows] of Object.entries(health.series))
    detail.health.set(k, chartData(health, rows));
  drawAll();
}

function chartData(resp, rows) {
  return { start: resp.start, end: resp.end, width: resp.width,
           buckets: rows.map(b => ({ t: b[0], min: b[1], sum: b[2] * b[4], max: b[3], n: b[4] })) };
}

function addPoint(ch, t, v) {
  if (typeof v !== "number" || !isFinite(v) || t < ch.start) return;
  const b0 = ch.start + Math.floor((t - ch.start) / ch.width) * ch.width;
  let b = ch.buckets.length ? ch.buckets[ch.buckets.length - 1] : null;
  if (!b || b.t < b0 - ch.width / 2) {
    b = { t: b0, min: v, sum: 0, max: v, n: 0 };
    ch.buckets.push(b);
  }
  b.min = Math.min(b.min, v); b.max = Math.max(b.max, v); b.sum += v; b.n += 1;
  ch.end = Math.max(ch.end, t);
}

function drawChart(box, title, ch) {
  const fig = el("figure", null, "chart");
  fig.dataset.name = title;
  const n = ch.buckets.reduce((a, b) => a + b.n, 0);
  fig.dataset.n = n;
  const cap = el("figcaption", title + " ");
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + CHART_W + " " + CHART_H);
  svg.setAttribute("width", CHART_W);
  svg.setAttribute("height", CHART_H);
  if (ch.buckets.length) {
    let lo = Math.min(...ch.buckets.map(b => b.min)), hi = Math.max(...ch.buckets.map(b => b.max));
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = t => ((t - ch.start) / Math.max(1, ch.end - ch.start)) * (CHART_W - 4) + 2;
    const y = v => CHART_H - 4 - ((v - lo) / (hi - lo)) * (CHART_H - 8);
    const band = ch.buckets.map(b => x(b.t) + "," + y(b.max))
      .concat(ch.buckets.slice().reverse().map(b => x(b.t) + "," + y(b.min)));
    const poly = document.createElementNS(SVG, "polygon");
    poly.setAttribute("points", band.join(" "));
    poly.setAttribute("class", "band");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", ch.buckets.map(b => x(b.t) + "," + y(b.sum / b.n)).join(" "));
    line.setAttribute("class", "avg");
    svg.append(poly, line);
    const last = ch.buckets[ch.buckets.length - 1];
    cap.append(el("span", "min " + fmtNum(lo) + " · max " + fmtNum(hi) + " · last avg " +
                  fmtNum(last.sum / last.n) + " · " + n + " values", "muted"));
  } else {
    cap.append(el("span", "no values in this range", "muted"));
  }
  fig.append(cap, svg);
  box.append(fig);
}

function fmtNum(v) { return Number.isInteger(v) ? String(v) : v.toFixed(2); }

function drawAll() {
  const charts = document.getElementById("charts"), health = document.getElementById("health");
  charts.replaceChildren();
  health.replaceChildren();
  for (const [n, ch] of Array.from(detail.charts.entries()).sort()) drawChart(charts, n, ch);
  for (const [k, ch] of detail.health) drawChart(health, k, ch);
}

const liveReadings = handlers.readings, liveHealth = handlers.health;
handlers.readings = (m) => {
  liveReadings(m);
  if (m.dev !== detail.dev) return;
  let fresh = false;
  for (const r of m.r) {
    const ch = detail.charts.get(r.n);
    if (ch) addPoint(ch, r.ts || r.received, r.v);
    else fresh = true;
  }
  if (fresh) loadCharts(); else drawAll();
};
handlers.health = (m) => {
  liveHealth(m);
  if (m.dev !== detail.dev) return;
  for (const [k, ch] of detail.health) addPoint(ch, m.time, m.health[k]);
  drawAll();
};

for (const b of document.querySelectorAll("#ranges button")) {
  b.addEventListener("click", () => {
    detail.range = b.dataset.range;
    for (const o of document.querySelectorAll("#ranges button"))
      o.classList.toggle("on", o === b);
    if (detail.dev) loadCharts();
  });
}
