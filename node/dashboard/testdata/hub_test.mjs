// Tests of hub.js against a scripted fake WebSocket server. TestHubJS (in
// dashboard_test.go) copies the embedded hub.js next to this file as
// hub.mjs, and hub.classic.js, and runs `node --test`.

import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import vm from "node:vm";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createHmac } from "node:crypto";
import { Hub, HubError, splitFrame, backoffDelay, closeText, isFinalClose, deviceKeyBytes, REGISTRY_CHANGED } from "./hub.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(f, what, timeout = 2000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await sleep(2);
  }
}

// fakeServer returns a WebSocket class whose sockets a test drives as the
// server: it sees what the client sent and answers with frames.
function fakeServer(opts = {}) {
  const srv = { sockets: [], tokens: new Set(), logins: 0, tokenAuths: 0, autoAuth: opts.autoAuth !== false };
  srv.password = opts.password || "pw";
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      srv.sockets.push(this);
      setTimeout(() => {
        if (this.readyState !== 0) return;
        this.readyState = 1;
        if (this.onopen) this.onopen({});
      }, 1);
    }
    send(s) {
      if (this.readyState !== 1) throw new Error("not open");
      const m = JSON.parse(s);
      this.sent.push(m);
      if (srv.autoAuth) srv.answer(this, m);
    }
    close(code = 1000, reason = "") {
      if (this.readyState >= 2) return;
      this.readyState = 3;
      setTimeout(() => this.onclose && this.onclose({ code, reason }), 1);
    }
    // Server side.
    frame(...msgs) {
      if (this.onmessage) this.onmessage({ data: msgs.map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join("\n") });
    }
    drop(code = 1006, reason = "") {
      this.readyState = 3;
      if (this.onclose) this.onclose({ code, reason });
    }
    async waitSent(pred, what) {
      return until(() => this.sent.find(pred), what || "a client message");
    }
  }
  srv.WebSocket = FakeWS;
  srv.last = () => srv.sockets[srv.sockets.length - 1];
  srv.ok = (ws, m, values) => ws.frame({ op: "response", service: m.service, request_id: m.request_id, code: 0, msg: "", result: true, values: values || {} });
  srv.fail = (ws, m, code, msg) => ws.frame({ op: "response", service: m.service, request_id: m.request_id, code, msg, result: false, values: {} });
  srv.answer = (ws, m) => {
    if (m.service === "/auth/login") {
      srv.logins++;
      if (m.args.password !== srv.password) return srv.fail(ws, m, 401, "wrong username or password");
      const token = "T" + srv.logins;
      srv.tokens.add(token);
      return srv.ok(ws, m, { session: "s", role: "admin", node: "n1", ping_interval_ms: 10000, token, user: m.args.username });
    }
    if (m.service === "/auth/token") {
      srv.tokenAuths++;
      if (!srv.tokens.has(m.args.token)) return srv.fail(ws, m, 401, "token refused");
      return srv.ok(ws, m, { session: "s", role: "admin", node: "n1", ping_interval_ms: 10000, token: m.args.token, user: "admin" });
    }
    if (m.service === "/auth/device") {
      srv.deviceAuths.push(m.args);
      const { sn, ts, nonce, sig } = m.args;
      const want = createHmac("sha256", srv.deviceKey(sn)).update(sn + "\n" + ts + "\n" + nonce).digest("hex");
      if (sig !== want) return srv.fail(ws, m, 401, "bad signature");
      return srv.ok(ws, m, { session: "d" + srv.sockets.length, role: "device", node: "n1", ping_interval_ms: 10000, sn, type: m.args.type || "robot", group: srv.group });
    }
    if (m.service === "/admin/subscribe") return srv.ok(ws, m, { devices: [{ sn: "R-" + srv.sockets.length }] });
  };
  // Device keys, as the hub derives them from its master secret.
  srv.deviceKey = (sn) => createHmac("sha256", "test-master-secret").update("device:" + sn).digest();
  srv.deviceAuths = [];
  srv.group = "default"; // the group the registry gives devices
  return srv;
}

const fast = { backoffBase: 5, backoffMax: 20, heartbeat: false };

test("splitFrame: NDJSON, CRLF, blanks, bad lines", () => {
  const { messages, errors } = splitFrame('{"a":1}\r\n\n  \n{"b":2}\nnot json\n[1]\n{"c":3}');
  assert.deepEqual(messages, [{ a: 1 }, { b: 2 }, { c: 3 }]);
  assert.equal(errors.length, 2);
});

