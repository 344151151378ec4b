// fieldlink dashboard: logs in with a token typed into the page (exchanged at /api/session for an
// HttpOnly session cookie; the token is kept nowhere), then keeps a WebSocket to the read-only
// /live feed and renders devices, their newest readings, acks, drops/gaps and health.
// Plain JS, no build step.
"use strict";

const FEED_MAX = 100;     // rows kept in the readings table
const EVENTS_MAX = 200;   // lines kept in the event list
const state = { devices: new Map(), readings: 0 };
let retryMs = 500;        // reconnect backoff, doubled up to 10 s, reset on a snapshot

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);  // never innerHTML
  if (cls) e.className = cls;
  return e;
}

function fmtTime(unix) {
  if (unix === null || unix === undefined) return "–";
  return new Date(unix * 1000).toISOString().substring(11, 19) + "Z";
}

function fmtUptime(s) {
  if (s === null || s === undefined) return "–";
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}

function fmtValue(r) {
  if (r.v === null || r.v === undefined) return "— (" + (r.e || "missing") + ")";
  const v = typeof r.v === "number" && !Number.isInteger(r.v) ? r.v.toFixed(2) : r.v;
  return v + (r.u ? " " + r.u : "");
}

function device(id) {
  let d = state.devices.get(id);
  if (!d) {
    d = { device: id, ack: 0, readings: 0, last_seq: 0, dropped_gaps: 0, gaps: 0,
          hello: null, health: null, connected: false, values: new Map() };
    state.devices.set(id, d);
  }
  return d;
}

// The device table shows one page of the (filtered) devices; an event redraws only its own
// device's row, at most once per animation frame, so 10,000 devices cost what 50 do.
const PAGE = 50;
const view = { filter: "", page: 0, ids: null, dirty: new Set(), all: false, scheduled: false };

// A duty-cycled device that said `sleep` is asleep until its wake time, not offline.
function linkCell(d) {
  if (d.connected) return el("td", "online", "link-on");
  if (d.sleeping_until)
    return el("td", (Date.now() / 1000 > d.sleeping_until + 60 ? "overdue since " :
                     "sleeping until ") + fmtTime(d.sleeping_until), "link-sleep");
  return el("td", "offline", "link-off");
}

function deviceRow(d) {
  const h = d.health || {}, hi = d.hello || {};
  const tr = el("tr");
  tr.dataset.dev = d.device;
  tr.append(el("td", d.device));
  tr.append(linkCell(d));
  tr.append(el("td", hi.fw ? hi.fw + " / " + hi.board : "–"));
  tr.append(el("td", hi.boot !== undefined ? hi.boot : "–", "num"));
  tr.append(el("td", d.ack, "num ack"));
  tr.append(el("td", d.readings, "num stored"));
  const dropped = Math.max(d.dropped_gaps || 0, h.dropped || 0, hi.dropped || 0);
  tr.append(el("td", dropped, "num" + (dropped ? " warn" : "")));
  tr.append(el("td", d.gaps, "num"));
  // readings the board sampled but had no heap to keep (no seq: in no gap) show here
  const skipped = h.skipped || 0;
  tr.append(el("td", h.heap_free !== undefined ? h.heap_free + " / " + h.heap_min +
               (skipped ? " (" + skipped + " readings skipped)" : "") : "–",
               "num heap" + (skipped ? " warn" : "")));
  tr.append(el("td", h.rssi !== undefined && h.rssi !== null ? h.rssi + " dBm" : "–", "num"));
  tr.append(el("td", fmtUptime(h.uptime_s), "num"));
  tr.append(el("td", h.reconnects !== undefined ? h.reconnects : "–", "num"));
  tr.append(el("td", h.held !== undefined ? h.held : "–", "num"));
  const vals = el("td", null, "values");
  for (const [name, r] of Array.from(d.values.entries()).sort()) {
    const s = el("span", name + " " + fmtValue(r));
    s.dataset.name = name;
    vals.append(s);
  }
  tr.append(vals);
  return tr;
}

// Called after every event: `id` is the device it changed, or nothing for "everything".
function renderDevices(id) {
  if (id === undefined) view.all = true;
  else view.dirty.add(id);
  if (!view.scheduled) {
    view.scheduled = true;
    requestAnimationFrame(drawDevices);
  }
}

