import type { FastifyRequest } from 'fastify'
import type { WebsocketPluginOptions } from '@fastify/websocket'
import type { Broker } from './broker/types.js'
import type { RealtimeMetrics } from './meter.js'
import { RT_ERR_OPTIONS } from './errors.js'
import { checkKeys } from './option-keys.js'
import type { AsyncApiServeOptions } from './asyncapi-serve.js'
import { resolveHistory, type HistoryOptions, type ResolvedHistory } from './history/options.js'
import { resolveIdempotency, type IdempotencyOptions, type ResolvedIdempotency } from './idempotency/store.js'
import { PRESENCE_KEYS, resolvePresence, type PresenceOptions, type ResolvedPresence } from './presence/options.js'

/** Where a session token may come from, tried in the order listed. */
export type TokenSource = 'header' | 'protocol' | 'cookie' | 'query'

/** Which browser origins may open a socket. */
export type OriginsOption =
  | '*'
  | readonly string[]
  | RegExp
  | ((origin: string, request: FastifyRequest) => boolean | Promise<boolean>)

/** How the session is checked before the upgrade. */
export interface AuthOptions {
  /**
   * Where the token is looked for, in this order. `query` (`?token=`) is never used unless listed.
   * @default ['header', 'protocol', 'cookie']
   */
  sources?: readonly TokenSource[]
  /**
   * The cookie holding the token (read through @fastify/cookie when it is registered).
   * @default 'token'
   */
  cookieName?: string
  /**
   * Replaces JWT verification: return the user, or throw (a `HandshakeError` to choose the code; anything else is
   * `INVALID_TOKEN`). A user with a numeric `exp` (seconds since the epoch) expires like a JWT session.
   */
  authenticate?: (request: FastifyRequest) => unknown
  /**
   * The user id that indexes connections (`byUser`, `maxConnectionsPerUser`).
   * @default the token's `sub`
   */
  userId?: (user: any) => string | undefined
  /**
   * Close the connection with 4401 when the session's `exp` passes.
   * @default true
   */
  closeOnExpiry?: boolean
  /**
   * JWT algorithms accepted. `none` is never accepted.
   * @default every signing algorithm that fits the key (fast-jwt matches them to the key type)
   */
  algorithms?: readonly string[]
  /**
   * The @fastify/jwt `namespace` whose verifier checks tokens (`request.<namespace>JwtVerify()`). Tokens are always
   * verified as @fastify/jwt verifies them on a route: its `verify` options, `trusted`, `formatUser` and
   * `decoratorName` all apply, and `conn.user` is what `formatUser` returns.
   * @default the default @fastify/jwt instance (`request.jwtVerify()`)
   */
  namespace?: string
}

/** Limits that keep one client from growing the server's memory or flooding it. */
export interface LimitsOptions {
  /** Largest accepted frame in bytes; bigger ones close with 1009. @default 65536 */
  maxPayload?: number
  /** Messages a second per connection. @default 100 */
  rate?: number
  /** Messages a connection may send at once before the rate applies. @default the rate */
  burst?: number
  /**
   * Bytes a second per connection, charged for every frame before it is decoded (a frame bigger than what is
   * left waits for the bucket: RATE_LIMITED). The bucket holds a second of it, and never less than `maxPayload`.
   * @default 1048576
   */
  byteRate?: number
  /**
   * Open connections from one client address (`request.ip`: behind a proxy, set Fastify's `trustProxy` so it is the
   * client's and not the proxy's); a further handshake gets 429 `TOO_MANY_FROM_ADDRESS`.
   * @default Infinity (off)
   */
  maxConnectionsPerIp?: number
  /** Rooms one connection may be in; a further `conn.join` throws `TOO_MANY_ROOMS`. @default 128 */
  maxRoomsPerConnection?: number
  /** Characters of a room name at most; a longer (or empty) one throws `INVALID_ROOM`. @default 255 */
  maxRoomNameLength?: number
  /** Rejected messages (rate-limited or invalid) in a row before the connection is closed with 1008. @default 50 */
  maxViolations?: number
  /** Messages that may wait for a busy async handler before further ones are refused with RATE_LIMITED. @default 256 */
  maxPending?: number
  /** Unsent bytes a connection may hold before the slow-consumer policy applies. @default 1048576 */
  maxBufferedBytes?: number
  /**
   * ms an async handler may take: past it the message is answered `HANDLER_TIMEOUT` and the connection's next
   * messages go on (the handler itself cannot be stopped; its late result is logged and kept for its idempotency
   * key). `0` waits for ever. @default 30000
   */
  handlerTimeout?: number
  /** `close`: close with 4408; `drop`: drop (and count) further messages until it drains. @default 'close' */
  onSlowConsumer?: 'close' | 'drop'
  /** Open connections on this instance; more are refused with 503 SERVER_FULL. @default Infinity */
  maxConnections?: number
  /** Open connections of one user on this instance; more are refused with 429. @default Infinity */
  maxConnectionsPerUser?: number
}

