// app.js: the fleethub admin dashboard. Everything a device or the hub
// sends is rendered with textContent or DOM attributes, never as HTML.

import { Hub, HubError, closeText } from "/hub.js";
import { SortedFleet, visibleRange } from "/fleet.js";

const TOKEN_KEY = "fleethub.token";
const USER_KEY = "fleethub.user";
const TOPICS = ["presence", "status", "event", "summary"];
const FEED_CAP = 200;
const HISTORY_LIMIT = 50;
const CHART_SPAN = 10 * 60 * 1000;
// The chart's window grows with the data it has, up to CHART_SPAN:
// [span, tick step] in ms.
const CHART_WINDOWS = [
  [60 * 1000, 15 * 1000],
  [2 * 60 * 1000, 30 * 1000],
  [5 * 60 * 1000, 60 * 1000],
  [CHART_SPAN, 2 * 60 * 1000],
];
const LOW_BATTERY = 20;
const MODEL_FIELDS = ["location", "inspection", "rubbish"];
const PRIORITIES = ["emergency", "high", "normal"];

// The fleet table renders only the rows in view (ROW_OVERSCAN more either
// side) over the sorted model. Continuation pages of the device listing ask
// for PAGE_LIMIT devices each, as many as the first page: a page near the
// hub's answer cap (1 MiB) would fill a session's whole outbound queue
// (also 1 MiB by default), and anything queued beside it would then close
// the session as a slow consumer.
const ROW_HEIGHT = 37; // px, as style.css draws a row; measured again at run time
const ROW_OVERSCAN = 8;
const ROW_POOL = 64; // detached rows kept for reuse
const MAX_TABLE_PX = 8000000; // below the height browsers allow an element
const PAGE_LIMIT = 1000;
const PAGE_RETRIES = 30; // 429 answers to one page before the listing gives up

// On load the feed and the chart are filled from /admin/history, bounded:
// the events of the BACKFILL_DEVICES devices of the first page seen last
// (BACKFILL_EVENTS each, the FEED_BACKFILL newest kept), and the presence
// records of at most PRESENCE_BACKFILL devices that changed within the
// chart's span (more than that, and each device's last change stands for
// its history). Requests go HISTORY_PARALLEL at a time, as many as the
// hub reads for one session at once.
const BACKFILL_DEVICES = 20;
const BACKFILL_EVENTS = 10;
const FEED_BACKFILL = 50;
const PRESENCE_BACKFILL = 30;
const PRESENCE_RECORDS = 20;
const HISTORY_PARALLEL = 2;
const DEVICE_CHART_LIMIT = 200; // status records in the device panel's chart
const CHART_STEPS = 400; // points at most in the chart's part drawn from history
const NODES_EVERY = 10; // s between two readings of /admin/nodes

const S = {
  hub: null,
  devices: new Map(), // sn -> device view
  fleet: new SortedFleet((d) => sortValue(d, "sn"), 1), // every device, in display order
  view: null, // the devices of fleet that match the filters, in order; null when no filter is set
  rows: new Map(), // sn -> {tr, c, v}: the rows rendered
  pool: [], // rows not in use
  rowHeight: ROW_HEIGHT,
  rowMeasured: false,
  firstRows: false, // the first rows were drawn (performance mark fleethub:first-rows)
  counts: { online: 0, low: 0 },
  types: new Map(), // type -> devices
  groups: new Map(), // group -> devices
  optionsDirty: true,
  sort: { key: "sn", dir: 1 },
  filters: { q: "", type: "", group: "", online: "" },
  summary: [], // {at, online, offline}, oldest first
  skew: 0, // server clock minus local clock, ms
  selected: null,
  topic: "status",
  historyReq: 0,
  commands: new Map(), // sn -> last command result shown
  role: "",
  conn: { state: "idle" },
  dirty: new Set(),
  flash: new Set(),
  frame: 0,
  optionsKey: "",
  haveSnapshot: false,
  loading: false, // pages of the device listing are still coming
  snapshotGen: 0, // the snapshot being taken; a newer one supersedes it
  resubscribes: 0, // subscribes refused for now in a row
  resubscribeTimer: 0,
  backfilled: false, // the feed was filled from history for this sign-in
  chartFilled: false, // the chart was filled from history for this sign-in
  feedKeys: new Set(), // the events in the feed, by eventKey
  dchart: { sn: "", req: 0, records: [] }, // the device panel's status records, oldest first
  actions: new Map(), // sn -> {kind, text}: the last kick or forget shown
  nodes: { req: 0, at: 0, list: null },
  confirm: null, // resolves the open confirmation
};

// ---- small helpers ---------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const str = (v) => (typeof v === "string" ? v : v === undefined || v === null ? "" : String(v));
const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : null);
const now = () => Date.now() + S.skew;

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m < 10 && s % 60 ? m + "m " + (s % 60) + "s" : m + "m";
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? h + "h " + (m % 60) + "m" : h + "h";
  const d = Math.floor(h / 24);
  return h % 24 ? d + "d " + (h % 24) + "h" : d + "d";
}

function ago(at) {
  if (!at) return "—";
  const d = now() - at;
  return d < 3000 ? "just now" : fmtDuration(d) + " ago";
}

