import { resolveBackoff, type BackoffOptions } from './reconnect.js'
import type { AnyRoute, WebSocketConstructor } from './types.js'
import type { RealtimeClient } from './client.js'

/** Options of `createClient()`. */
export interface ClientOptions<R extends AnyRoute = AnyRoute> {
  /** A fixed session token. */
  token?: string
  /** Called on every connect, so a renewed token is used after an expiry; lets the client come back after 4401. */
  getToken?: () => string | Promise<string>
  /**
   * How the token travels: a `bearer.<token>` subprotocol entry (browsers cannot set headers), or `?token=`
   * (only when the app lists the `query` source). @default 'protocol'
   */
  tokenSource?: 'protocol' | 'query'
  /** The application subprotocol offered beside the token. @default 'realtime.v1' */
  protocol?: string
  /** The WebSocket constructor: pass `ws`'s on Node 20. @default globalThis.WebSocket */
  WebSocket?: WebSocketConstructor
  /** `fetch`, to learn why a handshake was refused, and for the HTTP-streaming fallback. @default globalThis.fetch */
  fetch?: typeof fetch
  /**
   * The transports to use, in order of preference: `'websocket'`, and `'stream'`, the HTTP-streaming fallback of a
   * route with `fallback: true` (docs/15-fallback.md). With both, the client falls back to the stream when a
   * WebSocket does not open within `fallbackAfter`, or fails on the way to a route that says it serves the stream
   * (a proxy's refusal, a cut), never on the route's own refusals (401, 403, 429…); on the stream it tries a
   * WebSocket again every `probeInterval` and moves over when one opens (only when `'websocket'` comes first).
   * @default ['websocket', 'stream']
   */
  transports?: ReadonlyArray<'websocket' | 'stream'>
  /** How long (ms) a WebSocket may take to open before the stream is tried. @default 3000 */
  fallbackAfter?: number
  /** On the stream, how often (ms) a WebSocket is tried again (0: never). @default 30000 */
  probeInterval?: number
  /**
   * Reconnect delays, exponential with full jitter; the count starts again once a connection stayed open
   * `stableAfter` ms. `base` and `cap` must be > 0 (the constructor throws RangeError). Every delay and timeout is
   * clamped to 2^31 - 1 ms. @default { base: 500, cap: 30000, stableAfter: 5000 }
   */
  backoff?: BackoffOptions
  /** Reconnect attempts in a row before giving up. @default Infinity */
  maxAttempts?: number
  /** How long (ms) a connect attempt, or the diagnosis of a failed one, may take (0: no limit). @default 10000 */
  connectTimeout?: number
  /** App-level ping period in ms (0: none). @default 25000 */
  pingInterval?: number
  /** A pong later than this (ms) means a dead link: the client drops it and reconnects (0: wait forever). @default 10000 */
  pingTimeout?: number
  /** Request timeout in ms, counted from the call, queued time included (0: none). @default 10000 */
  requestTimeout?: number
  /** Messages kept while disconnected; past it `send` throws `QUEUE_FULL`. @default 100 */
  maxQueue?: number
  /**
   * Runs after each reconnect, before the messages queued while away are sent: re-join rooms here. What it sends
   * through the client it is given goes out at once (its own requests must); what the rest of the app sends while
   * it runs is queued behind the queue made while away, and all of it leaves once the hook is over, in call order.
   */
  onReconnect?: (client: RealtimeClient<R>) => unknown
  /**
   * Which requests carry an idempotency key (a random UUID, the same on every try) and are retried with it instead
   * of rejected: after a disconnect (sent again after the reconnect and `onReconnect`, in call order), and after
   * `REQUEST_IN_PROGRESS` or `STORE_UNAVAILABLE` (after a backoff, 10 times at most); the request's timeout bounds it
   * all. `true`: every request; a list: the requests of these types. A request's own `retry` option wins. A keyed
   * request waits for the server's key store and is refused while it is down (Redis): opt in where exactly-once
   * matters more than that. @default false
   */
  retry?: boolean | string[]
  /**
   * Track positions in history rooms, send them (`rt.resume`) first after a reconnect, and drop events already
   * delivered. @default true
   */
  recovery?: boolean
}

/** Options of `client.request()`. */
export interface RequestOptions {
  /** ms, counted from the call, queued time included (0: none). @default the client's `requestTimeout` */
  timeout?: number
  /**
   * The idempotency key (16-64 characters of A-Z a-z 0-9 _ -): another request's `err.key` to retry it.
   * @default a random UUID with `retry`, else none
   */
  key?: string
  /** Retry this request with its key after a disconnect, `REQUEST_IN_PROGRESS` and `STORE_UNAVAILABLE`. @default the client's `retry` */
  retry?: boolean
}

type Defaulted = 'backoff' | 'transports' | 'fallbackAfter' | 'probeInterval' | 'tokenSource' | 'protocol' | 'maxAttempts' | 'connectTimeout' | 'pingInterval' | 'pingTimeout' | 'requestTimeout' | 'maxQueue' | 'recovery'
/** The options with every default applied. */
export type ResolvedOptions<R extends AnyRoute> = Omit<ClientOptions<R>, 'backoff'> & Required<Pick<ClientOptions<R>, Defaulted>> & { backoff: Required<BackoffOptions> }

export function resolveOptions<R extends AnyRoute> (options: ClientOptions<R>): ResolvedOptions<R> {
  return {
    ...options,
    backoff: resolveBackoff(options.backoff),
    transports: resolveTransports(options.transports),
    fallbackAfter: options.fallbackAfter ?? 3000,
    probeInterval: options.probeInterval ?? 30_000,
    tokenSource: options.tokenSource ?? 'protocol',
    protocol: options.protocol ?? 'realtime.v1',
    maxAttempts: options.maxAttempts ?? Infinity,
    connectTimeout: options.connectTimeout ?? 10_000,
    pingInterval: options.pingInterval ?? 25_000,
    pingTimeout: options.pingTimeout ?? 10_000,
    requestTimeout: options.requestTimeout ?? 10_000,
    maxQueue: options.maxQueue ?? 100,
    recovery: options.recovery ?? true
  }
}

/** `transports`, checked: a non-empty list of 'websocket' and 'stream' (TypeError otherwise). */
function resolveTransports (transports: ClientOptions['transports']): ReadonlyArray<'websocket' | 'stream'> {
  if (transports === undefined) return ['websocket', 'stream']
  if (!Array.isArray(transports) || transports.length === 0 || transports.some((t) => t !== 'websocket' && t !== 'stream')) {
    throw new TypeError("transports must be a non-empty list of 'websocket' and 'stream'")
  }
  return [...new Set(transports)]
}