/** Options of `app.register(realtime, options)`. */
export interface RealtimeOptions {
  /** Allowed browser origins. @default same-origin only (the Origin's host equals the request's Host) */
  origins?: OriginsOption
  /** Refuse requests without an Origin header (non-browser clients). @default false */
  requireOrigin?: boolean
  /**
   * The level of the one log line each refused handshake writes. `debug` keeps a flood of bad handshakes (wrong
   * tokens, foreign origins) out of an `info` log; `info` shows each refusal with its code and address.
   * @default 'debug'
   */
  refusalLogLevel?: 'info' | 'debug'
  /** Session check before the upgrade, or `false` for none. @default JWT through @fastify/jwt */
  auth?: AuthOptions | false
  /** Per-connection limits. */
  limits?: LimitsOptions
  /** Pings every `interval` ms; a peer silent for a whole interval is terminated. `false` turns it off. @default { interval: 30000 } */
  heartbeat?: { interval?: number } | false
  /** How long `app.close()` waits for close handshakes before it terminates what is left. @default { timeout: 5000 } */
  shutdown?: { timeout?: number }
  /** Passed to @fastify/websocket when fastify-realtime registers it (`options.maxPayload` comes from `limits`). */
  websocket?: WebsocketPluginOptions
  /** Set when the app registered @fastify/websocket itself with `{ preClose: realtimePreClose }`. @default false */
  externalWebsocket?: boolean
  /** Delivers fan-outs; `redisBroker()` from `fastify-realtime/redis` spans instances. @default in-process */
  broker?: Broker
  /** Serves the AsyncAPI document (`path`) and a docs page (`page`) of the realtime routes. @default not served */
  asyncapi?: AsyncApiServeOptions | false
  /** Rooms that keep a numbered history their members recover from after a reconnect. @default none */
  history?: HistoryOptions
  /** Rooms that keep a member list with join, leave and update events (see docs/06-presence.md). @default none */
  presence?: PresenceOptions
  /** Prometheus metrics: `realtimeMetrics({ registry })` from `fastify-realtime/metrics`. @default none (nothing counted for them) */
  metrics?: RealtimeMetrics
  /**
   * Idempotency keys: a request that carries `key` runs once per key and user within `window`; a retry gets the
   * first outcome. Kept by the broker (in memory, or in Redis with `redisBroker()`). `false` ignores keys.
   * @default { window: 120000, maxKeys: 1000, memoryBudget: 16777216, maxOutcomeBytes: 65536 }
   */
  idempotency?: IdempotencyOptions | false
  /**
   * Every route also serves clients whose network blocks WebSockets, over an HTTP stream and POSTed batches
   * (docs/15-fallback.md); a route's own `fallback` overrides it. @default false
   */
  fallback?: boolean
}

export interface ResolvedAuth {
  sources: readonly TokenSource[]
  namespace: string | undefined
  /** The request method that verifies a token: `jwtVerify` or `<namespace>JwtVerify`. */
  verifier: string
  cookieName: string
  authenticate: ((request: FastifyRequest) => unknown) | undefined
  userId: (user: any) => string | undefined
  closeOnExpiry: boolean
  algorithms: readonly string[]
}

export interface ResolvedLimits {
  maxPayload: number
  rate: number
  burst: number
  byteRate: number
  byteBurst: number
  maxRoomsPerConnection: number
  maxRoomNameLength: number
  maxViolations: number
  maxPending: number
  maxBufferedBytes: number
  handlerTimeout: number
  onSlowConsumer: 'close' | 'drop'
  maxConnections: number
  maxConnectionsPerUser: number
  maxConnectionsPerIp: number
}

