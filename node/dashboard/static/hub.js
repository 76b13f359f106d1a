// hub.js: a browser client for the fleethub WebSocket protocol (docs/protocol.md).
//
//   import { Hub } from "/hub.js";            // as an ES module
//   <script src="/hub.classic.js"></script>   // as a plain script: window.FleetHub.Hub
//
//   const hub = new Hub("/ws", { username: "admin", password: "..." }); // or { token }
//   const dev = new Hub("/ws", { sn: "R-001", key: "<hubctl device-key R-001>" }); // a device
//   hub.on("state", (s) => console.log(s.state, s.code, s.reason));
//   hub.on("/push/presence", (values) => ...);
//   const snap = await hub.subscribe({ all: true, topics: ["presence", "status"] });
//   const answer = await hub.request("/admin/command", { sn: "R-001", service: "/cmd/stop" });
//
// The client authenticates on every (re)connect, resuming with the token of
// the last login (/auth/token) and falling back to /auth/login when it holds
// a password. It reconnects by itself with capped exponential backoff and
// full jitter, and replays its subscriptions after a reconnect, each replay
// reporting a fresh snapshot ("snapshot" event). It stops for good on close
// codes 4001 (replaced), 4002 (kicked) and 1008 (policy), and when the hub
// refuses its credentials ("authError" event). The one 4002 that is not
// final is a device's whose registry entry changed (reason "registry entry
// changed"): it reconnects, with the same backoff, and gets its new type and
// group. A device signs /auth/device afresh on every connect, with its key
// (the hex that `hubctl device-key SN` prints, or the 32 bytes) and the Web
// Crypto API, which browsers offer only in a secure context (https, or
// http on localhost).
//
// Events for on(): "state", "auth", "authError", "snapshot", "error",
// "request" (a request sent to this session, for device clients), "*"
// (every push), and any push service such as "/push/status".

const VERSION = "1";

const DEFAULTS = Object.freeze({
  requestTimeout: 10000, // ms a request may wait for its answer, queueing included
  authTimeout: 10000, // ms an auth request may take
  backoffBase: 500, // ms: first reconnect delay ceiling
  backoffMax: 30000, // ms: largest reconnect delay ceiling
  maxMessageBytes: 65536, // the node's --max-message-bytes; larger requests fail locally with 413
  heartbeat: true, // send /ping when the connection has been silent for a ping interval
  autoConnect: true,
});

// Close codes after which the client does not reconnect by itself (but see
// REGISTRY_CHANGED).
const FINAL_CLOSE_CODES = Object.freeze([4001, 4002, 1008]);

// The reason of the 4002 that ends a device's session because its registry
// entry changed: the device reconnects to get its new attributes.
const REGISTRY_CHANGED = "registry entry changed";

/** isFinalClose reports whether a close with this code and reason ends the client for good. */
function isFinalClose(code, reason) {
  if (code === 4002 && reason === REGISTRY_CHANGED) return false;
  return FINAL_CLOSE_CODES.includes(code);
}

const CLOSE_TEXT = Object.freeze({
  1000: "closed",
  1001: "going away",
  1005: "closed without a code",
  1006: "connection lost",
  1008: "policy violation",
  1009: "message too large",
  1011: "internal server error",
  1012: "node restarting",
  1013: "try again later",
  4000: "client reset",
  4001: "replaced by a newer session",
  4002: "kicked",
  4003: "token expired",
  4008: "slow consumer",
});

/** closeText describes a WebSocket close code in a few words. */
function closeText(code) {
  return CLOSE_TEXT[code] || (code ? "closed (" + code + ")" : "not connected");
}

/** HubError is a failed request: the hub's code, msg and values. */
class HubError extends Error {
  constructor(code, msg, values, service, local) {
    super((service ? service + ": " : "") + code + " " + (msg || ""));
    this.name = "HubError";
    this.code = code;
    this.msg = msg || "";
    this.values = values && typeof values === "object" ? values : {};
    this.service = service || "";
    // local is true when the client produced the error itself (timeout,
    // connection lost, closed) rather than the hub.
    this.local = !!local;
  }
}

/**
 * splitFrame parses one text frame into its messages: newline-delimited
 * JSON, blank lines skipped, a "\r" before each "\n" ignored. Lines that are
 * not JSON objects are returned in errors.
 */