function shownIds() {
  if (view.ids === null) {
    const f = view.filter;
    view.ids = Array.from(state.devices.keys()).filter(id => !f || id.toLowerCase().includes(f))
      .sort();
  }
  return view.ids;
}

function drawDevices() {
  view.scheduled = false;
  const body = document.querySelector("#devices tbody");
  const newDevice = Array.from(view.dirty).some(id => !body.querySelector(
    'tr[data-dev="' + CSS.escape(id) + '"]') && (!view.filter || id.toLowerCase().includes(view.filter)));
  if (view.all || newDevice) view.ids = null;
  const ids = shownIds();
  const pages = Math.max(1, Math.ceil(ids.length / PAGE));
  view.page = Math.min(view.page, pages - 1);
  const onPage = ids.slice(view.page * PAGE, (view.page + 1) * PAGE);
  if (view.all || newDevice) {
    body.replaceChildren(...onPage.map(id => deviceRow(state.devices.get(id))));
  } else {
    for (const id of view.dirty) {
      const tr = body.querySelector('tr[data-dev="' + CSS.escape(id) + '"]');
      if (tr) tr.replaceWith(deviceRow(state.devices.get(id)));
    }
  }
  view.dirty.clear();
  view.all = false;
  document.getElementById("no-devices").hidden = state.devices.size > 0;
  document.getElementById("page").textContent = ids.length > PAGE ?
    "page " + (view.page + 1) + " of " + pages + " (" + ids.length + " shown)" :
    ids.length + " shown";
  document.getElementById("prev").disabled = view.page === 0;
  document.getElementById("next").disabled = view.page >= pages - 1;
  let online = 0;
  for (const d of state.devices.values()) if (d.connected) online++;
  document.getElementById("counts").textContent =
    state.devices.size + " device(s), " + online + " online, " + state.readings +
    " readings seen live";
}

document.getElementById("search").addEventListener("input", (ev) => {
  view.filter = ev.target.value.trim().toLowerCase();
  view.page = 0;
  renderDevices();
});
document.getElementById("prev").addEventListener("click", () => { view.page--; renderDevices(); });
document.getElementById("next").addEventListener("click", () => { view.page++; renderDevices(); });

function addFeedRow(dev, r, fresh) {
  const body = document.querySelector("#feed tbody");
  const tr = el("tr", null, fresh ? "new" : "");
  tr.dataset.dev = dev;
  tr.dataset.seq = r.q;
  tr.append(el("td", fmtTime(r.received)), el("td", dev), el("td", r.q, "num"),
            el("td", r.n), el("td", fmtValue(r), "num"),
            el("td", r.ts ? fmtTime(r.ts) : "up " + (r.up / 1000).toFixed(1) + "s"));
  body.prepend(tr);
  while (body.children.length > FEED_MAX) body.lastElementChild.remove();
}

function logEvent(text, cls) {
  const ul = document.getElementById("events");
  const li = el("li", new Date().toISOString().substring(11, 19) + "Z  " + text, cls);
  ul.prepend(li);
  while (ul.children.length > EVENTS_MAX) ul.lastElementChild.remove();
}

function onSnapshot(m) {
  state.devices.clear();
  document.querySelector("#feed tbody").replaceChildren();
  const rows = [];
  for (const s of m.devices) {
    const d = device(s.device);
    Object.assign(d, s, { values: new Map() });
    for (const r of (s.latest || []).slice().reverse()) {   // oldest first
      d.values.set(r.n, r);
      rows.push([s.device, r]);
    }
  }
  rows.sort((a, b) => a[1].received - b[1].received);
  for (const [dev, r] of rows) addFeedRow(dev, r, false);
  renderDevices();
}