export interface ResolvedOptions {
  origins: OriginsOption | undefined
  requireOrigin: boolean
  refusalLogLevel: 'info' | 'debug'
  auth: ResolvedAuth | false
  limits: ResolvedLimits
  heartbeatInterval: number | false
  shutdownTimeout: number
  history: ResolvedHistory | undefined
  presence: ResolvedPresence | undefined
  idempotency: ResolvedIdempotency | undefined
  fallback: boolean
}

const ALL_ALGORITHMS = ['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512', 'EdDSA']
const SOURCES: ReadonlySet<string> = new Set(['header', 'protocol', 'cookie', 'query'])

function defaultUserId (user: any): string | undefined {
  const sub = user?.sub
  return typeof sub === 'string' || typeof sub === 'number' ? String(sub) : undefined
}

/** The longest delay a Node timer keeps (2^31 - 1 ms); a longer one fires after 1 ms. */
export const MAX_TIMER = 2 ** 31 - 1

function positive (name: string, value: number | undefined, fallback: number, allowInfinity = false): number {
  if (value === undefined) return fallback
  const ok = typeof value === 'number' && value > 0 && (Number.isFinite(value) || (allowInfinity && value === Infinity))
  if (!ok) throw new RT_ERR_OPTIONS(`${name}: expected a positive number, got ${String(value)}`)
  return value
}

export function checkOrigins (origins: unknown, where: string): void {
  if (origins === undefined || origins === '*' || origins instanceof RegExp || typeof origins === 'function') return
  if (!Array.isArray(origins)) throw new RT_ERR_OPTIONS(`${where}: expected '*', an array of origins, a RegExp or a function`)
  for (const o of origins) {
    if (o === 'null') continue
    let parsed: URL
    try { parsed = new URL(o) } catch { throw new RT_ERR_OPTIONS(`${where}: "${String(o)}" is not an origin like https://app.example.com`) }
    if (parsed.origin === 'null') throw new RT_ERR_OPTIONS(`${where}: "${String(o)}" has no origin`)
  }
}

export function resolveAuth (auth: AuthOptions | false | undefined, where: string): ResolvedAuth | false {
  if (auth === false) return false
  if (auth !== undefined && (typeof auth !== 'object' || auth === null)) throw new RT_ERR_OPTIONS(`${where}: expected an object or false`)
  checkKeys(auth, OPTION_KEYS.auth, where)
  const sources = auth?.sources ?? ['header', 'protocol', 'cookie']
  for (const s of sources) if (!SOURCES.has(s)) throw new RT_ERR_OPTIONS(`${where}.sources: unknown source "${String(s)}"`)
  if (auth?.authenticate !== undefined && typeof auth.authenticate !== 'function') throw new RT_ERR_OPTIONS(`${where}.authenticate: expected a function`)
  const algorithms = auth?.algorithms ?? ALL_ALGORITHMS
  if (algorithms.some((a) => a.toLowerCase() === 'none')) throw new RT_ERR_OPTIONS(`${where}.algorithms: "none" is never accepted`)
  const namespace = auth?.namespace
  if (namespace !== undefined && (typeof namespace !== 'string' || namespace === '')) throw new RT_ERR_OPTIONS(`${where}.namespace: expected the name given to @fastify/jwt's namespace option`)
  return {
    sources,
    namespace,
    verifier: namespace === undefined ? 'jwtVerify' : `${namespace}JwtVerify`,
    cookieName: auth?.cookieName ?? 'token',
    authenticate: auth?.authenticate,
    userId: auth?.userId ?? defaultUserId,
    closeOnExpiry: auth?.closeOnExpiry ?? true,
    algorithms
  }
}