function splitFrame(data) {
  const messages = [];
  const errors = [];
  const lines = String(data).split("\n");
  for (let line of lines) {
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line.trim() === "") continue;
    let m;
    try {
      m = JSON.parse(line);
    } catch (e) {
      errors.push({ line, error: String(e && e.message ? e.message : e) });
      continue;
    }
    if (m === null || typeof m !== "object" || Array.isArray(m)) {
      errors.push({ line, error: "not a JSON object" });
      continue;
    }
    messages.push(m);
  }
  return { messages, errors };
}

/**
 * backoffDelay is the delay before reconnect attempt `attempt` (0-based):
 * "full jitter", a uniform random time between 0 and
 * min(cap, base * 2^attempt).
 */
function backoffDelay(attempt, base, cap, random) {
  const rnd = random || Math.random;
  const ceiling = Math.min(cap, base * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(rnd() * ceiling);
}

function resolveURL(url) {
  const loc = typeof location !== "undefined" ? location : null;
  if (!url) url = "/ws";
  if (/^wss?:\/\//i.test(url)) return url;
  if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, "ws");
  if (!loc) throw new Error("hub.js: a relative URL needs a page location: " + url);
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  if (url.startsWith("//")) return scheme + url;
  const path = url.startsWith("/") ? url : "/" + url;
  return scheme + "//" + loc.host + path;
}

const DEVICE_KEY_BYTES = 32;

/**
 * deviceKeyBytes turns a device key, the hex that `hubctl device-key SN`
 * prints (white space around it ignored) or its 32 bytes, into bytes; it
 * throws an Error saying what is wrong with anything else.
 */
function deviceKeyBytes(key) {
  if (typeof key === "string") {
    const s = key.trim();
    const bad = s.search(/[^0-9a-fA-F]/);
    if (bad >= 0) {
      throw new Error("hub.js: key: " + JSON.stringify(s[bad]) + " at offset " + bad + " is not a hex digit, want the 64 hex digits hubctl device-key prints");
    }
    if (s.length !== 2 * DEVICE_KEY_BYTES) throw new Error("hub.js: key: " + s.length + " hex digits, want " + 2 * DEVICE_KEY_BYTES);
    const out = new Uint8Array(DEVICE_KEY_BYTES);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
    return out;
  }
  let bytes = null;
  if (key instanceof ArrayBuffer) bytes = new Uint8Array(key);
  else if (ArrayBuffer.isView(key)) bytes = new Uint8Array(key.buffer, key.byteOffset, key.byteLength);
  if (!bytes) throw new Error("hub.js: key: want the hex that hubctl device-key prints, or a Uint8Array of its " + DEVICE_KEY_BYTES + " bytes");
  if (bytes.length !== DEVICE_KEY_BYTES) throw new Error("hub.js: key: " + bytes.length + " bytes, want " + DEVICE_KEY_BYTES);
  return new Uint8Array(bytes); // a copy: the caller may change or zero its own
}

function toHex(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += (b < 16 ? "0" : "") + b.toString(16);
  return s;
}

/**
 * deviceSignature is hex(HMAC-SHA256(key, sn + "\n" + ts + "\n" + nonce)),
 * the sig of /auth/device (docs/protocol.md), by the Web Crypto API.
 */
async function deviceSignature(subtle, key, sn, ts, nonce) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await subtle.sign("HMAC", k, new TextEncoder().encode(sn + "\n" + ts + "\n" + nonce));
  return toHex(mac);
}

function utf8Length(s) {
  if (typeof TextEncoder !== "undefined") return new TextEncoder().encode(s).length;
  return s.length * 3;
}

