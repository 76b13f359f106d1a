// hub.d.ts: TypeScript types of hub.js, the fleethub WebSocket client
// (docs/protocol.md). The node serves it next to the script, as /hub.d.ts.
// Put it beside a copy of hub.js and import as usual:
//
//   import { Hub, HubError } from "./hub.js";
//
// hub.classic.js, the plain-script form, sets globalThis.FleetHub, typed
// below as well.

/** The protocol version of the client. */
export declare const VERSION: string;

/** Close codes after which the client does not reconnect by itself (but see REGISTRY_CHANGED). */
export declare const FINAL_CLOSE_CODES: readonly number[];

/**
 * The reason of the one 4002 that is not final: the hub ended a device's
 * session because its registry entry changed, and the device reconnects to
 * get its new type and group.
 */
export declare const REGISTRY_CHANGED: "registry entry changed";

/** The state of a Hub's connection. */
export type HubState = "idle" | "connecting" | "connected" | "disconnected";

/** A role a session authenticates as. */
export type Role = "device" | "admin" | "viewer";

/** A JSON value as the hub sends it. */
export type JSONValue = string | number | boolean | null | JSONValue[] | { [key: string]: JSONValue };

/** The values of a successful authentication (hub.session). Times are ms since the Unix epoch. */
export interface Session {
  session: string;
  role: Role;
  node: string;
  ping_interval_ms: number;
  /** Admins and viewers: the token to resume with; keep it secret. */
  token?: string;
  expires_at?: number;
  /** Devices. */
  sn?: string;
  type?: string;
  group?: string;
  /** Admins and viewers. */
  user?: string;
  groups?: string[];
  [key: string]: unknown;
}

