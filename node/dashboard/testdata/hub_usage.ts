// A program written against hub.d.ts. TestHubTypes type-checks it with
// `tsc --noEmit --strict` next to the embedded hub.d.ts: every use below
// must compile, and every line after a @ts-expect-error must not.

import Hub0, { Hub, HubError, FINAL_CLOSE_CODES, REGISTRY_CHANGED, VERSION, backoffDelay, closeText, deviceKeyBytes, isFinalClose, splitFrame } from "./hub.js";
import type { DeviceView, HubOptions, PresencePush, Session, Snapshot, StateChange } from "./hub.js";

async function admin(): Promise<void> {
  const hub = new Hub("/ws", { username: "admin", password: "pw", requestTimeout: 5000 });
  const off = hub.on("state", (s: StateChange) => {
    if (s.state === "disconnected" && !s.willReconnect) console.log("stopped:", s.code, s.reason, hub.lastClose?.reason);
    if (s.state === "connecting") console.log("attempt", s.attempt);
  });
  off();
  hub.on("auth", (s: Session) => console.log(s.role, s.user, s.groups?.join(","), s.expires_at));
  hub.on("authError", (e) => console.log(e.code, e.msg, e.local));
  hub.on("snapshot", (v, args, info) => console.log(v.devices.length, args.all, info.replay));
  hub.on("/push/presence", (v: PresencePush) => console.log(v.sn, v.online, v.reason === "kicked"));
  hub.on("/push/status", (v) => console.log(v.sn, v.status["electricity"]));
  hub.on("/push/event", (v, m) => console.log(v.event, v.priority, m.id));
  hub.on("/push/summary", (v) => console.log(v.online, v.by_group["sh-01"]?.offline));
  hub.on("/push/alarm", (v, m) => console.log(v["level"], m.service));
  hub.on("*", (v, m) => console.log(m.service, v));
  hub.on("error", (e: HubError) => console.log(e.service, e.values));

  const session: Session = await hub.ready();
  console.log(session.node, session.ping_interval_ms, hub.state, hub.connects, hub.url, hub.opts.backoffMax);
  const snap: Snapshot = await hub.subscribe({ groups: ["sh-01"], topics: ["presence", "status", "summary"], min_priority: "high" });
  const first: DeviceView | undefined = snap.devices[0];
  if (first && first.status !== null) console.log(first.status_at, first.last_seen);
  const answer = await hub.request<{ code: number }>("/admin/command", { sn: "R-001", service: "/cmd/dock" }, { timeout: 15000 });
  console.log(answer.code);
  try {
    await hub.request("/admin/kick", { sn: "R-001" });
  } catch (e) {
    if (e instanceof HubError && !e.local) console.log(e.code, e.msg);
  }
  await hub.unsubscribe({ groups: ["sh-01"] });
  hub.reconnect();
  hub.close("done");
  await hub.connect();
  hub.dispose();
}

async function device(printedKey: string): Promise<void> {
  const opts: HubOptions = { sn: "R-001", key: printedKey, type: "retail", heartbeat: false };
  const dev = new Hub0("ws://127.0.0.1:8080/ws", opts);
  dev.on("request", (m) => {
    dev.respond(m.request_id, 0, "", { docked: m.service === "/cmd/dock" });
  });
  const s = await dev.ready();
  console.log(s.sn, s.type, s.group);
  await dev.request("/device/status", { electricity: { code: 0, msg: "ok", percent: 80 } });
  new Hub("/ws", { sn: "R-002", key: deviceKeyBytes(printedKey) });
  new Hub("/ws", { sn: "R-003", key: new Uint8Array(32).buffer });
}

const frame = splitFrame('{"a":1}\n');
console.log(frame.messages.length, frame.errors.map((e) => e.line));
console.log(backoffDelay(3, 500, 30000), backoffDelay(0, 1, 2, Math.random), closeText(4002), VERSION);
console.log(isFinalClose(4002, REGISTRY_CHANGED), FINAL_CLOSE_CODES.includes(4001));
const classic = globalThis.FleetHub;
console.log(new classic.Hub("/ws", { token: "t" }).state, classic.REGISTRY_CHANGED);
void admin;
void device;

// Misuses the types must catch.
function misuse(hub: Hub): void {
  // @ts-expect-error an event that is neither the client's nor a push service
  hub.on("stat", () => {});
  // @ts-expect-error presence pushes have no percent
  hub.on("/push/presence", (v) => v.percent);
  // @ts-expect-error a state change may not have a code before it is narrowed
  hub.on("state", (s) => s.code);
  // @ts-expect-error a device key is hex text or bytes
  new Hub("/ws", { sn: "R-1", key: 42 });
  // @ts-expect-error the service is a string
  void hub.request(42);
  // @ts-expect-error topics are presence, status, event and summary
  void hub.subscribe({ all: true, topics: ["everything"] });
  // @ts-expect-error the state is read-only
  hub.state = "connected";
  // @ts-expect-error REGISTRY_CHANGED is the one reason
  const r: typeof REGISTRY_CHANGED = "kicked";
  void r;
}
void misuse;