/** The keys each options object accepts; anything else is a typo that would otherwise be ignored in silence. */
export const OPTION_KEYS = {
  options: ['origins', 'requireOrigin', 'refusalLogLevel', 'auth', 'limits', 'heartbeat', 'shutdown', 'websocket', 'externalWebsocket', 'broker', 'asyncapi', 'history', 'metrics', 'presence', 'idempotency', 'fallback'],
  presence: PRESENCE_KEYS,
  auth: ['sources', 'cookieName', 'authenticate', 'userId', 'closeOnExpiry', 'algorithms', 'namespace'],
  limits: ['maxPayload', 'rate', 'burst', 'byteRate', 'maxRoomsPerConnection', 'maxRoomNameLength', 'maxViolations', 'maxPending', 'maxBufferedBytes', 'handlerTimeout', 'onSlowConsumer', 'maxConnections', 'maxConnectionsPerUser', 'maxConnectionsPerIp'],
  heartbeat: ['interval'],
  shutdown: ['timeout']
} as const

function refusalLogLevel (level: unknown): 'info' | 'debug' {
  if (level === undefined) return 'debug'
  if (level !== 'info' && level !== 'debug') throw new RT_ERR_OPTIONS(`refusalLogLevel: expected 'info' or 'debug', got ${String(level)}`)
  return level
}

/** Applies the defaults and throws `RT_ERR_OPTIONS` for anything that cannot work. */
export function resolveOptions (options: RealtimeOptions): ResolvedOptions {
  checkKeys(options, OPTION_KEYS.options, '')
  for (const key of ['limits', 'heartbeat', 'shutdown', 'presence'] as const) checkKeys(options[key], OPTION_KEYS[key], key)
  checkOrigins(options.origins, 'origins')
  const l = options.limits ?? {}
  const rate = positive('limits.rate', l.rate, 100)
  const maxPayload = positive('limits.maxPayload', l.maxPayload, 64 * 1024)
  const byteRate = positive('limits.byteRate', l.byteRate, 1024 * 1024)
  if (l.onSlowConsumer !== undefined && l.onSlowConsumer !== 'close' && l.onSlowConsumer !== 'drop') {
    throw new RT_ERR_OPTIONS(`limits.onSlowConsumer: expected 'close' or 'drop', got ${String(l.onSlowConsumer)}`)
  }
  const hb = options.heartbeat
  const handlerTimeout = l.handlerTimeout === 0 ? 0 : positive('limits.handlerTimeout', l.handlerTimeout, 30_000)
  if (handlerTimeout > MAX_TIMER) throw new RT_ERR_OPTIONS(`limits.handlerTimeout: at most ${MAX_TIMER} ms (a longer timer fires at once), got ${handlerTimeout}`)
  const maxBufferedBytes = positive('limits.maxBufferedBytes', l.maxBufferedBytes, 1024 * 1024)
  return {
    origins: options.origins,
    requireOrigin: options.requireOrigin ?? false,
    refusalLogLevel: refusalLogLevel(options.refusalLogLevel),
    auth: resolveAuth(options.auth, 'auth'),
    limits: {
      maxPayload,
      rate,
      burst: positive('limits.burst', l.burst, rate),
      byteRate,
      byteBurst: Math.max(byteRate, maxPayload),
      maxRoomsPerConnection: positive('limits.maxRoomsPerConnection', l.maxRoomsPerConnection, 128),
      maxRoomNameLength: positive('limits.maxRoomNameLength', l.maxRoomNameLength, 255),
      maxViolations: positive('limits.maxViolations', l.maxViolations, 50),
      maxPending: positive('limits.maxPending', l.maxPending, 256),
      maxBufferedBytes,
      handlerTimeout,
      onSlowConsumer: l.onSlowConsumer ?? 'close',
      maxConnections: positive('limits.maxConnections', l.maxConnections, Infinity, true),
      maxConnectionsPerUser: positive('limits.maxConnectionsPerUser', l.maxConnectionsPerUser, Infinity, true),
      maxConnectionsPerIp: positive('limits.maxConnectionsPerIp', l.maxConnectionsPerIp, Infinity, true)
    },
    heartbeatInterval: hb === false ? false : positive('heartbeat.interval', hb?.interval, 30_000),
    shutdownTimeout: positive('shutdown.timeout', options.shutdown?.timeout, 5000),
    history: resolveHistory(options.history, maxBufferedBytes),
    presence: resolvePresence(options.presence),
    idempotency: resolveIdempotency(options.idempotency, handlerTimeout),
    fallback: flag('fallback', options.fallback, false)
  }
}

function flag (name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw new RT_ERR_OPTIONS(`${name} must be a boolean, got ${JSON.stringify(value)}`)
  return value
}