/** Options of a Hub: exactly one way to authenticate, plus tuning. */
export interface HubOptions {
  /** A token from an earlier login (/auth/token). */
  token?: string;
  /** An admin's or viewer's username and password (/auth/login). */
  username?: string;
  password?: string;
  /** A device's serial number (/auth/device); key is then required. */
  sn?: string;
  /**
   * A device's key: the 64 hex digits `hubctl device-key SN` prints (white
   * space around them ignored), or its 32 bytes.
   */
  key?: string | Uint8Array | ArrayBuffer;
  /** The type a device states; the hub's registry wins over it. */
  type?: string;
  /** ms a request may wait for its answer, queueing included. Default 10000. */
  requestTimeout?: number;
  /** ms an auth request may take. Default 10000. */
  authTimeout?: number;
  /** ms: the first reconnect delay ceiling. Default 500. */
  backoffBase?: number;
  /** ms: the largest reconnect delay ceiling. Default 30000. */
  backoffMax?: number;
  /** The node's --max-message-bytes; larger requests fail locally with 413. Default 65536. */
  maxMessageBytes?: number;
  /** Send /ping when the connection has been silent for a ping interval. Default true. */
  heartbeat?: boolean;
  /** Connect at once (after the constructor's caller has registered its handlers). Default true. */
  autoConnect?: boolean;
  /** A WebSocket constructor, for tests and use outside browsers. Default globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocketLike;
}

/** What hub.js uses of a WebSocket: the browser's, or any with the same shape. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  onopen: ((ev: any) => unknown) | null;
  onmessage: ((ev: { data: unknown }) => unknown) | null;
  onclose: ((ev: { code: number; reason: string }) => unknown) | null;
  onerror: ((ev: any) => unknown) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** The options a Hub keeps: the defaults filled in, without password and key. */
export type HubSettings = Required<
  Pick<HubOptions, "requestTimeout" | "authTimeout" | "backoffBase" | "backoffMax" | "maxMessageBytes" | "heartbeat" | "autoConnect">
> &
  Omit<HubOptions, "password" | "key">;

/** A "state" event. */
export type StateChange =
  | { state: "connecting"; connects: number; attempt: number }
  | { state: "connected"; connects: number; session: Session }
  | {
      state: "disconnected";
      connects: number;
      /** The WebSocket close code, or 401 when the hub refused the credentials. */
      code: number;
      reason: string;
      /** False when the client stopped for good (until connect()). */
      willReconnect: boolean;
      /** With willReconnect: the delay before the next attempt, in ms, and when it starts. */
      retryIn?: number;
      retryAt?: number;
      attempt?: number;
    };

/** The code and reason of the last closed connection. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** A push as it came on the wire. */
export interface PushMessage<V = Record<string, unknown>> {
  op: "push";
  service: string;
  id?: string;
  values: V;
  [key: string]: unknown;
}

/** A request the hub sent to this session (a command, for device clients). */
export interface RequestMessage {
  op: "request";
  service: string;
  request_id: string;
  args?: Record<string, unknown>;
  [key: string]: unknown;
}

/** A device view of /admin/devices and of snapshots. */
export interface DeviceView {
  sn: string;
  type: string;
  group: string;
  online: boolean;
  node: string;
  /** While online: the session's remote address. */
  addr?: string;
  /** While online: the session id. */
  session?: string;
  since: number;
  last_seen: number;
  status: Record<string, unknown> | null;
  status_at: number | null;
}

/** A live node, as /admin/nodes answers {"nodes": NodeView[]}. */
export interface NodeView {
  id: string;
  addr: string;
  since: number;
  sessions: number;
}

/** The args of /admin/subscribe and /admin/unsubscribe. */
export interface SubscribeArgs {
  devices?: string[];
  types?: string[];
  groups?: string[];
  all?: boolean;
  topics?: Array<"presence" | "status" | "event" | "summary">;
  min_priority?: "normal" | "high" | "emergency";
  limit?: number;
  [key: string]: unknown;
}

/** The answer to /admin/subscribe. */
export interface Snapshot {
  devices: DeviceView[];
  next?: string;
  [key: string]: unknown;
}

export interface PresencePush {
  sn: string;
  type: string;
  group: string;
  online: boolean;
  reason: "connected" | "closed" | "timeout" | "replaced" | "node_lost" | "kicked";
  node: string;
  at: number;
}

export interface StatusPush {
  sn: string;
  type: string;
  group: string;
  at: number;
  status: Record<string, unknown>;
}

export interface EventPush {
  sn: string;
  type: string;
  group: string;
  at: number;
  event: string;
  priority: string;
  data: JSONValue;
}

export interface Counts {
  online: number;
  offline: number;
}

export interface SummaryPush extends Counts {
  at: number;
  by_type: Record<string, Counts>;
  by_group: Record<string, Counts>;
}

/** The handlers of each event on(): the client's own, and the hub's pushes. */
export interface HubEvents {
  state: (change: StateChange) => void;
  auth: (session: Session) => void;
  authError: (err: HubError) => void;
  snapshot: (values: Snapshot, args: SubscribeArgs, info: { replay: boolean }) => void;
  error: (err: HubError) => void;
  request: (message: RequestMessage) => void;
  "*": (values: Record<string, unknown>, message: PushMessage) => void;
  "/push/presence": (values: PresencePush, message: PushMessage<PresencePush>) => void;
  "/push/status": (values: StatusPush, message: PushMessage<StatusPush>) => void;
  "/push/event": (values: EventPush, message: PushMessage<EventPush>) => void;
  "/push/summary": (values: SummaryPush, message: PushMessage<SummaryPush>) => void;
}

/** A push service other than the hub's own: a path such as "/push/alarm". */
export type PushService = `/${string}`;

/** A failed request: the hub's code, msg and values, or the client's own (local). */
export declare class HubError extends Error {
  constructor(code: number, msg?: string, values?: unknown, service?: string, local?: boolean);
  name: "HubError";
  code: number;
  msg: string;
  values: Record<string, unknown>;
  service: string;
  /** True when the client produced the error itself: 408 no answer in time, 503 connection lost or closed, 413 too large, 400 bad service. */
  local: boolean;
}

/** Hub is one logical connection to a fleethub node. */
export declare class Hub {
  /**
   * @param url a ws, wss, http or https URL of the node's /ws, or a path such as "/ws" (resolved against the page)
   * @param opts a token, or a username and password, or a device's sn and key; plus tuning
   * @throws Error for a bad device key, several ways to authenticate, no WebSocket, or (devices) no Web Crypto
   */
  constructor(url?: string, opts?: HubOptions);