// The formats, made once: toLocaleString and its kin build a formatter on
// every call, which a table drawing rows at every frame cannot afford.
const TIME = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const DAY = new Intl.DateTimeFormat([], { month: "short", day: "numeric" });
const DATE_TIME = new Intl.DateTimeFormat([], { year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric" });

function fmtTime(at) {
  if (!at) return "—";
  return TIME.format(new Date(at - S.skew));
}

function fmtDateTime(at) {
  if (!at) return "—";
  const d = new Date(at - S.skew);
  const today = new Date();
  const time = fmtTime(at);
  if (d.toDateString() === today.toDateString()) return time;
  return DAY.format(d) + " " + time;
}

function absTitle(at) {
  return at ? DATE_TIME.format(new Date(at - S.skew)) : "";
}

function compact(v, max) {
  let s;
  try {
    s = JSON.stringify(v);
  } catch (e) {
    s = String(v);
  }
  if (s === undefined) s = "";
  return max && s.length > max ? s.slice(0, max - 1) + "…" : s;
}

function field(d, name) {
  return obj(d && d.status) ? obj(d.status[name]) : null;
}

function battery(d) {
  const e = field(d, "electricity");
  if (!e || e.percent === undefined || e.percent === null || e.percent === "") return null;
  const p = Number(e.percent);
  return Number.isFinite(p) ? Math.max(0, Math.min(100, p)) : null;
}

function codeOf(d, name) {
  const f = field(d, name);
  return f && typeof f.code === "number" ? f.code : null;
}

// fieldText is what a model field says in words: a location by its name
// (the message when it has none), the others by their message.
function fieldText(name, f) {
  if (!f) return "";
  return name === "location" ? str(f.name) || str(f.msg) : str(f.msg);
}

function pill(online) {
  return el("span", "pill " + (online ? "online" : "offline"), online ? "Online" : "Offline");
}

function batteryNode(pct) {
  const wrap = el("span", "battery");
  if (pct === null) {
    wrap.append(el("span", "code none", "—"));
    return wrap;
  }
  const bar = el("span", "battery-bar");
  const fill = el("span", "battery-fill" + (pct < LOW_BATTERY ? " low" : pct < 50 ? " mid" : ""));
  fill.style.width = pct + "%"; // CSSOM, allowed by the page's CSP
  fill.style.display = "block";
  bar.append(fill);
  wrap.append(bar, el("span", "battery-text", Math.round(pct) + "%"));
  return wrap;
}

// codeNodes renders the model field name {code,msg}: a code badge and its
// words (fieldText).
function codeNodes(name, f, withMsg) {
  if (!f || f.code === undefined || f.code === null) return [el("span", "code none", "—")];
  const badge = el("span", "code " + (f.code === 0 ? "ok" : "bad"), str(f.code));
  const msg = fieldText(name, f);
  if (msg) badge.setAttribute("title", msg);
  if (!withMsg || !msg) return [badge];
  const m = el("span", "code-msg", msg);
  m.setAttribute("title", msg);
  return [badge, m];
}

function sinceText(d) {
  if (!d.since) return "";
  return d.online ? "for " + fmtDuration(now() - d.since) : ago(d.since);
}

// lastSeen is the latest sign of life known: the hub's last_seen, or a
// later status or event.
function lastSeen(d) {
  return Math.max(num(d.last_seen), num(d.status_at), num(d.event_at));
}

// ---- device state ------------------------------------------------------------

function normalize(v) {
  return {
    sn: str(v.sn),
    type: str(v.type),
    group: str(v.group),
    online: v.online === true,
    node: str(v.node),
    addr: str(v.addr),
    session: str(v.session),
    since: num(v.since),
    last_seen: num(v.last_seen),
    status: obj(v.status),
    status_at: num(v.status_at),
    event_at: 0,
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// yieldToPage lets the page draw and handle input before more work: after
// the next frame, or after 100 ms where no frame comes (a hidden tab).
function yieldToPage() {
  return new Promise((resolve) => {
    let done = false;
    const go = () => {
      if (!done) {
        done = true;
        resolve();
      }
    };
    requestAnimationFrame(() => setTimeout(go, 0));
    setTimeout(go, 100);
  });
}

// applySnapshot takes the subscription's snapshot: its first page, then
// every further page through /admin/devices while the answer names a next
// cursor, one page at a time with the page drawn in between. Devices absent
// from every page are removed once the last page is in.
async function applySnapshot(values, _args, info) {
  const gen = ++S.snapshotGen;
  const seen = new Set();
  let page = values;
  S.loading = true;
  let first = true;
  for (;;) {
    takePage(page, seen);
    if (first) {
      first = false;
      backfillFeed(page);
    }
    const next = page && typeof page.next === "string" ? page.next : "";
    if (!next) break;
    await yieldToPage();
    if (gen !== S.snapshotGen) return; // a newer snapshot took over
    page = await fetchPage(next, gen);
    if (gen !== S.snapshotGen) return;
    if (!page) {
      S.loading = false; // keep what is shown; the next snapshot completes it
      schedule();
      return;
    }
  }
  const gone = [];
  for (const sn of S.devices.keys()) {
    if (!seen.has(sn)) gone.push(sn);
  }
  removeDevices(gone);
  S.haveSnapshot = true;
  S.loading = false;
  backfillChart();
  performance.mark("fleethub:fleet-loaded");
  if (info && info.replay) flashConn("Resynchronised after reconnect");
  schedule();
}

// fetchPage asks for the page of the listing at cursor, waiting as told
// when the hub answers 429 (the session's listing bytes are spent). It is
// null when the listing cannot go on.
async function fetchPage(cursor, gen) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await S.hub.request("/admin/devices", { cursor, limit: PAGE_LIMIT });
    } catch (err) {
      if (err instanceof HubError && !err.local && err.code === 429 && attempt < PAGE_RETRIES) {
        const wait = num(err.values.retry_after_ms);
        await sleep(Math.min(5000, Math.max(50, wait || 250)));
        if (gen !== S.snapshotGen) return null;
        continue;
      }
      console.warn("fleethub: device list incomplete:", err);
      return null;
    }
  }
}

function takePage(values, seen) {
  const list = Array.isArray(values && values.devices) ? values.devices : [];
  for (const v of list) {
    if (!obj(v) || typeof v.sn !== "string" || !v.sn) continue;
    const d = normalize(v);
    const old = S.devices.get(d.sn);
    seen.add(d.sn);
    if (old) {
      d.event_at = old.event_at;
      // A push that overtook the snapshot is newer: keep it.
      if (old.status_at > d.status_at) {
        d.status = old.status;
        d.status_at = old.status_at;
      }
      Object.assign(old, d); // the model holds the device object itself
    } else {
      S.devices.set(d.sn, d);
    }
    markDirty(d.sn);
  }
  schedule();
}

function device(sn, v) {
  let d = S.devices.get(sn);
  if (!d) {
    d = normalize({ sn, type: v.type, group: v.group, online: true, since: v.at, last_seen: v.at });
    S.devices.set(sn, d);
  }
  if (typeof v.type === "string" && v.type) d.type = v.type;
  if (typeof v.group === "string" && v.group) d.group = v.group;
  return d;
}

function onPresence(v) {
  if (typeof v.sn !== "string" || !v.sn) return;
  const at = num(v.at) || now();
  const known = S.devices.get(v.sn);
  if (known && known.since && at < known.since) return; // older than what we show
  const d = device(v.sn, v);
  d.online = v.online === true;
  d.node = d.online ? str(v.node) : "";
  d.addr = d.session = ""; // a new session, or none: the next listing has them
  d.since = at;
  if (d.online) d.last_seen = Math.max(d.last_seen, at);
  markDirty(d.sn, true);
  addHistoryLive(d.sn, "presence", v);
  schedule();
}

function onStatus(v) {
  if (typeof v.sn !== "string" || !v.sn) return;
  const at = num(v.at) || now();
  const known = S.devices.get(v.sn);
  if (known && known.status_at && at < known.status_at) return;
  const d = device(v.sn, v);
  d.status = obj(v.status) || {};
  d.status_at = at;
  markDirty(d.sn);
  addHistoryLive(d.sn, "status", v);
  addDeviceChartLive(d.sn, v);
  schedule();
}

function onEvent(v) {
  if (typeof v.sn !== "string" || !v.sn) return;
  const d = device(v.sn, v);
  d.event_at = Math.max(d.event_at, num(v.at));
  markDirty(d.sn);
  addFeedItem(v);
  addHistoryLive(d.sn, "event", v);
  schedule();
}

function onSummary(v) {
  const at = num(v.at);
  if (!at) return;
  S.summary.push({ at, online: num(v.online), offline: num(v.offline) });
  const horizon = at - CHART_SPAN - 60000;
  while (S.summary.length > 2 && S.summary[1].at < horizon) S.summary.shift();
  drawChart();
}

// removeDevices forgets devices: from the model, the counts and the table.
function removeDevices(sns) {
  if (!sns.length) return;
  const gone = [];
  for (const sn of sns) {
    const d = S.devices.get(sn);
    if (!d) continue;
    S.devices.delete(sn);
    S.dirty.delete(sn);
    uncount(d);
    gone.push(d);
    const r = S.rows.get(sn);
    if (r) releaseRow(sn, r);
  }
  S.fleet.remove(gone);
  if (S.view) rebuildView();
}

function markDirty(sn, flash) {
  S.dirty.add(sn);
  if (flash) S.flash.add(sn);
}

// count adds what a device contributes to the overview and the filter
// options, and remembers it so that uncount can take it back.
function count(d) {
  const b = battery(d);
  // An offline device's battery is as it last reported, maybe days ago:
  // only the online ones count as low.
  d._c = { on: d.online, low: d.online && b !== null && b < LOW_BATTERY, type: d.type, group: d.group };
  if (d._c.on) S.counts.online++;
  if (d._c.low) S.counts.low++;
  bump(S.types, d.type, 1);
  bump(S.groups, d.group, 1);
}

function uncount(d) {
  const c = d._c;
  if (!c) return;
  if (c.on) S.counts.online--;
  if (c.low) S.counts.low--;
  bump(S.types, c.type, -1);
  bump(S.groups, c.group, -1);
  d._c = null;
}

function bump(m, key, by) {
  if (!key) return;
  const n = (m.get(key) || 0) + by;
  if (n > 0) m.set(key, n);
  else m.delete(key);
  if (n === 0 || n === by) S.optionsDirty = true; // a value came or went
}

// schedule renders what changed at the next animation frame, so a burst of
// pushes or a page of the listing costs one layout.
function schedule() {
  if (S.frame) return;
  S.frame = requestAnimationFrame(flush);
}

// renderNow renders at once, for the user's own actions.
function renderNow() {
  if (S.frame) cancelAnimationFrame(S.frame);
  flush();
}

function flush() {
  S.frame = 0;
  const changed = [];
  for (const sn of S.dirty) {
    const d = S.devices.get(sn);
    if (!d) continue;
    d._v = (d._v || 0) + 1;
    uncount(d);
    count(d);
    changed.push(d);
  }
  const selectedChanged = S.selected && S.dirty.has(S.selected);
  S.dirty.clear();
  const moved = S.fleet.update(changed);
  if (S.view && (moved || changed.some((d) => matches(d) !== !!d._m))) rebuildView();
  if (S.optionsDirty) refreshOptions();
  renderTable();
  S.flash.clear();
  updateCounts();
  updateStats();
  if (selectedChanged) renderDevice();
}

// ---- fleet table -------------------------------------------------------------

// makeRow builds a row; bindRow fills it for a device. Clicks and keys are
// handled on the table body, by the row's data-sn.
function makeRow() {
  const tr = el("tr");
  tr.tabIndex = 0;
  const c = {
    sn: el("td", "sn"),
    type: el("td"),
    group: el("td"),
    state: el("td"),
    battery: el("td", "num"),
    location: el("td"),
    inspection: el("td"),
    rubbish: el("td"),
    seen: el("td", "ago"),
  };
  // Every node of a row is made once: drawing a row for another device
  // changes texts and classes only, which is what lets the table redraw
  // its rows at every frame of a scroll.
  const wrap = el("div", "state-cell");
  c.pill = el("span", "pill");
  c.since = el("span", "since");
  wrap.append(c.pill, c.since);
  c.state.append(wrap);
  const bat = el("span", "battery");
  c.bar = el("span", "battery-bar");
  c.fill = el("span", "battery-fill");
  c.fill.style.display = "block"; // CSSOM, allowed by the page's CSP
  c.bar.append(c.fill);
  c.batText = el("span", "battery-text");
  bat.append(c.bar, c.batText);
  c.battery.append(bat);
  for (const name of MODEL_FIELDS) {
    const badge = el("span", "code");
    const msg = el("span", "code-msg");
    c[name].append(badge, msg);
    c[name + "Badge"] = badge;
    c[name + "Msg"] = msg;
  }
  tr.append(c.sn, c.type, c.group, c.state, c.battery, c.location, c.inspection, c.rubbish, c.seen);
  return { tr, c, v: -1 };
}

function bindRow(d, r) {
  r.tr.dataset.sn = d.sn;
  setText(r.c.sn, d.sn);
  r.tr.classList.toggle("selected", S.selected === d.sn);
  r.tr.classList.remove("flash");
  renderRow(d, r);
}

function releaseRow(sn, r) {
  r.tr.remove();
  S.rows.delete(sn);
  if (S.pool.length < ROW_POOL) S.pool.push(r);
}

function setClass(e, className) {
  if (e.className !== className) e.className = className;
}

function setTitle(e, title) {
  if (e.getAttribute("title") !== title) e.setAttribute("title", title);
}

// renderRow draws d in its row, as pill, batteryNode and codeNodes draw
// the same values elsewhere.
function renderRow(d, r) {
  const c = r.c;
  r.v = d._v;
  r.tr.dataset.online = String(d.online);
  setText(c.type, d.type || "—");
  setText(c.group, d.group || "—");
  setClass(c.pill, "pill " + (d.online ? "online" : "offline"));
  setText(c.pill, d.online ? "Online" : "Offline");
  setText(c.since, sinceText(d));
  setTitle(c.since, (d.online ? "online since " : "offline since ") + absTitle(d.since));
  const pct = battery(d);
  c.bar.hidden = pct === null;
  if (pct === null) {
    setClass(c.batText, "code none");
    setText(c.batText, "—");
  } else {
    setClass(c.fill, "battery-fill" + (pct < LOW_BATTERY ? " low" : pct < 50 ? " mid" : ""));
    setStyle(c.fill, "width", pct + "%");
    setClass(c.batText, "battery-text");
    setText(c.batText, Math.round(pct) + "%");
  }
  for (const name of MODEL_FIELDS) {
    const f = field(d, name);
    const badge = c[name + "Badge"];
    const msg = c[name + "Msg"];
    if (!f || f.code === undefined || f.code === null) {
      setClass(badge, "code none");
      setText(badge, "—");
      setTitle(badge, "");
      setText(msg, "");
      msg.hidden = true;
      continue;
    }
    const text = fieldText(name, f);
    setClass(badge, "code " + (f.code === 0 ? "ok" : "bad"));
    setText(badge, str(f.code));
    setTitle(badge, text);
    setText(msg, text);
    setTitle(msg, text);
    msg.hidden = !text;
  }
  const seen = lastSeen(d);
  setText(c.seen, ago(seen));
  setTitle(c.seen, absTitle(seen));
}

// shown is the list the table shows: the model, or its filtered view.
function shown() {
  return S.view || S.fleet.list;
}

// renderTable renders the rows in view: the rows that scrolled out go back
// to the pool, the ones that came in are bound, the others are only
// re-rendered when their device changed. Spacers above and below stand for
// the rows not drawn.
function renderTable() {
  const list = shown();
  const wrap = $("table-wrap");
  const body = $("fleet-body");
  const viewHeight = wrap.clientHeight || 460; // 0 while the page is hidden
  const w = visibleRange(list.length, S.rowHeight, wrap.scrollTop, viewHeight, ROW_OVERSCAN, MAX_TABLE_PX);
  const want = new Set();
  for (let i = w.start; i < w.end; i++) want.add(list[i].sn);
  for (const [sn, r] of S.rows) {
    if (!want.has(sn)) releaseRow(sn, r);
  }
  let at = body.firstChild;
  for (let i = w.start; i < w.end; i++) {
    const d = list[i];
    let r = S.rows.get(d.sn);
    if (!r) {
      r = S.pool.pop() || makeRow();
      S.rows.set(d.sn, r);
      bindRow(d, r);
    } else if (r.v !== d._v) {
      renderRow(d, r);
      if (S.flash.has(d.sn) && S.haveSnapshot) {
        r.tr.classList.remove("flash");
        void r.tr.offsetWidth; // restart the animation
        r.tr.classList.add("flash");
      }
    }
    if (r.tr === at) at = at.nextSibling;
    else body.insertBefore(r.tr, at);
  }
  // CSSOM, allowed by the page's CSP; set only when changed, so that a
  // frame that moved nothing lays out nothing.
  setStyle($("fleet-rows"), "top", w.padTop + "px");
  setStyle($("fleet-sizer"), "height", w.padTop + (w.end - w.start) * S.rowHeight + w.padBottom + "px");
  if (w.end > w.start && !S.rowMeasured) {
    // The row height is what the browser drew, whatever the fonts.
    const h = body.firstChild.getBoundingClientRect().height;
    if (h > 0) S.rowMeasured = true; // 0 while the page is hidden
    if (h > 0 && Math.abs(h - S.rowHeight) > 0.5) {
      S.rowHeight = h;
      renderTable();
      return;
    }
  }
  if (w.end > w.start && !S.firstRows) {
    S.firstRows = true;
    performance.mark("fleethub:first-rows");
  }
}

function setStyle(e, prop, value) {
  if (e.style[prop] !== value) e.style[prop] = value;
}

function sortValue(d, key) {
  switch (key) {
    case "online":
      return d.online ? 0 : 1;
    case "battery":
      return battery(d);
    case "location": {
      const f = field(d, "location");
      return f ? fieldText("location", f).toLowerCase() || null : null;
    }
    case "inspection":
    case "rubbish":
      return codeOf(d, key);
    case "last_seen":
      return -lastSeen(d);
    default:
      return str(d[key]).toLowerCase();
  }
}

// setSort orders the table by key: one sort of the model.
function setSort(key, dir) {
  S.sort = { key, dir };
  S.fleet.setOrder((d) => sortValue(d, key), dir);
  if (S.view) rebuildView();
  renderNow();
}

function filtering() {
  const f = S.filters;
  return !!(f.q || f.type || f.group || f.online);
}

function matches(d) {
  const f = S.filters;
  if (f.type && d.type !== f.type) return false;
  if (f.group && d.group !== f.group) return false;
  if (f.online === "online" && !d.online) return false;
  if (f.online === "offline" && d.online) return false;
  if (f.q && !d.sn.toLowerCase().includes(f.q)) return false;
  return true;
}

// rebuildView filters the model again, in one pass, keeping its order.
function rebuildView() {
  if (!filtering()) {
    S.view = null;
    return;
  }
  S.view = S.fleet.list.filter((d) => (d._m = matches(d)));
}

function applyFilters() {
  rebuildView();
  renderNow();
}

// setText changes a text only when it differs, so a frame that changed
// nothing touches nothing.
function setText(e, text) {
  text = String(text);
  if (e.textContent !== text) e.textContent = text;
}

function updateCounts() {
  const total = S.devices.size;
  const n = shown().length;
  const loading = S.loading ? " · loading…" : "";
  setText($("fleet-count"), (n === total ? total + (total === 1 ? " device" : " devices") : n + " of " + total + " devices") + loading);
  const empty = $("fleet-empty");
  empty.hidden = n > 0;
  setText(empty, !S.haveSnapshot ? "Waiting for the fleet snapshot…" : total === 0 ? "No devices known yet." : "No devices match the filters.");
}

function fillSelect(select, values, allLabel) {
  const current = select.value;
  const opts = [el("option", "", allLabel)];
  opts[0].value = "";
  const list = values.slice();
  if (current && !list.includes(current)) list.push(current);
  for (const v of list) {
    const o = el("option", "", v);
    o.value = v;
    opts.push(o);
  }
  select.replaceChildren(...opts);
  select.value = current;
}

function refreshOptions() {
  S.optionsDirty = false;
  const t = Array.from(S.types.keys()).sort();
  const g = Array.from(S.groups.keys()).sort();
  const key = JSON.stringify([t, g]);
  if (key === S.optionsKey) return;
  S.optionsKey = key;
  fillSelect($("f-type"), t, "All types");
  fillSelect($("f-group"), g, "All groups");
}

function updateStats() {
  setText($("stat-online"), S.counts.online);
  setText($("stat-offline"), S.devices.size - S.counts.online);
  setText($("stat-battery"), S.counts.low);
}

// ---- event feed --------------------------------------------------------------

function snLink(sn) {
  const b = el("button", "sn-link", sn);
  b.type = "button";
  b.addEventListener("click", () => openDevice(sn));
  return b;
}

// eventKey tells one event from another: the same event may come as a push
// and in the history read on load.
function eventKey(v) {
  return str(v.sn) + "\u0000" + num(v.at) + "\u0000" + str(v.event) + "\u0000" + compact(v.data, 200);
}

function addFeedItem(v) {
  const feed = $("feed");
  let li = feedItem(v, true);
  if (!li) {
    // The history read on load may have brought it first, and sorted it
    // among events of the same millisecond by chance: the push, which
    // comes in the order the hub recorded them, puts it where it belongs.
    const key = eventKey(v);
    li = Array.from(feed.children).find((x) => x.dataset.key === key);
    if (!li || li.dataset.live) return;
    li.dataset.live = "1";
    li.classList.add("fresh");
  }
  feed.prepend(li);
  trimFeed(feed);
  updateFeedMeta();
}

function trimFeed(feed) {
  while (feed.children.length > FEED_CAP) {
    S.feedKeys.delete(feed.lastElementChild.dataset.key);
    feed.lastElementChild.remove();
  }
}

// feedItem is the feed's item for event v, or null when the feed has it.
function feedItem(v, fresh) {
  const key = eventKey(v);
  if (S.feedKeys.has(key)) return null;
  S.feedKeys.add(key);
  const prio = PRIORITIES.includes(v.priority) ? v.priority : "normal";
  const li = el("li", "feed-item prio-" + prio + (fresh ? " fresh" : ""));
  li.dataset.priority = prio;
  li.dataset.sn = str(v.sn);
  li.dataset.key = key;
  li.dataset.at = String(num(v.at));
  if (fresh) li.dataset.live = "1"; // came as a push
  const top = el("div", "feed-top");
  const time = el("span", "time", fmtTime(num(v.at)));
  time.setAttribute("title", absTitle(num(v.at)));
  const name = el("span", "feed-name", str(v.event) || "event");
  name.setAttribute("title", str(v.event));
  top.append(el("span", "prio", prio), name, time);
  const sub = el("div", "feed-sub");
  sub.append(snLink(str(v.sn)));
  const data = obj(v.data);
  if (data && Object.keys(data).length) {
    const line = el("span", "feed-data", compact(data, 240));
    line.setAttribute("title", compact(data, 4000));
    sub.append(line);
  }
  li.append(top, sub);
  return li;
}

// ---- history on load ---------------------------------------------------------

// eachLimited runs f on every item, at most n at a time.
async function eachLimited(items, n, f) {
  let i = 0;
  const run = async () => {
    while (i < items.length) await f(items[i++]);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, run));
}