test("backoffDelay: full jitter under a capped exponential ceiling", () => {
  assert.equal(backoffDelay(0, 500, 30000, () => 0), 0);
  assert.equal(backoffDelay(0, 500, 30000, () => 0.999999), 499);
  assert.equal(backoffDelay(3, 500, 30000, () => 0.999999), 3999);
  assert.equal(backoffDelay(10, 500, 30000, () => 0.999999), 29999);
  assert.equal(backoffDelay(1000, 500, 30000, () => 0.999999), 29999);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(4, 100, 1000);
    assert.ok(d >= 0 && d < 1000, "delay " + d);
  }
  assert.equal(closeText(4001), "replaced by a newer session");
});

test("requests match their answers by request_id, several per frame, out of order", async () => {
  const srv = fakeServer();
  const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: srv.WebSocket, ...fast });
  await hub.ready();
  assert.equal(hub.token, "T1");
  srv.autoAuth = false;
  const p1 = hub.request("/one", { x: 1 });
  const p2 = hub.request("/two", {});
  const p3 = hub.request("/three", {});
  const ws = srv.last();
  const m1 = await ws.waitSent((m) => m.service === "/one");
  const m2 = await ws.waitSent((m) => m.service === "/two");
  const m3 = await ws.waitSent((m) => m.service === "/three");
  assert.deepEqual(m1.args, { x: 1 });
  assert.equal(m1.op, "request");
  assert.notEqual(m1.request_id, m2.request_id);
  const pushes = [];
  hub.on("/push/status", (v, m) => pushes.push([v, m.id]));
  const all = [];
  hub.on("*", (v, m) => all.push(m.service));
  ws.frame(
    { op: "response", request_id: m3.request_id, code: 404, msg: "unknown service", result: false, values: {} },
    { op: "push", service: "/push/status", id: "p1", values: { sn: "R-1" } },
    { op: "response", request_id: m1.request_id, code: 0, msg: "", result: true, values: { one: 1 } },
    "",
    { op: "response", request_id: m2.request_id, code: 0, msg: "", result: true, values: { two: 2 } },
  );
  assert.deepEqual(await p1, { one: 1 });
  assert.deepEqual(await p2, { two: 2 });
  await assert.rejects(p3, (e) => e instanceof HubError && e.code === 404 && e.msg === "unknown service" && !e.local);
  assert.deepEqual(pushes, [[{ sn: "R-1" }, "p1"]]);
  assert.deepEqual(all, ["/push/status"]);
  hub.close();
});

test("a request without an answer times out with a local 408", async () => {
  const srv = fakeServer();
  const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: srv.WebSocket, ...fast });
  await hub.ready();
  await assert.rejects(hub.request("/slow", {}, { timeout: 30 }), (e) => e.code === 408 && e.local);
  hub.close();
});

test("requests made while connecting wait for the connection", async () => {
  const srv = fakeServer();
  const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: srv.WebSocket, ...fast });
  const p = hub.request("/ping", {});
  const ws = await until(() => srv.last(), "a socket");
  const m = await ws.waitSent((m) => m.service === "/ping");
  const auth = ws.sent.findIndex((x) => x.service === "/auth/login");
  assert.ok(auth >= 0 && auth < ws.sent.indexOf(m), "auth goes first");
  srv.ok(ws, m, { server_time_ms: 1 });
  assert.deepEqual(await p, { server_time_ms: 1 });
  hub.close();
});

test("after a lost connection it reconnects with the token and replays subscriptions", async () => {
  const srv = fakeServer();
  const states = [];
  const snapshots = [];
  const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: srv.WebSocket, ...fast });
  hub.on("state", (s) => states.push(s));
  hub.on("snapshot", (v, args, info) => snapshots.push([v.devices[0].sn, info.replay]));
  const first = await hub.subscribe({ all: true, topics: ["presence"] });
  assert.deepEqual(first, { devices: [{ sn: "R-1" }] });
  const pending = hub.request("/never", {});
  srv.last().drop(1006, "");
  await assert.rejects(pending, (e) => e.code === 503 && e.local);
  await until(() => hub.connects === 2, "a second connection");
  await until(() => snapshots.length === 2, "the replayed snapshot");
  assert.deepEqual(snapshots, [["R-1", false], ["R-2", true]]);
  const ws2 = srv.sockets[1];
  assert.equal(ws2.sent[0].service, "/auth/token");
  assert.equal(ws2.sent[0].args.token, "T1");
  assert.equal(srv.logins, 1, "resumed with the token, no second login");
  const sub = ws2.sent.find((m) => m.service === "/admin/subscribe");
  assert.deepEqual(sub.args, { all: true, topics: ["presence"] });
  const lost = states.find((s) => s.state === "disconnected");
  assert.equal(lost.code, 1006);
  assert.equal(lost.willReconnect, true);
  assert.ok(lost.retryIn >= 0 && lost.retryIn < 5);
  assert.deepEqual(states.map((s) => s.state), ["connecting", "connected", "disconnected", "connecting", "connected"]);
  hub.close();
});