const handlers = {
  snapshot: onSnapshot,
  sleeping(m) {
    device(m.dev).sleeping_until = m.until;
    logEvent(m.dev + " sleeping until " + fmtTime(m.until));
  },
  connected(m) {
    const d = device(m.dev);
    d.connected = true; d.sleeping_until = null;
    logEvent(m.dev + " connected from " + (m.peer || "?"));
  },
  disconnected(m) {
    const d = device(m.dev);
    if (!m.superseded) d.connected = false;
    logEvent(m.dev + " disconnected: " + m.why + (m.superseded ? " (superseded)" : ""),
             m.superseded ? "" : "bad");
  },
  hello(m) {
    const d = device(m.dev);
    const was = d.hello && d.hello.fw;
    d.hello = m.hello; d.ack = m.ack;
    logEvent(m.dev + " hello: boot " + m.hello.boot + ", next " + m.hello.next + ", holds " +
             m.hello.held + ", ack " + m.ack +
             (was && was !== m.hello.fw ? ", firmware " + was + " -> " + m.hello.fw : ""));
  },
  ota(m) {   // a firmware update's step (docs/ota.md)
    logEvent(m.dev + " firmware " + m.version + ": " + m.state +
             (m.reason ? " (" + m.reason + ")" : ""));
  },
  readings(m) {
    const d = device(m.dev);
    d.ack = m.ack;
    d.readings += m.r.length;
    state.readings += m.r.length;
    for (const r of m.r) {
      d.last_seq = Math.max(d.last_seq, r.q);
      d.values.set(r.n, r);
      addFeedRow(m.dev, r, true);
    }
  },
  ack(m) { device(m.dev).ack = m.ack; },
  gap(m) {
    const d = device(m.dev);
    d.ack = m.ack; d.gaps += 1;
    // the store's total (a gap resent wider is not counted twice); older servers: the range
    if (m.dropped !== undefined) d.dropped_gaps = m.dropped;
    else if (m.why === "dropped") d.dropped_gaps += m.to - m.from + 1;
    logEvent(m.dev + " gap " + m.from + ".." + m.to + " (" + m.why +
             (m.reason ? ": " + m.reason : "") + ")", "gap");
  },
  epoch(m) {
    // The device's persistent state was wiped (e.g. reflashed): its numbering restarted.
    logEvent(m.dev + " new epoch " + m.epoch + " (was " + (m.previous || "none") +
             "): device seq N stored as N+" + m.offset, "gap");
  },
  health(m) { device(m.dev).health = m.health; },
  reply(m) { logEvent(m.dev + " reply " + m.reply.id + ": " + (m.reply.ok ? "ok" : m.reply.err)); },
};

function setStatus(on, text) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "status " + (on ? "on" : "off");
  s.dataset.state = on ? "live" : "offline";
}

let live = null;          // the /live WebSocket while logged in

function showLogin(message) {
  document.getElementById("login").hidden = false;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = message || "";
  setStatus(false, "logged out");
  document.getElementById("token").focus();
}

async function session(method, token) {
  const headers = token ? { "Authorization": "Bearer " + token } : {};
  const r = await fetch("api/session", { method, headers, credentials: "same-origin",
                                         cache: "no-store" });
  return r.status;
}

function loggedIn() {
  document.getElementById("login").hidden = true;
  document.getElementById("logout").hidden = false;
  if (!live) connect();
}

document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const box = document.getElementById("token");
  const token = box.value;
  box.value = "";                         // not kept: the cookie carries the session
  let status;
  try { status = await session("POST", token); } catch (e) { status = 0; }
  if (status === 200) loggedIn();
  else showLogin(status === 429 ? "too many failed tokens: wait a little"
                 : status === 401 ? "wrong token" : "login failed (" + status + ")");
});

document.getElementById("logout").addEventListener("click", async () => {
  try { await session("DELETE"); } catch (e) { /* logged out locally anyway */ }
  const ws = live;
  live = null;
  if (ws) ws.close();
  showLogin();
});

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live";
  const ws = new WebSocket(url);          // the session cookie goes along (same origin)
  live = ws;
  ws.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    const h = handlers[m.t];
    if (!h) return;                       // unknown events: newer server, ignore
    h(m);
    if (m.t === "snapshot") { retryMs = 500; setStatus(true, "live"); }
    renderDevices(m.t === "snapshot" ? undefined : m.dev);
  };
  ws.onclose = async () => {
    if (live !== ws) return;              // logged out
    live = null;
    setStatus(false, "reconnecting…");
    // A refused upgrade looks like any lost connection: ask whether the session still holds.
    let status;
    try { status = await session("GET"); } catch (e) { status = 0; }
    if (status === 401) { showLogin("session ended: log in again"); return; }
    setTimeout(() => { if (!live) connect(); }, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

session("GET").then((status) => status === 200 ? loggedIn() : showLogin(),
                    () => showLogin("collector unreachable"));