// historyOf reads records of one device, or none when it cannot.
async function historyOf(hub, sn, topic, limit) {
  try {
    const v = await hub.request("/admin/history", { sn, topic, limit });
    return Array.isArray(v.records) ? v.records.filter(obj) : [];
  } catch (err) {
    return null;
  }
}

// backfillFeed fills the feed, once a sign-in, with the latest events of
// the first page's devices seen last: what happened before the page was
// opened. Events pushed meanwhile stay; the feed is kept newest first.
async function backfillFeed(page) {
  if (S.backfilled) return;
  S.backfilled = true;
  const hub = S.hub;
  const list = (Array.isArray(page && page.devices) ? page.devices : []).filter((v) => obj(v) && typeof v.sn === "string" && v.sn);
  const sns = list
    .map((v) => ({ sn: v.sn, seen: Math.max(num(v.last_seen), num(v.since)) }))
    .sort((a, b) => b.seen - a.seen)
    .slice(0, BACKFILL_DEVICES)
    .map((x) => x.sn);
  const got = [];
  await eachLimited(sns, HISTORY_PARALLEL, async (sn) => {
    const recs = await historyOf(hub, sn, "event", BACKFILL_EVENTS);
    if (recs) got.push(...recs.filter((r) => typeof r.sn === "string" && r.sn));
  });
  if (S.hub !== hub || !got.length) return;
  got.sort((a, b) => num(b.at) - num(a.at));
  const feed = $("feed");
  const items = Array.from(feed.children);
  for (const r of got.slice(0, FEED_BACKFILL)) {
    const d = S.devices.get(r.sn);
    if (d && num(r.at) > d.event_at) {
      d.event_at = num(r.at);
      markDirty(d.sn);
    }
    const li = feedItem(r, false);
    if (li) items.push(li);
  }
  items.sort((a, b) => Number(b.dataset.at) - Number(a.dataset.at));
  feed.replaceChildren(...items);
  trimFeed(feed);
  updateFeedMeta();
  schedule();
}