test("a refused token falls back to the password", async () => {
  const srv = fakeServer();
  const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: srv.WebSocket, ...fast });
  await hub.ready();
  srv.tokens.clear(); // as when the token expired (4003)
  srv.last().drop(4003, "token expired");
  await until(() => hub.connects === 2, "a second connection");
  const ws2 = srv.sockets[1];
  assert.deepEqual(ws2.sent.slice(0, 2).map((m) => m.service), ["/auth/token", "/auth/login"]);
  assert.equal(hub.token, "T2");
  hub.close();
});

test("a token alone that is refused stops with authError", async () => {
  const srv = fakeServer();
  const errors = [];
  const hub = new Hub("ws://h/ws", { token: "stale", WebSocket: srv.WebSocket, ...fast });
  hub.on("authError", (e) => errors.push(e));
  await assert.rejects(hub.ready(), (e) => e.code === 401);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 401);
  await sleep(60);
  assert.equal(srv.sockets.length, 1, "no reconnect after a refusal");
  assert.equal(hub.state, "disconnected");
});

for (const [code, reason] of [[4001, "bye"], [4002, "bye"], [4002, "kicked"], [4002, "account changed"], [1008, "bye"]]) {
  test("close code " + code + " (" + reason + ") stops reconnecting", async () => {
    const srv = fakeServer();
    const states = [];
    const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: srv.WebSocket, ...fast });
    hub.on("state", (s) => states.push(s));
    await hub.ready();
    srv.last().drop(code, reason);
    await sleep(60);
    assert.equal(srv.sockets.length, 1);
    const last = states[states.length - 1];
    assert.equal(last.state, "disconnected");
    assert.equal(last.code, code);
    assert.equal(last.reason, reason);
    assert.equal(last.willReconnect, false);
    await assert.rejects(hub.request("/ping", {}), (e) => e.code === 503 && e.local);
    // connect() starts again.
    await hub.connect();
    assert.equal(srv.sockets.length, 2);
    hub.close();
  });
}

test("backoff grows while the hub is unreachable and resets after a connection", async () => {
  const srv = fakeServer();
  const delays = [];
  let refuse = 3;
  const Orig = srv.WebSocket;
  class Flaky extends Orig {
    constructor(url) {
      super(url);
      if (refuse > 0) {
        refuse--;
        this.readyState = 3;
        setTimeout(() => this.onclose && this.onclose({ code: 1006, reason: "" }), 1);
      }
    }
  }
  const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: Flaky, backoffBase: 4, backoffMax: 1000, heartbeat: false });
  hub.on("state", (s) => s.state === "disconnected" && delays.push(s.attempt));
  await hub.ready();
  assert.deepEqual(delays, [0, 1, 2]);
  srv.last().drop(1006);
  await until(() => hub.connects === 2, "a reconnect");
  assert.deepEqual(delays, [0, 1, 2, 0]);
  hub.close();
});

test("hub.classic.js is a plain script that sets FleetHub", () => {
  const code = fs.readFileSync(path.join(here, "hub.classic.js"), "utf8");
  const ctx = { console, setTimeout, clearTimeout, setInterval, clearInterval };
  vm.createContext(ctx);
  vm.runInContext(code, ctx, { filename: "hub.classic.js" });
  assert.equal(typeof ctx.FleetHub, "object");
  assert.equal(typeof ctx.FleetHub.Hub, "function");
  assert.equal(ctx.FleetHub.closeText(1012), "node restarting");
  assert.equal(Object.keys(ctx).filter((k) => !["console", "setTimeout", "clearTimeout", "setInterval", "clearInterval"].includes(k)).join(), "FleetHub");
});

test("close() while waiting to reconnect ends the wait", async () => {
  const srv = fakeServer();
  const states = [];
  const hub = new Hub("ws://h/ws", { username: "admin", password: "pw", WebSocket: srv.WebSocket, backoffBase: 5000, backoffMax: 5000, heartbeat: false });
  hub.on("state", (s) => states.push(s));
  await hub.ready();
  srv.last().drop(1006);
  assert.equal(states[states.length - 1].willReconnect, true);
  const queued = hub.request("/ping", {});
  hub.close();
  await assert.rejects(queued, (e) => e.code === 503 && e.local);
  const last = states[states.length - 1];
  assert.equal(last.state, "disconnected");
  assert.equal(last.willReconnect, false);
  await sleep(20);
  assert.equal(srv.sockets.length, 1);
});