  /** The resolved WebSocket URL (scheme ws or wss). */
  readonly url: string;
  readonly opts: HubSettings;
  /** The token resumed with; the last login's. */
  token: string | null;
  readonly state: HubState;
  /** The values of the last successful authentication. */
  readonly session: Session | null;
  /** Successful authentications so far. */
  readonly connects: number;
  readonly lastClose: CloseInfo | null;

  /** on registers handler for an event or push service; it returns a function that removes it. */
  on<E extends keyof HubEvents>(event: E, handler: HubEvents[E]): () => void;
  on(event: PushService, handler: (values: Record<string, unknown>, message: PushMessage) => void): () => void;
  off<E extends keyof HubEvents>(event: E, handler: HubEvents[E]): void;
  off(event: PushService, handler: (values: Record<string, unknown>, message: PushMessage) => void): void;

  /** connect opens the connection (again, after close()); it resolves once authenticated. */
  connect(): Promise<Session>;
  /** ready resolves when the hub is connected and authenticated, and rejects with a HubError when it stops for good. */
  ready(): Promise<Session>;
  /** reconnect drops the current connection, if any, and connects again now. */
  reconnect(): void;
  /** close ends the connection for good (until connect()). Waiting requests fail. */
  close(reason?: string): void;
  /** dispose closes the hub and removes its listeners. */
  dispose(): void;

  /**
   * request sends a request and resolves with the answer's values, or rejects
   * with a HubError. While the hub is reconnecting, requests wait for the
   * connection, within their timeout (ms).
   */
  request<V = Record<string, unknown>>(service: string, args?: object, opts?: { timeout?: number }): Promise<V>;
  /** subscribe sends /admin/subscribe and replays it after every reconnect; it resolves with the first snapshot. */
  subscribe(args?: SubscribeArgs): Promise<Snapshot>;
  /** unsubscribe forgets the subscription with exactly these args and sends /admin/unsubscribe. */
  unsubscribe(args: SubscribeArgs): Promise<Record<string, unknown>>;
  /** respond answers a request the hub sent to this session (device clients); false when not connected. */
  respond(requestID: string, code?: number, msg?: string, values?: object): boolean;
}

/** splitFrame parses one text frame into its messages (newline-delimited JSON) and the lines that are not JSON objects. */
export declare function splitFrame(data: string): {
  messages: Array<Record<string, unknown>>;
  errors: Array<{ line: string; error: string }>;
};

/** backoffDelay is the delay in ms before reconnect attempt `attempt` (0-based): uniform in [0, min(cap, base * 2^attempt)). */
export declare function backoffDelay(attempt: number, base: number, cap: number, random?: () => number): number;

/** closeText describes a WebSocket close code in a few words. */
export declare function closeText(code: number): string;

/** isFinalClose reports whether a close with this code and reason ends the client for good. */
export declare function isFinalClose(code: number, reason: string): boolean;

/** deviceKeyBytes turns a device key (hex as hubctl prints it, or 32 bytes) into a copy of its bytes; it throws an Error saying what is wrong with anything else. */
export declare function deviceKeyBytes(key: string | Uint8Array | ArrayBuffer): Uint8Array;

/** What hub.classic.js sets as globalThis.FleetHub (hub.js sets it too). */
export interface FleetHubNamespace {
  Hub: typeof Hub;
  HubError: typeof HubError;
  splitFrame: typeof splitFrame;
  backoffDelay: typeof backoffDelay;
  closeText: typeof closeText;
  isFinalClose: typeof isFinalClose;
  deviceKeyBytes: typeof deviceKeyBytes;
  FINAL_CLOSE_CODES: typeof FINAL_CLOSE_CODES;
  REGISTRY_CHANGED: typeof REGISTRY_CHANGED;
  VERSION: typeof VERSION;
}

declare global {
  var FleetHub: FleetHubNamespace;
}

export default Hub;