// thin keeps, of points oldest first, the last of each step-long slot
// after start: a large fleet's changes drawn as at most CHART_STEPS steps.
function thin(points, start, step) {
  if (points.length <= CHART_STEPS) return points;
  const out = [];
  for (const p of points) {
    const last = out[out.length - 1];
    if (last && Math.floor((p.at - start) / step) === Math.floor((last.at - start) / step)) {
      out[out.length - 1] = { ...p, at: last.at };
    } else {
      out.push(p);
    }
  }
  return out;
}

// backfillChart fills the online chart, once a sign-in, with what the
// listing and the presence history say of the span before the first
// summary: each device was online or offline as now since its last change
// (since), and before it as its earlier presence records say; read for at
// most PRESENCE_BACKFILL devices, the others are taken to have changed
// once.
async function backfillChart() {
  if (S.chartFilled) return;
  S.chartFilled = true;
  const hub = S.hub;
  const end = now();
  const start = end - CHART_SPAN;
  const changed = [];
  let online = 0;
  for (const d of S.devices.values()) {
    if (d.online) online++;
    if (d.since > start) changed.push(d);
  }
  const offline = S.devices.size - online;
  changed.sort((a, b) => b.since - a.since);
  // Per device, its changes in the span, newest first: [at, online after].
  const changes = new Map();
  for (const d of changed) changes.set(d.sn, { list: [[d.since, d.online]], first: false });
  if (changed.length <= PRESENCE_BACKFILL) {
    await eachLimited(changed, HISTORY_PARALLEL, async (d) => {
      const recs = await historyOf(hub, d.sn, "presence", PRESENCE_RECORDS);
      if (!recs || !recs.length) return;
      const list = recs.filter((r) => num(r.at) > start && num(r.at) <= d.since).map((r) => [num(r.at), r.online === true]);
      if (!list.length) return;
      // All of its records, and its first in the span: it was not known before.
      const first = recs.length < PRESENCE_RECORDS && num(recs[recs.length - 1].at) > start;
      changes.set(d.sn, { list, first });
    });
    if (S.hub !== hub) return;
  }
  const steps = []; // [at, online after, first]
  for (const c of changes.values()) {
    c.list.forEach(([at, on], i) => steps.push([at, on, c.first && i === c.list.length - 1]));
  }
  steps.sort((a, b) => b[0] - a[0]);
  // Walk back from now: before each change the device was the other way
  // (or not known at all, before its first record). counts[i] holds
  // between steps[i] and the change after it (counts[0]: since the last).
  const counts = [{ on: online, off: offline }];
  let on = online;
  let off = offline;
  for (const [, after, first] of steps) {
    if (after) on--;
    else off--;
    if (!first) {
      if (after) off++;
      else on++;
    }
    on = Math.max(0, on);
    off = Math.max(0, off);
    counts.push({ on, off });
  }
  const k = steps.length;
  const hist = [{ at: start, online: counts[k].on, offline: counts[k].off, history: true }];
  for (let i = k - 1; i >= 0; i--) hist.push({ at: steps[i][0], online: counts[i].on, offline: counts[i].off, history: true });
  const firstLive = S.summary.length ? S.summary[0].at : Infinity;
  S.summary = thin(hist.filter((p) => p.at < firstLive), start, CHART_SPAN / CHART_STEPS).concat(S.summary);
  $("chart").dataset.history = String(hist.length);
  drawChart();
}

function updateFeedMeta() {
  const n = $("feed").children.length;
  $("feed-empty").hidden = n > 0;
  $("feed-count").textContent = n ? n + (n >= FEED_CAP ? " (latest)" : "") : "";
  $("stat-alerts").textContent = $("feed").querySelectorAll(".prio-emergency").length;
}

// ---- online chart ------------------------------------------------------------

function niceMax(v) {
  if (v <= 4) return 4;
  const raw = v / 4;
  const pow = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * pow >= raw) return m * pow * 4;
  }
  return v;
}