/** Hub is one logical connection to a fleethub node. */
class Hub {
  /**
   * @param {string} url  ws(s)://host/ws, http(s)://host/ws, or a path such as "/ws"
   * @param {object} opts token, or username and password, or (a device) sn and key
   *                      with an optional type; plus DEFAULTS overrides, and
   *                      WebSocket (a constructor, for tests and non-browser use)
   */
  constructor(url, opts) {
    opts = opts || {};
    this.url = resolveURL(url);
    this.opts = Object.assign({}, DEFAULTS, opts);
    delete this.opts.password; // kept below, not in a copy that may be logged
    delete this.opts.key;
    this.token = opts.token || null;
    this._username = opts.username != null ? String(opts.username) : null;
    this._password = opts.password != null ? String(opts.password) : null;
    this._device = null;
    if (opts.sn != null) {
      if (this.token || this._username !== null) throw new Error("hub.js: give a device's sn and key, or a token, or a username and password: not several");
      const subtle = typeof crypto !== "undefined" && crypto && crypto.subtle;
      if (!subtle) throw new Error("hub.js: a device signs with the Web Crypto API, which this page lacks (it needs a secure context: https, or http on localhost)");
      this._device = { sn: String(opts.sn), key: deviceKeyBytes(opts.key), type: opts.type != null ? String(opts.type) : "", subtle };
    }
    this._WebSocket = opts.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
    if (!this._WebSocket) throw new Error("hub.js: no WebSocket implementation");

    this.state = "idle"; // idle | connecting | connected | disconnected
    this.session = null; // the values of the last successful auth
    this.connects = 0; // successful authentications so far
    this.lastClose = null; // {code, reason} of the last closed connection

    this._listeners = new Map();
    this._pending = new Map(); // request_id -> entry, sent and not yet answered
    this._queue = []; // entries waiting for a connection
    this._subs = []; // {args, key, waiters} replayed after every reconnect
    this._seq = 0;
    this._ws = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._heartbeatTimer = null;
    this._lastRx = 0;
    this._stopped = false; // no more reconnects until connect()

    if (typeof window !== "undefined" && window.addEventListener) {
      // Reconnect at once when the browser comes back online.
      this._onOnline = () => {
        if (this._retryTimer) this.reconnect();
      };
      window.addEventListener("online", this._onOnline);
    }
    // Connect after the caller has had a chance to register its handlers,
    // so that they see the first "connecting".
    if (this.opts.autoConnect) {
      Promise.resolve().then(() => {
        if (this.state === "idle" && !this._stopped) this.connect().catch(() => {}); // failures are events
      });
    }
  }

  // ---- events -------------------------------------------------------------

  /** on registers handler for an event or push service; it returns a function that removes it. */
  on(event, handler) {
    if (typeof handler !== "function") throw new TypeError("hub.on: handler must be a function");
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(handler);
    return () => this.off(event, handler);
  }