test("isFinalClose: every 4002 is final but a registry change", () => {
  assert.equal(REGISTRY_CHANGED, "registry entry changed");
  assert.equal(isFinalClose(4002, "registry entry changed"), false);
  assert.equal(isFinalClose(4002, "kicked"), true);
  assert.equal(isFinalClose(4002, "registry entry changed!"), true);
  assert.equal(isFinalClose(4002, ""), true);
  assert.equal(isFinalClose(4001, "registry entry changed"), true);
  assert.equal(isFinalClose(1006, ""), false);
  assert.equal(isFinalClose(4008, "slow consumer"), false);
});

test("a device signs /auth/device afresh on every connect", async () => {
  const srv = fakeServer();
  const key = srv.deviceKey("R-7").toString("hex") + "\n"; // as hubctl device-key prints it
  const hub = new Hub("ws://h/ws", { sn: "R-7", key, type: "retail", WebSocket: srv.WebSocket, ...fast });
  const session = await hub.ready();
  assert.equal(session.role, "device");
  assert.equal(session.sn, "R-7");
  assert.ok(!("key" in hub.opts), "the key is not kept in opts");
  const a = srv.deviceAuths[0];
  assert.equal(a.type, "retail");
  assert.ok(Math.abs(a.ts - Date.now() / 1000) < 5, "ts is now, in seconds");
  assert.match(a.nonce, /^[0-9a-f]{32}$/);
  srv.last().drop(1006);
  await until(() => hub.connects === 2, "a reconnect");
  assert.notEqual(srv.deviceAuths[1].nonce, a.nonce, "a fresh nonce");
  // The same key as bytes.
  const raw = new Hub("ws://h/ws", { sn: "R-7", key: new Uint8Array(srv.deviceKey("R-7")), WebSocket: srv.WebSocket, ...fast });
  assert.equal((await raw.ready()).sn, "R-7");
  hub.close();
  raw.close();
});

test("a device with a wrong key is refused and stops", async () => {
  const srv = fakeServer();
  const errors = [];
  const hub = new Hub("ws://h/ws", { sn: "R-8", key: srv.deviceKey("R-9"), WebSocket: srv.WebSocket, ...fast });
  hub.on("authError", (e) => errors.push(e));
  await assert.rejects(hub.ready(), (e) => e.code === 401);
  assert.equal(errors[0].msg, "bad signature");
  assert.equal(hub._retryTimer, null, "no reconnect scheduled after a refusal");
  assert.equal(srv.sockets.length, 1);
});

test("device keys that are not 32 bytes or 64 hex digits are refused at once", () => {
  const hex = "ab".repeat(32);
  assert.equal(deviceKeyBytes(hex).length, 32);
  assert.equal(deviceKeyBytes(" " + hex.toUpperCase() + "\n")[0], 0xab);
  for (const [key, want] of [
    [hex.slice(2), /62 hex digits, want 64/],
    [hex + "0", /65 hex digits, want 64/],
    ["", /0 hex digits, want 64/],
    ["zz" + hex.slice(2), /"z" at offset 0 is not a hex digit/],
    [new Uint8Array(31), /31 bytes, want 32/],
    [undefined, /want the hex that hubctl device-key prints/],
    [42, /want the hex that hubctl device-key prints/],
  ]) {
    assert.throws(() => new Hub("ws://h/ws", { sn: "R-1", key, WebSocket: fakeServer().WebSocket }), want);
  }
  assert.throws(() => new Hub("ws://h/ws", { sn: "R-1", key: hex, username: "a", password: "b", WebSocket: fakeServer().WebSocket }), /not several/);
});

test("a 4002 for a registry change reconnects with the new attributes; another 4002 then stops it", async () => {
  const srv = fakeServer();
  const states = [];
  const hub = new Hub("ws://h/ws", { sn: "R-5", key: srv.deviceKey("R-5"), WebSocket: srv.WebSocket, ...fast });
  hub.on("state", (s) => states.push(s));
  assert.equal((await hub.ready()).group, "default");
  srv.group = "sh-01"; // hubctl device add R-5 --type robot --group sh-01
  srv.last().drop(4002, "registry entry changed");
  const lost = states[states.length - 1];
  assert.equal(lost.state, "disconnected");
  assert.equal(lost.code, 4002);
  assert.equal(lost.willReconnect, true);
  assert.ok(lost.retryIn >= 0 && lost.retryIn < 5, "the usual backoff");
  await until(() => hub.connects === 2, "a reconnect");
  assert.equal(hub.session.group, "sh-01");
  assert.equal(hub.state, "connected");
  // An admin's kick is final.
  srv.last().drop(4002, "kicked");
  const last = states[states.length - 1];
  assert.equal(last.willReconnect, false);
  assert.equal(last.reason, "kicked");
  assert.equal(hub._retryTimer, null, "no reconnect scheduled");
  await assert.rejects(hub.ready(), (e) => e.code === 503 && /kicked/.test(e.msg));
  assert.equal(srv.sockets.length, 2);
});