function drawChart() {
  const cv = $("chart");
  if (!cv || cv.offsetParent === null) return;
  const w = cv.clientWidth;
  const h = cv.clientHeight;
  if (!w || !h) return;
  const dpr = window.devicePixelRatio || 1;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
    cv.width = Math.round(w * dpr);
    cv.height = Math.round(h * dpr);
  }
  const ctx = cv.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const end = now();
  const have = S.summary.length ? end - S.summary[0].at : 0;
  const [span, tickStep] = CHART_WINDOWS.find(([w]) => w >= have) || CHART_WINDOWS[CHART_WINDOWS.length - 1];
  const start = end - span;
  const spanText = span === 60000 ? "last minute" : "last " + span / 60000 + " minutes";
  if ($("chart-span").textContent !== spanText) $("chart-span").textContent = spanText;
  const pts = S.summary.filter((p, i) => p.at >= start || (S.summary[i + 1] && S.summary[i + 1].at >= start));
  cv.dataset.points = String(pts.length);

  let maxV = 0;
  for (const p of pts) maxV = Math.max(maxV, p.online, p.offline);
  const yMax = niceMax(maxV);
  const yLabel = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
  const AXIS_FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  const VALUE_FONT = "600 12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  // The margins fit the labels: the widest count on the left, the last
  // value beside the line's end on the right. Every label's box is noted
  // in data-labels, for checking that none is cut.
  ctx.font = AXIS_FONT;
  let yw = 0;
  for (let i = 0; i <= 4; i++) yw = Math.max(yw, ctx.measureText(yLabel((yMax / 4) * i)).width);
  const last = pts.length ? pts[pts.length - 1] : null;
  ctx.font = VALUE_FONT;
  const vw = last ? ctx.measureText(String(last.online)).width : 0;
  ctx.font = AXIS_FONT;
  const nowW = ctx.measureText("now").width;
  const firstW = ctx.measureText("−" + (span >= 60000 ? span / 60000 + "m" : span / 1000 + "s")).width;
  const L = Math.max(Math.ceil(yw) + 10, Math.ceil(firstW / 2) + 2), R = Math.max(Math.ceil(vw) + 12, Math.ceil(nowW / 2) + 4), T = 8, B = 20;
  const boxes = [];
  const pw = w - L - R;
  const ph = h - T - B;
  const x = (at) => L + ((Math.max(at, start) - start) / span) * pw;
  const y = (v) => T + ph - (v / yMax) * ph;

  ctx.font = AXIS_FONT;
  ctx.textBaseline = "middle";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (yMax / 4) * i;
    const yy = Math.round(y(v)) + 0.5;
    ctx.strokeStyle = i === 0 ? "#cfd7e3" : "#eef1f5";
    ctx.beginPath();
    ctx.moveTo(L, yy);
    ctx.lineTo(L + pw, yy);
    ctx.stroke();
    ctx.fillStyle = "#98a2b3";
    ctx.textAlign = "right";
    const label = yLabel(v);
    ctx.fillText(label, L - 6, yy);
    const lw = ctx.measureText(label).width;
    boxes.push([L - 6 - lw, yy - 6, L - 6, yy + 6]);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "alphabetic";
  ctx.fillStyle = "#98a2b3";
  for (let k = span; k >= 0; k -= tickStep) {
    const label = k === 0 ? "now" : "−" + (k >= 60000 ? k / 60000 + "m" : k / 1000 + "s");
    const lx = L + pw - (k / span) * pw;
    ctx.fillText(label, lx, h - 5);
    const lw = ctx.measureText(label).width;
    boxes.push([lx - lw / 2, h - 16, lx + lw / 2, h - 4]);
  }
  cv.dataset.labels = JSON.stringify(boxes.map((b) => b.map((n) => Math.round(n * 10) / 10)));
  if (pts.length === 0) {
    ctx.fillStyle = "#98a2b3";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("Waiting for the first summary…", L + pw / 2, T + ph / 2);
    cv.setAttribute("aria-label", "Devices online: no summary yet");
    return;
  }

  const path = (key) => {
    ctx.beginPath();
    ctx.moveTo(x(pts[0].at), y(pts[0][key]));
    for (let i = 1; i < pts.length; i++) {
      ctx.lineTo(x(pts[i].at), y(pts[i - 1][key]));
      ctx.lineTo(x(pts[i].at), y(pts[i][key]));
    }
    ctx.lineTo(x(end), y(pts[pts.length - 1][key]));
  };

  ctx.save();
  ctx.beginPath();
  ctx.rect(L, T - 2, pw + 1, ph + 4);
  ctx.clip();
  // Offline: dashed grey.
  path("offline");
  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = "#98a2b3";
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.setLineDash([]);
  // Online: green with a soft fill.
  path("online");
  ctx.lineTo(x(end), y(0));
  ctx.lineTo(x(pts[0].at), y(0));
  ctx.closePath();
  const grad = ctx.createLinearGradient(0, T, 0, T + ph);
  grad.addColorStop(0, "rgba(22, 163, 74, 0.22)");
  grad.addColorStop(1, "rgba(22, 163, 74, 0.02)");
  ctx.fillStyle = grad;
  ctx.fill();
  path("online");
  ctx.strokeStyle = "#16a34a";
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  ctx.stroke();
  ctx.restore();

  ctx.fillStyle = "#16a34a";
  ctx.beginPath();
  ctx.arc(x(end), y(last.online), 3.5, 0, Math.PI * 2);
  ctx.fill();
  ctx.font = VALUE_FONT;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.fillText(String(last.online), x(end) + 7, y(last.online));
  boxes.push([x(end) + 7, y(last.online) - 7, x(end) + 7 + ctx.measureText(String(last.online)).width, y(last.online) + 7]);
  cv.dataset.labels = JSON.stringify(boxes.map((b) => b.map((n) => Math.round(n * 10) / 10)));
  cv.setAttribute("aria-label", "Devices online: " + last.online + " of " + (last.online + last.offline));
}

// ---- device panel ------------------------------------------------------------