  off(event, handler) {
    const set = this._listeners.get(event);
    if (set) set.delete(handler);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of Array.from(set)) {
      try {
        fn(...args);
      } catch (e) {
        if (typeof console !== "undefined") console.error("hub.js: handler for " + event + " failed:", e);
      }
    }
  }

  _setState(state, detail) {
    this.state = state;
    const d = Object.assign({ state, connects: this.connects }, detail || {});
    this._emit("state", d);
  }

  // ---- connection ---------------------------------------------------------

  /** connect opens the connection (again, after close()); it resolves once authenticated. */
  connect() {
    this._stopped = false;
    if (!this._ws && !this._retryTimer && this.state !== "connected") {
      this._attempt = 0;
      this._open();
    }
    return this.ready();
  }

  /** ready resolves when the hub is connected and authenticated, and rejects when it stops for good. */
  ready() {
    if (this.state === "connected") return Promise.resolve(this.session);
    if (this._stopped) return Promise.reject(new HubError(503, "not connected: " + this._stopReason(), {}, "", true));
    return new Promise((resolve, reject) => {
      const offState = this.on("state", (s) => {
        if (s.state === "connected") {
          offState();
          resolve(this.session);
        } else if (s.state === "disconnected" && !s.willReconnect) {
          offState();
          reject(new HubError(s.code === 401 ? 401 : 503, "not connected: " + (s.reason || closeText(s.code)), {}, "", true));
        }
      });
    });
  }

  /** reconnect drops the current connection, if any, and connects again now. */
  reconnect() {
    this._stopped = false;
    if (this._retryTimer) {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
    if (this._ws) {
      const ws = this._ws;
      this._closed(ws, 4000, "client reset");
      this._safeClose(ws, 4000, "client reset");
      if (this._retryTimer) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
      }
    }
    this._open();
  }

  /** close ends the connection for good (until connect()). Waiting requests fail. */
  close(reason) {
    this._stopped = true;
    if (this._retryTimer) {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
    const why = reason || "client closed";
    const ws = this._ws;
    if (ws) {
      this._closed(ws, 1000, why);
      this._safeClose(ws, 1000, why);
      return;
    }
    this._failQueue("hub closed");
    if (this.state !== "idle") {
      // Waiting to reconnect: that wait is over.
      this.lastClose = { code: 1000, reason: why };
      this._setState("disconnected", { code: 1000, reason: why, willReconnect: false });
    }
  }

  /** dispose closes the hub and removes its listeners. */
  dispose() {
    this.close("disposed");
    if (this._onOnline) window.removeEventListener("online", this._onOnline);
    this._listeners.clear();
  }

  _stopReason() {
    return this.lastClose ? this.lastClose.reason || closeText(this.lastClose.code) : "closed";
  }

  _open() {
    this._setState("connecting", { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (e) {
      // An invalid URL or a blocked port: as a failed connection.
      this._ws = { readyState: 3, close() {}, send() {} };
      this._closed(this._ws, 1006, String(e && e.message ? e.message : e));
      return;
    }
    this._ws = ws;
    this._lastRx = Date.now();
    try {
      ws.binaryType = "arraybuffer";
    } catch (e) {
      /* not every implementation has it */
    }
    ws.onopen = () => {
      if (ws === this._ws) this._authenticate(ws);
    };
    ws.onmessage = (ev) => {
      if (ws === this._ws) this._onFrame(ev.data);
    };
    ws.onclose = (ev) => this._closed(ws, ev.code, ev.reason);
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  // _deviceProof signs /auth/device args for now, with a fresh nonce.
  async _deviceProof() {
    const d = this._device;
    const ts = Math.floor(Date.now() / 1000);
    const nonce = toHex(crypto.getRandomValues(new Uint8Array(16)));
    const args = { sn: d.sn, ts, nonce, sig: await deviceSignature(d.subtle, d.key, d.sn, ts, nonce) };
    if (d.type) args.type = d.type;
    return args;
  }

  async _authenticate(ws) {
    const attempts = [];
    if (this._device) {
      let args;
      try {
        args = await this._deviceProof();
      } catch (e) {
        if (ws !== this._ws) return;
        this._refuse(ws, new HubError(401, "cannot sign /auth/device: " + String(e && e.message ? e.message : e), {}, "/auth/device", true));
        return;
      }
      if (ws !== this._ws) return;
      attempts.push(["/auth/device", args]);
    }
    if (this.token) attempts.push(["/auth/token", { token: this.token }]);
    if (this._username !== null && this._password !== null) {
      attempts.push(["/auth/login", { username: this._username, password: this._password }]);
    }
    if (attempts.length === 0) {
      this._refuse(ws, new HubError(401, "no credentials: give a token, a username and password, or a device's sn and key", {}, "", true));
      return;
    }
    let last = null;
    for (const [service, args] of attempts) {
      try {
        const values = await this._send(ws, service, args, this.opts.authTimeout);
        if (ws !== this._ws) return;
        this._authenticated(ws, values);
        return;
      } catch (err) {
        if (ws !== this._ws) return;
        last = err;
        if (!(err instanceof HubError) || err.local || err.code !== 401) break;
        if (service === "/auth/token") this.token = null; // refused: expired, or the account changed
      }
    }
    if (last instanceof HubError && !last.local && last.code === 401) {
      this._refuse(ws, last);
    } else {
      // Unavailable, rate limited, timed out: try again later.
      const reason = "authentication failed: " + (last && last.msg ? last.msg : String(last));
      this._closed(ws, 4000, reason);
      this._safeClose(ws, 4000, "authentication failed");
    }
  }

  _refuse(ws, err) {
    this._stopped = true;
    this._emit("authError", err);
    this._closed(ws, 401, "authentication refused: " + err.msg);
    this._safeClose(ws, 1000, "authentication refused");
  }

  _authenticated(ws, values) {
    this.session = values || {};
    if (this.session.token) this.token = this.session.token;
    this._attempt = 0;
    this.connects++;
    this._setState("connected", { session: this.session });
    this._emit("auth", this.session);
    this._startHeartbeat(ws);
    // Subscriptions first, so a snapshot precedes what was queued meanwhile.
    for (const sub of this._subs.slice()) this._replay(ws, sub);
    const queued = this._queue;
    this._queue = [];
    for (const entry of queued) this._transmit(ws, entry);
  }

  _replay(ws, sub) {
    const replay = sub.done;
    this._send(ws, "/admin/subscribe", sub.args, this.opts.requestTimeout).then(
      (values) => {
        sub.done = true;
        this._emit("snapshot", values, sub.args, { replay });
        const waiters = sub.waiters;
        sub.waiters = [];
        for (const w of waiters) w.resolve(values);
      },
      (err) => {
        if (err instanceof HubError && !err.local) {
          // The hub refuses these args; replaying them would fail again.
          this._subs = this._subs.filter((s) => s !== sub);
          this._emit("error", err);
        }
        if (!(err instanceof HubError && err.local && err.code === 503) || this._stopped) {
          const waiters = sub.waiters;
          sub.waiters = [];
          for (const w of waiters) w.reject(err);
        }
        // The connection was lost: the replay after the reconnect answers the waiters.
      },
    );
  }

  _safeClose(ws, code, reason) {
    try {
      if (ws.readyState === 0 || ws.readyState === 1) ws.close(code, reason);
    } catch (e) {
      /* already closing */
    }
  }

  // _closed handles the end of a connection, once per socket.
  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this._stopHeartbeat();
    code = code || 1006;
    reason = reason || closeText(code);
    this.lastClose = { code, reason };
    const lost = new HubError(503, "connection lost: " + reason, {}, "", true);
    const pending = Array.from(this._pending.values());
    this._pending.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(new HubError(503, lost.msg, {}, entry.service, true));
    }
    if (isFinalClose(code, reason)) this._stopped = true;
    if (this._stopped) {
      this._failQueue("not connected: " + reason);
      this._setState("disconnected", { code, reason, willReconnect: false });
      return;
    }
    const delay = backoffDelay(this._attempt, this.opts.backoffBase, this.opts.backoffMax);
    const attempt = this._attempt++;
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._stopped) this._open();
    }, delay);
    this._setState("disconnected", { code, reason, willReconnect: true, retryIn: delay, retryAt: Date.now() + delay, attempt });
  }

  _failQueue(why) {
    const queued = this._queue;
    this._queue = [];
    for (const entry of queued) {
      clearTimeout(entry.timer);
      entry.reject(new HubError(503, why, {}, entry.service, true));
    }
    for (const sub of this._subs) {
      const waiters = sub.waiters;
      sub.waiters = [];
      for (const w of waiters) w.reject(new HubError(503, why, {}, "/admin/subscribe", true));
    }
  }

  _startHeartbeat(ws) {
    this._stopHeartbeat();
    if (!this.opts.heartbeat) return;
    const interval = Math.max(1000, Number(this.session && this.session.ping_interval_ms) || 10000);
    this._heartbeatTimer = setInterval(() => {
      if (ws !== this._ws || this.state !== "connected") return;
      if (Date.now() - this._lastRx < interval) return;
      // Silent for a whole ping interval: ask; no answer means a dead link.
      this._send(ws, "/ping", {}, interval).catch((err) => {
        if (ws === this._ws && err instanceof HubError && err.local && err.code === 408) {
          this._closed(ws, 4000, "no answer to /ping");
          this._safeClose(ws, 4000, "heartbeat timeout");
        }
      });
    }, Math.max(250, Math.floor(interval / 2)));
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  // ---- messages -----------------------------------------------------------

  _onFrame(data) {
    this._lastRx = Date.now();
    if (typeof data !== "string") {
      if (typeof TextDecoder !== "undefined" && data instanceof ArrayBuffer) {
        data = new TextDecoder().decode(data);
      } else {
        this._emit("error", new HubError(400, "binary frame ignored", {}, "", true));
        return;
      }
    }
    const { messages, errors } = splitFrame(data);
    for (const e of errors) this._emit("error", new HubError(400, "unreadable message: " + e.error, { line: e.line }, "", true));
    for (const m of messages) this._onMessage(m);
  }

  _onMessage(m) {
    const values = m.values && typeof m.values === "object" ? m.values : {};
    switch (m.op) {
      case "response": {
        const id = typeof m.request_id === "string" ? m.request_id : "";
        const entry = id ? this._pending.get(id) : null;
        if (!entry) {
          if (!id && m.code) this._emit("error", new HubError(m.code, m.msg, values, m.service));
          return; // late, or not ours
        }
        this._pending.delete(id);
        clearTimeout(entry.timer);
        if (m.code === 0 && m.result !== false) entry.resolve(values);
        else entry.reject(new HubError(m.code || 500, m.msg, values, entry.service));
        return;
      }
      case "push":
        if (typeof m.service !== "string") return;
        this._emit(m.service, values, m);
        this._emit("*", values, m);
        return;
      case "request":
        this._emit("request", m);
        return;
      default:
        this._emit("error", new HubError(400, "unknown op " + JSON.stringify(m.op), {}, "", true));
    }
  }

  // _send transmits a request on ws at once, bypassing the queue (auth, replays, pings).
  _send(ws, service, args, timeout) {
    return new Promise((resolve, reject) => {
      const entry = this._entry(service, args, timeout, resolve, reject);
      this._transmit(ws, entry);
    });
  }

  _entry(service, args, timeout, resolve, reject) {
    const id = "c" + ++this._seq;
    const entry = { id, service, args: args == null ? {} : args, resolve, reject, timer: null };
    entry.timer = setTimeout(() => {
      this._pending.delete(id);
      const i = this._queue.indexOf(entry);
      if (i >= 0) this._queue.splice(i, 1);
      reject(new HubError(408, "no answer within " + timeout + " ms", {}, service, true));
    }, timeout);
    return entry;
  }

  _transmit(ws, entry) {
    const frame = JSON.stringify({ op: "request", service: entry.service, request_id: entry.id, args: entry.args });
    if (frame.length * 3 > this.opts.maxMessageBytes && utf8Length(frame) > this.opts.maxMessageBytes) {
      clearTimeout(entry.timer);
      entry.reject(new HubError(413, "request larger than " + this.opts.maxMessageBytes + " bytes", {}, entry.service, true));
      return;
    }
    if (!ws || ws.readyState !== 1) {
      clearTimeout(entry.timer);
      entry.reject(new HubError(503, "not connected", {}, entry.service, true));
      return;
    }
    this._pending.set(entry.id, entry);
    try {
      ws.send(frame);
    } catch (e) {
      this._pending.delete(entry.id);
      clearTimeout(entry.timer);
      entry.reject(new HubError(503, "send failed: " + e, {}, entry.service, true));
    }
  }

  // ---- public requests ----------------------------------------------------

  /**
   * request sends a request and resolves with the answer's values, or
   * rejects with a HubError (the hub's code and msg; local errors: 408 no
   * answer in time, 503 connection lost or closed, 413 too large). While
   * the hub is reconnecting, requests wait for the connection, within their
   * timeout.
   */
  request(service, args, opts) {
    const timeout = (opts && opts.timeout) || this.opts.requestTimeout;
    return new Promise((resolve, reject) => {
      if (typeof service !== "string" || !service.startsWith("/")) {
        reject(new HubError(400, "service must be a path such as /ping", {}, String(service), true));
        return;
      }
      if (this._stopped && !this._ws) {
        reject(new HubError(503, "not connected: " + this._stopReason(), {}, service, true));
        return;
      }
      const entry = this._entry(service, args, timeout, resolve, reject);
      if (this.state === "connected" && this._ws) this._transmit(this._ws, entry);
      else this._queue.push(entry);
    });
  }

  /**
   * subscribe sends /admin/subscribe and remembers args, replaying them
   * after every reconnect. It resolves with the first snapshot; every
   * snapshot, the first and the replays', is also a "snapshot" event
   * (values, args, {replay}).
   */
  subscribe(args) {
    args = args || { all: true };
    const key = JSON.stringify(args);
    let sub = this._subs.find((s) => s.key === key);
    if (!sub) {
      sub = { args, key, waiters: [], done: false };
      this._subs.push(sub);
    }
    return new Promise((resolve, reject) => {
      if (this._stopped && !this._ws) {
        this._subs = this._subs.filter((s) => s !== sub);
        reject(new HubError(503, "not connected: " + this._stopReason(), {}, "/admin/subscribe", true));
        return;
      }
      sub.waiters.push({ resolve, reject });
      if (this.state === "connected" && this._ws) this._replay(this._ws, sub);
    });
  }

  /** unsubscribe forgets the subscription with exactly these args and sends /admin/unsubscribe. */
  unsubscribe(args) {
    const key = JSON.stringify(args);
    this._subs = this._subs.filter((s) => s.key !== key);
    return this.request("/admin/unsubscribe", args);
  }

  /** respond answers a request the hub sent to this session (device clients). */
  respond(requestID, code, msg, values) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify({ op: "response", request_id: requestID, code: code || 0, msg: msg || "", result: !code, values: values || {} }));
    return true;
  }
}

const FleetHub = { Hub, HubError, splitFrame, backoffDelay, closeText, isFinalClose, deviceKeyBytes, FINAL_CLOSE_CODES, REGISTRY_CHANGED, VERSION };
if (typeof globalThis !== "undefined") globalThis.FleetHub = FleetHub;

// @module-exports: everything below is dropped from /hub.classic.js.
export { Hub, HubError, splitFrame, backoffDelay, closeText, isFinalClose, deviceKeyBytes, FINAL_CLOSE_CODES, REGISTRY_CHANGED, VERSION };
export default Hub;
