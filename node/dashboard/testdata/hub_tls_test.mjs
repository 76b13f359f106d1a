// hub.js over TLS: the WebSocket URL it derives from an https page is
// wss:, and an explicit wss:// (or https://) URL is used as wss. TestHubJSTLS
// (tls_test.go) copies the embedded hub.js next to this file as hub.mjs
// and runs `node --test`.

import test from "node:test";
import assert from "node:assert/strict";
import { Hub } from "./hub.mjs";

// recordingWS opens nothing: it records the URL hub.js dials.
function recordingWS() {
  const urls = [];
  class WS {
    constructor(url) {
      urls.push(url);
      this.readyState = 0;
    }
    send() {}
    close() {}
  }
  return { WS, urls };
}

async function withLocation(loc, f) {
  const had = Object.prototype.hasOwnProperty.call(globalThis, "location");
  const old = globalThis.location;
  globalThis.location = loc;
  try {
    return await f();
  } finally {
    if (had) globalThis.location = old;
    else delete globalThis.location;
  }
}

const https = { protocol: "https:", host: "hub.example:8443" };
const http = { protocol: "http:", host: "hub.example:8080" };

test("a relative URL on an https page is wss:", async () => {
  await withLocation(https, () => {
    const { WS } = recordingWS();
    for (const url of [undefined, "", "/ws", "ws", "//other.example/ws"]) {
      const hub = new Hub(url, { username: "admin", password: "pw", WebSocket: WS, heartbeat: false });
      const want = url === "//other.example/ws" ? "wss://other.example/ws" : "wss://hub.example:8443/ws";
      assert.equal(hub.url, want, "URL " + JSON.stringify(url));
      hub.dispose();
    }
  });
});

test("a relative URL on an http page stays ws:", async () => {
  await withLocation(http, () => {
    const hub = new Hub("/ws", { username: "admin", password: "pw", WebSocket: recordingWS().WS, heartbeat: false });
    assert.equal(hub.url, "ws://hub.example:8080/ws");
    hub.dispose();
  });
});

test("explicit wss:// and https:// URLs dial wss, whatever the page", async () => {
  for (const loc of [https, http, undefined]) {
    await withLocation(loc, async () => {
      for (const [url, want] of [
        ["wss://node.example:8443/ws", "wss://node.example:8443/ws"],
        ["https://node.example:8443/ws", "wss://node.example:8443/ws"],
        ["WSS://node.example/ws", "WSS://node.example/ws"],
      ]) {
        const { WS, urls } = recordingWS();
        const hub = new Hub(url, { username: "admin", password: "pw", WebSocket: WS, heartbeat: false });
        assert.equal(hub.url, want);
        hub.connect().catch(() => {});
        await new Promise((r) => setTimeout(r, 5));
        assert.equal(urls[0], want, "dialled URL for " + url);
        hub.dispose();
      }
    });
  }
});