function openDevice(sn) {
  if (S.selected !== sn) {
    const prev = S.rows.get(S.selected);
    if (prev) prev.tr.classList.remove("selected");
  }
  S.selected = sn;
  const r = S.rows.get(sn);
  if (r) r.tr.classList.add("selected");
  $("device").hidden = false;
  renderDevice();
  renderCommandResult();
  loadHistory();
  loadDeviceChart();
  $("device").scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function closeDevice() {
  const r = S.rows.get(S.selected);
  if (r) r.tr.classList.remove("selected");
  S.selected = null;
  S.historyReq++;
  S.dchart.req++;
  S.dchart.sn = "";
  $("device").hidden = true;
}

function statusCell(label, ...content) {
  const div = el("div");
  const dd = el("dd");
  dd.append(...content);
  div.append(el("dt", "", label), dd);
  return div;
}

function renderDevice() {
  const sn = S.selected;
  if (!sn) return;
  const d = S.devices.get(sn) || normalize({ sn });
  $("device").dataset.sn = sn;
  $("d-sn").textContent = sn;
  $("d-type").textContent = d.type || "unknown type";
  $("d-group").textContent = d.group || "no group";
  const state = $("d-state");
  state.className = "pill " + (d.online ? "online" : "offline");
  state.textContent = d.online ? "Online" : "Offline";
  $("d-since").textContent = sinceText(d);

  const grid = $("d-status");
  const cells = [statusCell("Battery", batteryNode(battery(d)))];
  const elec = field(d, "electricity");
  if (elec) {
    const dd = cells[0].querySelector("dd");
    if (typeof elec.code === "number" && elec.code !== 0) dd.append(...codeNodes("electricity", elec, false));
    if (elec.msg) dd.append(el("span", "battery-note", str(elec.msg)));
  }
  for (const name of MODEL_FIELDS) cells.push(statusCell(name, ...codeNodes(name, field(d, name), true)));
  const extra = {};
  for (const [k, v] of Object.entries(obj(d.status) || {})) {
    if (k !== "electricity" && !MODEL_FIELDS.includes(k)) extra[k] = v;
  }
  if (Object.keys(extra).length) {
    const c = statusCell("Other", el("span", "code-msg mono", compact(extra, 400)));
    c.style.gridColumn = "1 / -1";
    cells.push(c);
  }
  grid.replaceChildren(...cells);
  renderDeviceMeta(d);
  const viewer = S.role === "viewer";
  const admin = S.role === "admin";
  $("d-kick").hidden = !admin || !d.online;
  $("d-forget").hidden = !admin || d.online;
  renderAction();
  $("cmd-send").disabled = viewer || S.commands.get(sn)?.kind === "wait";
  $("cmd-note").textContent = viewer ? "Viewers cannot send commands." : d.online ? "" : "The device is offline: the hub will answer 503.";
}

function renderDeviceMeta(d) {
  const rows = [
    ["Node", d.online ? d.node || "—" : "— (offline)"],
    ["Address", d.online ? d.addr || "—" : "—"],
    ["Session", d.online ? d.session || "—" : "—"],
  ];
  const key = JSON.stringify(rows);
  const grid = $("d-session");
  if (grid.dataset.key !== key) {
    grid.dataset.key = key;
    grid.replaceChildren(...rows.flatMap(([k, v]) => {
      const dd = el("dd", "", v);
      dd.setAttribute("title", v);
      dd.dataset.field = k.toLowerCase();
      return [el("dt", "", k), dd];
    }));
  }
  const parts = [];
  parts.push("status " + (d.status_at ? ago(d.status_at) : "never reported"));
  parts.push("last seen " + ago(lastSeen(d)));
  $("d-meta").textContent = parts.join(" · ");
}

// ---- kick, forget ---------------------------------------------------------------

// confirmAction asks in a dialog; it resolves true when confirmed.
function confirmAction(title, text, ok) {
  const dlg = $("confirm");
  if (S.confirm) S.confirm(false);
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  return new Promise((resolve) => {
    S.confirm = (v) => {
      S.confirm = null;
      resolve(v);
    };
    dlg.returnValue = "";
    dlg.showModal();
    $("confirm-cancel").focus();
  });
}

function setAction(sn, kind, text) {
  S.actions.set(sn, { kind, text });
  if (S.selected === sn) renderAction();
}

function renderAction() {
  const box = $("d-action");
  const a = S.selected ? S.actions.get(S.selected) : null;
  box.hidden = !a;
  box.dataset.kind = a ? a.kind : "";
  box.textContent = a ? a.text : "";
  const busy = !!a && a.kind === "wait";
  $("d-kick").disabled = busy;
  $("d-forget").disabled = busy;
}

// actionError says why the hub refused a kick or a forget.
function actionError(what, err) {
  if (!(err instanceof HubError) || err.local) return what + " failed: " + describeError(err);
  switch (err.code) {
    case 503:
      return what + " failed (503): " + (err.msg || "the device is not connected");
    case 403:
      return what + " refused (403): " + (err.msg || "not allowed");
    case 409:
      return what + " refused (409): " + (err.msg || "the device is online");
    default:
      return what + " failed: " + describeError(err);
  }
}

async function kickDevice() {
  const sn = S.selected;
  const hub = S.hub;
  if (!sn || !hub) return;
  const ok = await confirmAction("Kick " + sn + "?", "Its sessions end wherever they are, with close code 4002 (kicked). A device that reconnects comes back.", "Kick");
  if (!ok || S.hub !== hub) return;
  setAction(sn, "wait", "Kicking " + sn + "…");
  try {
    await hub.request("/admin/kick", { sn });
    setAction(sn, "ok", "Kicked " + sn + ": its sessions ended.");
  } catch (err) {
    setAction(sn, "err", actionError("Kick", err));
  }
}

async function forgetDevice() {
  const sn = S.selected;
  const hub = S.hub;
  if (!sn || !hub) return;
  const ok = await confirmAction("Forget " + sn + "?", "Its registry entry and its status, event and presence history are deleted, and it leaves the fleet list. A device that connects again reappears.", "Forget");
  if (!ok || S.hub !== hub) return;
  setAction(sn, "wait", "Forgetting " + sn + "…");
  try {
    await hub.request("/admin/forget", { sn });
    S.actions.delete(sn);
    if (S.selected === sn) closeDevice();
    removeDevices([sn]);
    renderNow();
    flashConn("Forgot " + sn);
  } catch (err) {
    setAction(sn, "err", actionError("Forget", err));
  }
}

// ---- nodes ---------------------------------------------------------------------

async function loadNodes() {
  const hub = S.hub;
  if (!hub || S.conn.state !== "connected") return;
  const req = ++S.nodes.req;
  S.nodes.at = Date.now();
  try {
    const v = await hub.request("/admin/nodes", {});
    if (req !== S.nodes.req || S.hub !== hub) return;
    S.nodes.list = Array.isArray(v.nodes) ? v.nodes.filter(obj) : [];
    renderNodes("");
  } catch (err) {
    if (req !== S.nodes.req || S.hub !== hub) return;
    renderNodes("Could not read the nodes: " + describeError(err));
  }
}

function renderNodes(problem) {
  const list = S.nodes.list || [];
  const self = S.hub && S.hub.session ? str(S.hub.session.node) : "";
  $("nodes-body").replaceChildren(...list.map((n) => {
    const tr = el("tr", str(n.id) === self ? "self" : "");
    tr.dataset.id = str(n.id);
    const since = el("td", "", n.since ? fmtDateTime(num(n.since)) + " (" + ago(num(n.since)).replace(" ago", "") + ")" : "—");
    since.setAttribute("title", absTitle(num(n.since)));
    tr.append(el("td", "", str(n.id)), el("td", "mono", str(n.addr) || "—"), since, el("td", "num", String(num(n.sessions))));
    return tr;
  }));
  $("nodes-count").textContent = S.nodes.list ? list.length + (list.length === 1 ? " node" : " nodes") : "";
  const empty = $("nodes-empty");
  empty.hidden = !problem && list.length > 0;
  empty.textContent = problem || (S.nodes.list ? "No live node." : "Loading the nodes…");
}

// ---- device chart ----------------------------------------------------------------

// svg makes an element in the namespace of the page's own <svg>.
function svg(tag, attrs, text) {
  const e = document.createElementNS($("d-chart").namespaceURI, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

async function loadDeviceChart() {
  const sn = S.selected;
  const hub = S.hub;
  if (!sn || !hub) return;
  const req = ++S.dchart.req;
  S.dchart.sn = sn;
  S.dchart.records = [];
  S.dchart.loading = true;
  drawDeviceChart();
  const recs = await historyOf(hub, sn, "status", DEVICE_CHART_LIMIT);
  if (req !== S.dchart.req) return;
  S.dchart.loading = false;
  S.dchart.failed = recs === null;
  const live = S.dchart.records;
  S.dchart.records = (recs || []).filter((r) => num(r.at) && obj(r.status)).reverse();
  const lastAt = S.dchart.records.length ? S.dchart.records[S.dchart.records.length - 1].at : 0;
  for (const r of live) if (num(r.at) > lastAt) S.dchart.records.push(r);
  drawDeviceChart();
}

function addDeviceChartLive(sn, rec) {
  if (S.dchart.sn !== sn || S.selected !== sn || !obj(rec.status)) return;
  const list = S.dchart.records;
  if (list.length && num(rec.at) <= num(list[list.length - 1].at)) return;
  list.push(rec);
  while (list.length > DEVICE_CHART_LIMIT * 2) list.shift();
  drawDeviceChart();
}

// drawDeviceChart draws the device's battery over time and, below it, a
// band per model field: green while its code is 0, amber with the code
// while it is not. Labels stay inside the drawing (data-labels notes their
// boxes).
function drawDeviceChart() {
  const box = $("d-chart");
  if (!box || $("device").hidden) return;
  const w = Math.round(box.clientWidth) || 320;
  const h = Math.round(box.clientHeight) || 190;
  box.setAttribute("viewBox", "0 0 " + w + " " + h);
  const recs = S.dchart.records;
  box.dataset.points = String(recs.length);
  const parts = [];
  const note = $("d-chart-note");
  if (!recs.length) {
    parts.push(svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle" }, S.dchart.loading ? "Loading…" : S.dchart.failed ? "History unavailable" : "No status reports yet"));
    box.replaceChildren(...parts);
    note.textContent = "";
    return;
  }
  const end = Math.max(now(), num(recs[recs.length - 1].at));
  const start = Math.min(num(recs[0].at), end - 60000);
  const bandH = 14, bandGap = 4;
  const L = 64, R = 10, T = 8;
  const B = 18 + MODEL_FIELDS.length * (bandH + bandGap) + 6;
  const pw = Math.max(10, w - L - R);
  const ph = Math.max(20, h - T - B);
  const x = (at) => L + ((at - start) / Math.max(1, end - start)) * pw;
  const y = (pct) => T + ph - (pct / 100) * ph;
  for (const v of [0, 50, 100]) {
    const yy = Math.round(y(v)) + 0.5;
    parts.push(svg("line", { class: v === 0 ? "axis" : "grid", x1: L, x2: L + pw, y1: yy, y2: yy }));
    parts.push(svg("text", { x: L - 6, y: yy + 3.5, "text-anchor": "end", "data-label": "y" }, v + "%"));
  }
  // Battery: a line through the reports that have a percent.
  const pts = recs.map((r) => [num(r.at), battery({ status: r.status })]).filter(([, b]) => b !== null);
  if (pts.length) {
    const path = pts.map(([at, b], i) => (i ? "L" : "M") + x(at).toFixed(1) + " " + y(b).toFixed(1)).join(" ") + " L" + x(end).toFixed(1) + " " + y(pts[pts.length - 1][1]).toFixed(1);
    parts.push(svg("path", { class: "battery-line", d: path }));
    const [lat, lb] = pts[pts.length - 1];
    parts.push(svg("circle", { class: "battery-dot", cx: x(lat), cy: y(lb), r: 3 }));
  }
  // Status codes: one band per field.
  MODEL_FIELDS.forEach((name, i) => {
    const top = T + ph + 8 + i * (bandH + bandGap);
    parts.push(svg("text", { x: L - 6, y: top + bandH - 3, "text-anchor": "end", "data-label": "band" }, name));
    for (let j = 0; j < recs.length; j++) {
      const f = obj(recs[j].status[name]);
      if (!f || typeof f.code !== "number") continue;
      const x0 = x(num(recs[j].at));
      const x1 = j + 1 < recs.length ? x(num(recs[j + 1].at)) : x(end);
      const rect = svg("rect", { class: f.code === 0 ? "seg-ok" : "seg-bad", x: x0.toFixed(1), y: top, width: Math.max(1, x1 - x0).toFixed(1), height: bandH });
      rect.append(svg("title", {}, name + " " + f.code + (fieldText(name, f) ? ": " + fieldText(name, f) : "")));
      parts.push(rect);
      if (f.code !== 0 && x1 - x0 > 18) parts.push(svg("text", { class: "seg-bad-text", x: x0 + 3, y: top + bandH - 3, "data-label": "code" }, String(f.code)));
    }
  });
  const axisY = h - 4;
  parts.push(svg("text", { x: L, y: axisY, "text-anchor": "start", "data-label": "x" }, fmtDateTime(start)));
  parts.push(svg("text", { x: L + pw, y: axisY, "text-anchor": "end", "data-label": "x" }, "now"));
  box.replaceChildren(...parts);
  note.textContent = recs.length + (recs.length === 1 ? " report" : " reports") + " · " + fmtDuration(end - start);
}

function historyItem(topic, rec) {
  const li = el("li");
  const at = num(rec.at);
  const time = el("span", "time", fmtDateTime(at));
  time.setAttribute("title", absTitle(at));
  const line = el("div", "line");
  if (topic === "presence") {
    line.append(pill(rec.online === true), el("span", "", str(rec.reason)));
    if (rec.node) line.append(el("span", "muted", "on " + str(rec.node)));
  } else if (topic === "event") {
    const prio = PRIORITIES.includes(rec.priority) ? rec.priority : "normal";
    line.append(el("span", "prio " + prio, prio), el("span", "feed-name", str(rec.event)));
    const data = obj(rec.data);
    if (data && Object.keys(data).length) {
      const det = el("span", "detail", compact(data, 300));
      det.setAttribute("title", compact(data, 4000));
      line.append(det);
    }
  } else {
    const st = obj(rec.status) || {};
    const b = battery({ status: st });
    if (b !== null) line.append(el("span", "tag", "battery " + Math.round(b) + "%"));
    for (const name of MODEL_FIELDS) {
      const f = obj(st[name]);
      if (f && f.code !== undefined) {
        const t = el("span", "code " + (f.code === 0 ? "ok" : "bad"), name.slice(0, 3) + " " + str(f.code));
        const words = fieldText(name, f);
        if (words) t.setAttribute("title", words);
        line.append(t);
      }
    }
    const rest = {};
    for (const [k, v] of Object.entries(st)) if (k !== "electricity" && !MODEL_FIELDS.includes(k)) rest[k] = v;
    if (Object.keys(rest).length) line.append(el("span", "detail", compact(rest, 200)));
    if (!line.childNodes.length) line.append(el("span", "muted", "empty report"));
  }
  li.append(time, line);
  return li;
}

async function loadHistory() {
  const sn = S.selected;
  const topic = S.topic;
  if (!sn || !S.hub) return;
  const req = ++S.historyReq;
  const list = $("history");
  const empty = $("history-empty");
  for (const t of document.querySelectorAll(".tab[data-topic]")) t.setAttribute("aria-selected", String(t.dataset.topic === topic));
  list.replaceChildren();
  empty.hidden = false;
  empty.textContent = "Loading…";
  try {
    const v = await S.hub.request("/admin/history", { sn, topic, limit: HISTORY_LIMIT });
    if (req !== S.historyReq) return;
    const records = Array.isArray(v.records) ? v.records : [];
    list.replaceChildren(...records.filter(obj).map((r) => historyItem(topic, r)));
    empty.hidden = records.length > 0;
    empty.textContent = "No " + (topic === "event" ? "events" : topic + " records") + " yet.";
  } catch (err) {
    if (req !== S.historyReq) return;
    empty.hidden = false;
    empty.textContent = "Could not load the history: " + describeError(err);
  }
}

function addHistoryLive(sn, topic, rec) {
  if (S.selected !== sn || S.topic !== topic || $("device").hidden) return;
  const list = $("history");
  list.prepend(historyItem(topic, rec));
  while (list.children.length > HISTORY_LIMIT * 2) list.lastElementChild.remove();
  $("history-empty").hidden = true;
}

function describeError(err) {
  if (err instanceof HubError) return err.code + (err.msg ? " " + err.msg : "");
  return String(err && err.message ? err.message : err);
}

// ---- commands ------------------------------------------------------------------

function setCommandResult(sn, kind, head, body) {
  S.commands.set(sn, { kind, head, body });
  if (S.selected === sn) renderCommandResult();
}

function renderCommandResult() {
  const box = $("cmd-result");
  const r = S.selected ? S.commands.get(S.selected) : null;
  if (!r) {
    box.hidden = true;
    box.dataset.status = "";
    $("cmd-send").disabled = S.role === "viewer";
    return;
  }
  box.hidden = false;
  box.className = "cmd-result " + r.kind;
  box.dataset.status = r.kind;
  $("cmd-result-head").textContent = r.head;
  $("cmd-result-body").textContent = r.body || "";
  $("cmd-send").disabled = r.kind === "wait" || S.role === "viewer";
}

async function sendCommand(e) {
  e.preventDefault();
  const sn = S.selected;
  if (!sn || !S.hub) return;
  const service = $("cmd-service").value.trim();
  const timeout = Number($("cmd-timeout").value);
  let args;
  try {
    args = JSON.parse($("cmd-args").value.trim() || "{}");
  } catch (err) {
    setCommandResult(sn, "err", "The arguments are not valid JSON", String(err.message || err));
    return;
  }
  if (!obj(args)) {
    setCommandResult(sn, "err", "The arguments must be a JSON object", "");
    return;
  }
  if (!service.startsWith("/") || service.length < 2) {
    setCommandResult(sn, "err", "The service must be a path such as /cmd/stop", "");
    return;
  }
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 60000) {
    setCommandResult(sn, "err", "The timeout must be 1 to 60000 ms", "");
    return;
  }
  setCommandResult(sn, "wait", "Waiting for " + sn + " to answer " + service + "…", "");
  const t0 = performance.now();
  try {
    const values = await S.hub.request("/admin/command", { sn, service, args, timeout_ms: timeout }, { timeout: timeout + 5000 });
    const ms = Math.round(performance.now() - t0);
    setCommandResult(sn, "ok", "✓ " + service + " answered: code 0 · " + ms + " ms", JSON.stringify(values, null, 2));
  } catch (err) {
    const ms = Math.round(performance.now() - t0);
    if (err instanceof HubError) {
      const values = obj(err.values) && Object.keys(err.values).length ? JSON.stringify(err.values, null, 2) : "";
      setCommandResult(sn, "err", "✗ Error " + err.code + (err.msg ? ": " + err.msg : "") + " · " + ms + " ms", values);
    } else {
      setCommandResult(sn, "err", "✗ " + describeError(err), "");
    }
  }
}

// ---- connection, login -----------------------------------------------------------

let connFlash = null;

function flashConn(text) {
  connFlash = { text, until: Date.now() + 3000 };
  renderConn(S.conn);
}

function renderConn(s) {
  S.conn = s || { state: "idle" };
  s = S.conn;
  const conn = $("conn");
  conn.dataset.state = s.state;
  conn.dataset.retry = String(!!s.willReconnect);
  conn.dataset.connects = String(S.hub ? S.hub.connects : 0);
  let text;
  switch (s.state) {
    case "connecting":
      text = s.attempt > 0 ? "Reconnecting… (attempt " + (s.attempt + 1) + ")" : "Connecting…";
      break;
    case "connected":
      text = "Live" + (S.hub && S.hub.session && S.hub.session.node ? " · node " + S.hub.session.node : "");
      if (connFlash && connFlash.until > Date.now()) text = connFlash.text;
      break;
    case "disconnected": {
      const why = (s.reason || closeText(s.code)) + (s.code && s.code !== 401 ? " (" + s.code + ")" : "");
      if (s.willReconnect) {
        const left = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
        text = "Disconnected: " + why + " · retrying " + (left > 0 ? "in " + left + "s" : "now");
      } else {
        text = "Disconnected: " + why;
      }
      break;
    }
    default:
      text = "Not connected";
  }
  $("conn-text").textContent = text;
  $("conn-retry").hidden = !(s.state === "disconnected" && s.willReconnect);
  $("app-view").classList.toggle("stale", s.state !== "connected" && S.haveSnapshot);
}

function showLogin(message) {
  $("app-view").hidden = true;
  $("user-box").hidden = true;
  $("login-view").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  const submit = $("login-submit");
  submit.disabled = false;
  submit.textContent = "Sign in";
  const user = sessionStorage.getItem(USER_KEY);
  if (user && !$("login-user").value) $("login-user").value = user;
  ($("login-user").value ? $("login-pass") : $("login-user")).focus();
}

function showApp() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("user-box").hidden = false;
  requestAnimationFrame(drawChart);
}

function resetData() {
  S.snapshotGen++; // a listing still coming in stops
  S.devices.clear();
  S.fleet.clear();
  S.view = null;
  for (const [sn, r] of S.rows) releaseRow(sn, r);
  S.dirty.clear();
  S.flash.clear();
  S.counts = { online: 0, low: 0 };
  S.types.clear();
  S.groups.clear();
  S.summary = [];
  S.commands.clear();
  S.actions.clear();
  S.feedKeys.clear();
  S.backfilled = false;
  S.chartFilled = false;
  S.nodes = { req: S.nodes.req + 1, at: 0, list: null };
  renderNodes("");
  S.haveSnapshot = false;
  S.loading = false;
  S.optionsKey = "";
  $("table-wrap").scrollTop = 0;
  $("feed").replaceChildren();
  updateFeedMeta();
  closeDevice();
  refreshOptions();
  applyFilters();
  drawChart();
}

async function syncClock(hub) {
  try {
    const t0 = Date.now();
    const v = await hub.request("/ping", {});
    const t1 = Date.now();
    if (typeof v.server_time_ms === "number") S.skew = v.server_time_ms - Math.round((t0 + t1) / 2);
  } catch (e) {
    /* keep the local clock */
  }
}

function startHub(creds) {
  if (S.hub) S.hub.dispose();
  S.resubscribes = 0;
  const hub = new Hub("/ws", Object.assign({ backoffBase: 500, backoffMax: 30000 }, creds));
  S.hub = hub;
  const mine = (fn) => (...a) => {
    if (S.hub === hub) fn(...a);
  };
  hub.on("state", mine((s) => {
    renderConn(s);
    if (s.state === "disconnected" && !s.willReconnect && s.code !== 401 && s.code !== 1000) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("Session ended: " + (s.reason || closeText(s.code)) + " (" + s.code + "). Please sign in again.");
    } else if (s.state === "disconnected" && s.willReconnect && !$("login-view").hidden) {
      const err = $("login-error");
      err.hidden = false;
      err.textContent = "Cannot reach the hub (" + (s.reason || closeText(s.code)) + "); retrying…";
      $("login-submit").disabled = false;
      $("login-submit").textContent = "Sign in";
    }
  }));
  hub.on("auth", mine((v) => {
    if (hub.token) sessionStorage.setItem(TOKEN_KEY, hub.token);
    if (v.user) sessionStorage.setItem(USER_KEY, str(v.user));
    S.role = str(v.role);
    $("user-name").textContent = str(v.user) || "signed in";
    $("user-role").textContent = S.role;
    $("login-pass").value = "";
    showApp();
    renderConn(S.conn);
    syncClock(hub);
    loadNodes();
    if (S.selected) renderDevice();
  }));
  hub.on("authError", mine((err) => {
    sessionStorage.removeItem(TOKEN_KEY); // the hub stops by itself
    showLogin(creds.password ? err.msg || "Wrong username or password." : "Your session has expired. Please sign in again.");
  }));
  hub.on("snapshot", mine(applySnapshot));
  hub.on("/push/presence", mine(onPresence));
  hub.on("/push/status", mine(onStatus));
  hub.on("/push/event", mine(onEvent));
  hub.on("/push/summary", mine(onSummary));
  hub.on("error", mine((err) => {
    console.warn("fleethub:", err);
    // A replay after a reconnect that the hub could not answer yet.
    if (err instanceof HubError && err.service === "/admin/subscribe" && retryable(err)) resubscribe(hub);
  }));
  subscribeFleet(hub);
  return hub;
}

// retryable is whether the hub may answer the same subscribe later: 503
// (for example while its device directory is elected or loads) or 429.
function retryable(err) {
  return err instanceof HubError && !err.local && (err.code === 503 || err.code === 429);
}

// subscribeFleet subscribes to the whole fleet; a subscribe the hub cannot
// answer yet is sent again, later and later, until it is.
function subscribeFleet(hub) {
  hub.subscribe({ all: true, topics: TOPICS }).then(
    () => {
      if (S.hub === hub) S.resubscribes = 0;
    },
    (err) => {
      if (S.hub !== hub) return;
      if (retryable(err)) resubscribe(hub);
      else if (!(err instanceof HubError && err.local)) console.error("fleethub: subscribe failed:", err);
    },
  );
}

function resubscribe(hub) {
  if (S.resubscribeTimer) return; // one is planned already
  const wait = Math.min(30000, 1000 * 2 ** Math.min(S.resubscribes, 5));
  S.resubscribes++;
  S.resubscribeTimer = setTimeout(() => {
    S.resubscribeTimer = 0;
    if (S.hub === hub) subscribeFleet(hub);
  }, wait);
}

function tick() {
  for (const [sn, r] of S.rows) {
    const d = S.devices.get(sn);
    if (!d) continue;
    setText(r.c.since, sinceText(d));
    setText(r.c.seen, ago(lastSeen(d)));
  }
  if (S.selected && !$("device").hidden) {
    const d = S.devices.get(S.selected);
    if (d) {
      $("d-since").textContent = sinceText(d);
      renderDeviceMeta(d);
    }
  }
  if (S.conn.state === "disconnected" || (connFlash && connFlash.until <= Date.now())) {
    if (connFlash && connFlash.until <= Date.now()) connFlash = null;
    renderConn(S.conn);
  }
  drawChart();
  if (S.hub && S.conn.state === "connected" && Date.now() - S.nodes.at >= NODES_EVERY * 1000) loadNodes();
}

function init() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const username = $("login-user").value.trim();
    const password = $("login-pass").value;
    if (!username || !password) return;
    resetData();
    $("login-error").hidden = true;
    $("login-submit").disabled = true;
    $("login-submit").textContent = "Signing in…";
    startHub({ username, password });
  });
  $("logout").addEventListener("click", () => {
    if (S.hub) S.hub.dispose();
    S.hub = null;
    sessionStorage.removeItem(TOKEN_KEY);
    resetData();
    renderConn({ state: "idle" });
    $("conn-text").textContent = "Signed out";
    showLogin("");
  });
  $("conn-retry").addEventListener("click", () => S.hub && S.hub.reconnect());
  $("f-search").addEventListener("input", (e) => {
    S.filters.q = e.target.value.trim().toLowerCase();
    applyFilters();
  });
  for (const [id, key] of [["f-type", "type"], ["f-group", "group"], ["f-online", "online"]]) {
    $(id).addEventListener("change", (e) => {
      S.filters[key] = e.target.value;
      applyFilters();
    });
  }
  for (const th of document.querySelectorAll("#fleet-table th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      const dir = S.sort.key === key ? -S.sort.dir : 1;
      for (const o of document.querySelectorAll("#fleet-table th[data-sort]")) o.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      setSort(key, dir);
    });
  }
  const body = $("fleet-body");
  body.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-sn]");
    if (tr) openDevice(tr.dataset.sn);
  });
  body.addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr[data-sn]");
    if (tr && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      openDevice(tr.dataset.sn);
    }
  });
  // Scrolling draws the rows that come into view, once a frame; the header
  // follows the rows sideways.
  $("table-wrap").addEventListener("scroll", () => {
    const left = $("table-wrap").scrollLeft;
    if ($("table-head").scrollLeft !== left) $("table-head").scrollLeft = left;
    schedule();
  }, { passive: true });
  window.addEventListener("resize", schedule);
  $("feed-clear").addEventListener("click", () => {
    S.feedKeys.clear();
    $("feed").replaceChildren();
    updateFeedMeta();
  });
  $("d-close").addEventListener("click", closeDevice);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && S.selected && !e.target.closest("input, textarea, select")) closeDevice();
  });
  for (const tab of document.querySelectorAll(".tab[data-topic]")) {
    tab.addEventListener("click", () => {
      S.topic = tab.dataset.topic;
      loadHistory();
    });
  }
  $("h-refresh").addEventListener("click", loadHistory);
  $("cmd-form").addEventListener("submit", sendCommand);
  $("d-kick").addEventListener("click", kickDevice);
  $("d-forget").addEventListener("click", forgetDevice);
  $("nodes-refresh").addEventListener("click", loadNodes);
  $("confirm").addEventListener("close", () => {
    // A close event comes after the dialog closed, as a task of its own: by
    // then the dialog may be open again for the next question, whose
    // answer this is not.
    if (S.confirm && !$("confirm").open) S.confirm($("confirm").returnValue === "ok");
  });
  window.addEventListener("resize", drawDeviceChart);
  window.addEventListener("resize", drawChart);
  setInterval(tick, 1000);

  renderConn({ state: "idle" });
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    showApp();
    startHub({ token });
  } else {
    showLogin("");
  }
}

init();
