import { diagnose } from './diagnose.js'
import { decodeIncoming, encodeOutgoing, KEY_PATTERN, newKey } from './envelope.js'
import { ClientErrorCode, RealtimeClientError } from './errors.js'
import { Listeners } from './listeners.js'
import { Liveness } from './liveness.js'
import { resolveOptions, type ClientOptions, type RequestOptions, type ResolvedOptions } from './options.js'
import { Outbox } from './outbox.js'
import { Positions, type RoomPosition } from './positions.js'
import { PresenceViews, type PresenceView } from './presence.js'
import { backoffDelay, CloseCode, isSendableCloseCode, shouldReconnect } from './reconnect.js'
import { handshakeOf, listen } from './socket.js'
import { StreamLink } from './stream.js'
import { deadline } from './timer.js'
import type { AnyRoute, LifecycleEvents, ListenerData, ListenerType, MessageData, MessageType, ReplyData, Transport, WebSocketConstructor, WebSocketLike } from './types.js'

/**
 * The client's life (`state`; docs/03-the-client.md, "The client's states", draws it):
 *
 *   connecting ──open──▶ open ──abnormal close, dead link──▶ reconnecting ──backoff, new socket──▶ open …
 *   (the attempt count starts again only once a connection stayed open backoff.stableAfter)
 *       │                  └──final close code (1000, 1008, 4401 without getToken…)──▶ closed
 *       └─ an attempt fails before open ─▶ diagnosis over HTTP ─┬─ network, 426, 429, 5xx, TOKEN_EXPIRED ─▶ reconnecting
 *                                                               └─ other 4xx (401, 403) ─▶ closed
 *   any ──close(), maxAttempts──▶ closed: timers cleared, requests rejected, nothing left running
 *
 * Transports (`transports`, docs/15-fallback.md): a connect tries a WebSocket; one that has not opened within
 * `fallbackAfter`, or failed on the way to a route that serves the stream (the diagnosis got a 426 with
 * `X-Realtime-Fallback: stream`), is followed at once by the HTTP stream. A stream that fails before opening sends the next attempt (after the backoff) to a WebSocket
 * again. On an open stream a WebSocket is tried every `probeInterval`; once one opens, the client waits (at most
 * UPGRADE_WAIT) for the stream's requests and batches to be answered, then moves: the WebSocket opens as a reconnect
 * (resume, onReconnect, the queue) and the stream is closed after onReconnect, so rooms are joined again first.
 */
export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed'

const OPEN = 1
const PING = '{"type":"ping"}'
/** The server's answers that mean "nothing ran yet, or the first run is not over: ask again with the same key". */
const RETRY_LATER: ReadonlySet<string> = new Set(['REQUEST_IN_PROGRESS', 'STORE_UNAVAILABLE'])
/**
 * The longest the diagnosis of a failed connect may delay the next attempt (ms). It is best effort: no answer in
 * time means "the network", which is retried. A fetch can hang on a connection reset at accept (seen with Node's
 * undici through a proxy dropping links): the reconnect must not wait `connectTimeout` for it.
 */
const DIAGNOSIS_TIMEOUT = 3000
const PRESENCE: ReadonlySet<string> = new Set(['rt.presence', 'rt.presence.diff', 'rt.presence.left'])
/** The longest a WebSocket that opened beside the stream waits for the stream's requests to be answered (ms). */
const UPGRADE_WAIT = 2000
/** How often that wait looks whether they were. */
const UPGRADE_POLL = 20
const LIFECYCLE: ReadonlySet<string> = new Set<keyof LifecycleEvents>(['open', 'close', 'reconnecting', 'offline', 'error', 'binary', 'recovery'])

/**
 * A typed client of one realtime route. It connects at once, reconnects with backoff after an abnormal close,
 * queues what is sent while it is away, and asks the server why when a handshake fails.
 */
/** A WebSocket opened while the stream carries the connection. */
interface Upgrade {
  ws: WebSocketLike
  detach: () => void
  /** It opened: what is sent now waits, until the stream is quiet and the WebSocket takes over. */
  opened: boolean
  /** Frames it got before taking over (an onOpen's message), handled after the switch. */
  early: unknown[]
  timer: ReturnType<typeof setTimeout> | undefined
  poll: ReturnType<typeof setInterval> | undefined
}

export class RealtimeClient<R extends AnyRoute = AnyRoute> {
  readonly url: string
  private readonly options: ResolvedOptions<R>
  private readonly WS: WebSocketConstructor | undefined
  private readonly fetchFn: typeof fetch | undefined
  /** The transport of the connection, or of the attempt under way. */
  private current: Transport
  /** The WebSocket attempt's deadline before the stream is tried. */
  private fallbackTimer: ReturnType<typeof setTimeout> | undefined
  /** The next try of a WebSocket while on the stream. */
  private probeTimer: ReturnType<typeof setTimeout> | undefined
  private upgrading: Upgrade | undefined
  /** The stream the client moved away from: closed once onReconnect ran on the WebSocket. */
  private retiring: WebSocketLike | undefined
  private readonly outbox: Outbox
  private readonly link: Liveness
  private readonly listeners = new Listeners()
  private readonly positions = new Positions()
  private readonly presenceViews = new PresenceViews()
  private currentState: ClientState = 'connecting'
  private ws: WebSocketLike | undefined
  private detach: (() => void) | undefined
  /** The socket is open and frames go straight out. */
  private ready = false
  private everOpened = false
  private attempt = 0
  private token: string | undefined
  /** A token given to `refreshToken` whose answer has not come: the next connect uses it (before `getToken`). */
  private freshToken: string | undefined
  /** The deadline of a `getToken` call (`connectTimeout`). */
  private tokenTimer: ReturnType<typeof setTimeout> | undefined
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  /** Resets the attempt count once the connection stayed open `backoff.stableAfter` ms. */
  private stableTimer: ReturnType<typeof setTimeout> | undefined
  private diagnosis: AbortController | undefined
  /** The client itself; `onReconnect` gets a view of it (Object.create) whose frames go out while the rest wait. */
  private readonly root: RealtimeClient<R> = this
  /** The socket whose `onReconnect` runs: until it is over, what is sent (but by the hook's view) is queued. */
  private holding: WebSocketLike | undefined
  /** Set on the hook's view only: the socket its frames go out on at once. */
  private readonly direct: WebSocketLike | undefined

  constructor (url: string, options: ClientOptions<R> = {}) {
    this.options = resolveOptions(options)
    const { transports } = this.options
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (WS === undefined && transports.includes('websocket')) {
      throw new TypeError('no WebSocket: pass options.WebSocket (on Node 20: import WebSocket from \'ws\'), or transports: [\'stream\']')
    }
    const fetchFn = options.fetch ?? (globalThis as { fetch?: typeof fetch }).fetch?.bind(globalThis)
    if (fetchFn === undefined && transports.length === 1 && transports[0] === 'stream') throw new TypeError('no fetch for the stream: pass options.fetch')
    this.url = url
    this.WS = WS
    this.fetchFn = fetchFn
    this.current = transports[0] as Transport
    this.token = options.token
    this.outbox = new Outbox(this.options.maxQueue)
    this.link = new Liveness(this.options)
    this.background(this.connect())
  }

  /** What carries the connection (or the attempt under way): `'websocket'`, or `'stream'`, the HTTP-streaming fallback. */
  get transport (): Transport {
    return this.root.current
  }

  /** `connecting`, `open`, `reconnecting`, or `closed` for good. */
  get state (): ClientState {
    return this.currentState
  }

  /** Fire and forget; queued while disconnected. Throws `QUEUE_FULL` past `maxQueue`, `CLOSED` once closed. */
  send<K extends MessageType<R>> (type: K, data: MessageData<R, K>): void {
    this.transmit(encodeOutgoing(type, data), undefined)
  }

  /**
   * Sends with a fresh id and resolves with the reply's data. Rejects with the server's error (`code`, `message`,
   * `details`), `TIMEOUT` (counted from this call), `DISCONNECTED` when the connection drops before the reply, or
   * the reason the client gave up. With `retry` (or the client's `retry` option naming the type) the request carries
   * an idempotency key (a random UUID), the same on every try, and a disconnect, `REQUEST_IN_PROGRESS` and
   * `STORE_UNAVAILABLE` are retried with it instead; `key` sends one of the app's own (another request's `err.key`).
   * A rejection of a keyed request carries the key (`err.key`): a retry with it runs the handler at most once.
   */
  async request<K extends MessageType<R>> (type: K, data: MessageData<R, K>, options: RequestOptions = {}): Promise<ReplyData<R, K>> {
    const { retry: byType } = this.options
    const retry = options.retry ?? (byType === true || (Array.isArray(byType) && byType.includes(type)))
    // A key only where a retry is meant: a keyed request waits for the server's key store (Redis) before it runs,
    // and is refused (STORE_UNAVAILABLE) while the store is down, where a request without one runs as ever.
    const key = options.key ?? (retry ? newKey() : undefined)
    if (key !== undefined && (typeof key !== 'string' || !KEY_PATTERN.test(key))) throw new TypeError('an idempotency key is 16-64 characters of A-Z a-z 0-9 _ -')
    return await this.call(type, data, options.timeout, key, retry) as ReplyData<R, K>
  }

  /**
   * Renews the session over the open socket (`auth.refresh`) with `token`, or one from `getToken`; later
   * reconnects use it too. Resolves with the new expiry (seconds since the epoch); rejects with `INVALID_TOKEN`
   * or `TOKEN_EXPIRED`, and the old expiry stands. A refresh cut off by a close (a 4401 racing it: `DISCONNECTED`) is
   * not lost: the reconnect uses its token, even without `getToken`.
   */
  async refreshToken (token?: string): Promise<{ exp: number | null }> {
    const next = token ?? await this.options.getToken?.()
    if (next === undefined) throw new RealtimeClientError(ClientErrorCode.NO_TOKEN, 'refreshToken needs a token or getToken')
    const root = this.root
    // Until the answer, the token waits to be used: a close that races the refresh (4401) reconnects with it.
    root.freshToken = next
    let reply: { exp: number | null }
    try {
      reply = await this.call('auth.refresh', { token: next }, undefined) as { exp: number | null }
    } catch (err) {
      if (root.freshToken === next && (err as RealtimeClientError).code !== ClientErrorCode.DISCONNECTED) root.freshToken = undefined
      throw err
    }
    root.token = next
    if (root.freshToken === next) root.freshToken = undefined
    // The stream's batches carry the token: the renewed session needs the renewed token.
    if (root.ws instanceof StreamLink) root.ws.setToken(next)
    return reply
  }

  /** The client's position in a history room (`{ epoch, offset }`), or undefined. */
  position (room: string): RoomPosition | undefined {
    return this.positions.get(room)
  }

  /**
   * Sets the position of a history room, from an HTTP snapshot that read `app.realtime.history(room).position()`
   * before loading its data; the next join of the room replays what came after it. Throws `TypeError` for a
   * malformed position.
   */
  setPosition (room: string, position: RoomPosition): void {
    this.positions.set(room, position)
    const frame = this.positions.resumeOne(room)
    if (frame !== undefined && this.ready && this.ws?.readyState === OPEN && this.options.recovery) this.ws.send(frame)
  }

  /**
   * A presence room's members (a read-only Map, key → data) and its `join`, `leave`, `update` and `sync` events,
   * kept from the server's snapshots and diffs. After a reconnect (and the room's join again) the new snapshot is
   * compared with what the client had: only the joins, leaves and updates of the outage fire.
   */
  presence (room: string): PresenceView {
    return this.presenceViews.get(room)
  }

  /** Listens to a route event or a lifecycle event (`open`, `close`, `reconnecting`, `offline`, `error`, `binary`). */
  on<K extends ListenerType<R>> (type: K, listener: (data: ListenerData<R, K>) => void): this {
    this.listeners.add(type, listener)
    return this
  }

  off<K extends ListenerType<R>> (type: K, listener: (data: ListenerData<R, K>) => void): this {
    this.listeners.remove(type, listener)
    return this
  }

  /** Closes for good: no reconnect, every timer cleared, what waits rejected with `CLOSED`. */
  close (code: number = CloseCode.NORMAL, reason = ''): void {
    if (this.root !== this) return this.root.close(code, reason)
    if (!isSendableCloseCode(code)) throw new RangeError(`close code ${code}: use 1000 or 3000-4999`)
    if (this.currentState === 'closed') return
    const { ws, ready } = this
    this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, 'the client was closed', { closeCode: code }), false)
    if (ws !== undefined && ws.readyState <= OPEN) ws.close(code, reason)
    if (ready) this.emit('close', { code, reason })
  }

  private async call (type: string, data: unknown, timeout = this.options.requestTimeout, key?: string, retry = false): Promise<unknown> {
    const id = this.outbox.nextId()
    const frame = encodeOutgoing(type, data, id, key)
    const reply = this.outbox.expect(id, type, timeout, { frame, key, retry })
    try {
      this.transmit(frame, id)
    } catch (err) {
      this.outbox.forget(id)
      throw err
    }
    return await reply
  }

  /** Sends now when the socket is open (and no `onReconnect` runs but the caller's own), else queues. */
  private transmit (frame: string, id: string | undefined): void {
    if (this.currentState === 'closed') throw new RealtimeClientError(ClientErrorCode.CLOSED, 'the client is closed')
    if (!this.canSend() || this.ws === undefined) return this.outbox.enqueue(frame, id, this.ready && this.holding !== undefined)
    this.ws.send(frame)
    if (id !== undefined) this.outbox.sent(id)
  }

  /** Sends a request again (same frame, id and key): now when the socket is open, else queued (past `maxQueue`: it was accepted already). */
  private resend (frame: string, id: string): void {
    if (this.isClosed()) return
    if (!this.root.canSend() || this.ws === undefined) return this.outbox.requeue(frame, id)
    this.ws.send(frame)
    this.outbox.sent(id)
  }

  /**
   * The wait before retry `n` of a request the server asked to retry later: the reconnect backoff's ceiling for `n`,
   * with half of it fixed (a store that refuses at once would otherwise be asked again at once, ten times).
   */
  private retryDelay (n: number): number {
    const ceiling = backoffDelay(n, this.options.backoff, () => 1)
    return Math.floor(ceiling / 2 + Math.random() * ceiling / 2)
  }

  /** The socket is open, and this is not a frame from elsewhere while `onReconnect` runs (it waits for the hook). */
  private canSend (): boolean {
    return this.ready && this.ws?.readyState === OPEN && (this.holding === undefined || this.direct === this.holding) && this.upgrading?.opened !== true
  }

  private emit (type: string, data: unknown): void {
    this.listeners.emit(type, data)
  }

  private async connect (): Promise<void> {
    if (this.freshToken !== undefined) {
      this.token = this.freshToken
      this.freshToken = undefined
    } else if (this.options.getToken !== undefined) {
      try {
        this.token = await this.fetchToken(this.options.getToken)
      } catch (err) {
        if (this.isClosed()) return
        const why = `getToken failed: ${(err as Error)?.message ?? String(err)}`
        this.emit('error', new RealtimeClientError(ClientErrorCode.GET_TOKEN_FAILED, why))
        return this.schedule(why)
      }
    }
    if (this.isClosed()) return
    if (this.current === 'stream') return this.openStream()
    const { url, protocols } = handshakeOf(this.url, this.token, this.options.tokenSource, this.options.protocol)
    let ws: WebSocketLike
    try {
      ws = new (this.WS as WebSocketConstructor)(url, protocols)
    } catch (err) {
      return this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, `cannot open ${this.url}: ${(err as Error).message}`), true)
    }
    this.attach(ws)
    this.link.connecting(() => { this.abandon('connect timeout') })
    if (this.canFallBack()) this.fallbackTimer = deadline(this.options.fallbackAfter, () => { this.fallBack() })
  }

  /** Makes `ws` the connection's link: its frames and its close are the client's. */
  private attach (ws: WebSocketLike): void {
    this.ws = ws
    ws.binaryType = 'arraybuffer'
    this.detach = listen(ws, {
      open: () => { this.handleOpen(ws) },
      message: (data) => { this.handleMessage(data) },
      close: (code, reason) => { this.background(this.handleClose(code, reason)) }
    })
  }

  private openStream (): void {
    const { tokenSource, protocol } = this.options
    this.attach(new StreamLink(this.url, { token: this.token, tokenSource, protocol, fetch: this.fetchFn as typeof fetch }))
    this.link.connecting(() => { this.abandon('connect timeout') })
  }

  /** The stream may follow a WebSocket that failed. */
  private canFallBack (): boolean {
    return this.current === 'websocket' && this.options.transports.includes('stream') && this.fetchFn !== undefined
  }

  /** The WebSocket did not open within `fallbackAfter`: it is dropped and the stream tried at once. */
  private fallBack (): void {
    this.fallbackTimer = undefined
    const ws = this.ws
    if (this.ready || ws === undefined || this.isClosed()) return
    this.detach?.()
    this.detach = undefined
    if (typeof ws.terminate === 'function') ws.terminate()
    else ws.close(CloseCode.NORMAL)
    this.current = 'stream'
    this.openStream()
  }

  /** On the stream: a WebSocket is tried again in `probeInterval`. */
  private scheduleProbe (): void {
    clearTimeout(this.probeTimer)
    this.probeTimer = undefined
    // Only where a WebSocket is preferred: `['stream', 'websocket']` stays on the stream it prefers.
    if (this.current !== 'stream' || this.WS === undefined || this.options.transports[0] !== 'websocket') return
    this.probeTimer = deadline(this.options.probeInterval, () => {
      this.probeTimer = undefined
      this.probe()
    })
  }

  /** Opens a WebSocket beside the open stream; if it opens, the connection moves to it (`upgradeOpened`). */
  private probe (): void {
    if (!this.ready || this.current !== 'stream' || this.upgrading !== undefined || this.isClosed()) return
    const { url, protocols } = handshakeOf(this.url, this.token, this.options.tokenSource, this.options.protocol)
    let ws: WebSocketLike
    try {
      ws = new (this.WS as WebSocketConstructor)(url, protocols)
    } catch {
      return this.scheduleProbe()
    }
    ws.binaryType = 'arraybuffer'
    const up: Upgrade = { ws, detach: () => {}, opened: false, early: [], timer: undefined, poll: undefined }
    this.upgrading = up
    up.detach = listen(ws, {
      open: () => { this.upgradeOpened(up) },
      message: (data) => { up.early.push(data) },
      close: () => { if (this.upgrading === up) this.cancelUpgrade() }
    })
    up.timer = deadline(this.options.connectTimeout, () => { if (this.upgrading === up) this.cancelUpgrade() })
  }

  /** The probe's WebSocket opened: what is sent now waits; the move comes once the stream is quiet (or UPGRADE_WAIT). */
  private upgradeOpened (up: Upgrade): void {
    if (this.upgrading !== up) return
    up.opened = true
    clearTimeout(up.timer)
    up.timer = setTimeout(() => { this.completeUpgrade(up) }, UPGRADE_WAIT)
    up.poll = setInterval(() => {
      const stream = this.ws
      if (!this.outbox.waiting && (!(stream instanceof StreamLink) || stream.idle)) this.completeUpgrade(up)
    }, UPGRADE_POLL)
  }

  /** The probe failed (or the stream went first): its socket is dropped, the queue goes on over the stream. */
  private cancelUpgrade (): void {
    const up = this.upgrading
    if (up === undefined) return
    this.upgrading = undefined
    clearTimeout(up.timer)
    clearInterval(up.poll)
    up.detach()
    if (up.ws.readyState <= OPEN) {
      if (typeof up.ws.terminate === 'function') up.ws.terminate()
      else up.ws.close(CloseCode.NORMAL)
    }
    if (this.ready && !this.isClosed()) {
      if (up.opened && this.ws !== undefined) this.flush(this.ws)
      this.scheduleProbe()
    }
  }

  /**
   * The move from the stream to the WebSocket, as a reconnect: the stream is read no more (a request still waiting on
   * it is failed or retried as after a drop), the WebSocket opens with the resume frame, onReconnect and the queue,
   * and the stream is closed once onReconnect is over. History rooms lose and repeat nothing (the positions).
   */
  private completeUpgrade (up: Upgrade): void {
    if (this.upgrading !== up) return
    this.upgrading = undefined
    clearTimeout(up.timer)
    clearInterval(up.poll)
    up.detach()
    if (up.ws.readyState !== OPEN || !this.ready || this.isClosed()) {
      up.ws.close(CloseCode.NORMAL)
      return
    }
    this.retiring = this.ws
    this.leaveLink(new RealtimeClientError(ClientErrorCode.DISCONNECTED, 'the connection moved to a WebSocket before the reply: the request may have run', { closeCode: CloseCode.NORMAL }))
    this.current = 'websocket'
    this.attach(up.ws)
    this.handleOpen(up.ws)
    for (const data of up.early) this.handleMessage(data)
  }

  /** Closes the stream the client moved away from. */
  private retire (): void {
    const old = this.retiring
    this.retiring = undefined
    if (old !== undefined && old.readyState <= OPEN) old.close(CloseCode.NORMAL, 'moved to a WebSocket')
  }

  /** `getToken()`, bounded by `connectTimeout` (a promise that never settles would stall the client for good). */
  private async fetchToken (getToken: () => string | Promise<string>): Promise<string> {
    const { connectTimeout } = this.options
    return await new Promise<string>((resolve, reject) => {
      this.tokenTimer = deadline(connectTimeout, () => { reject(new Error(`no token within ${connectTimeout} ms`)) })
      const settle = (): void => { clearTimeout(this.tokenTimer); this.tokenTimer = undefined }
      Promise.resolve().then(getToken).then((token) => { settle(); resolve(token) }, (err: unknown) => { settle(); reject(err) })
    })
  }

  private handleOpen (ws: WebSocketLike): void {
    clearTimeout(this.fallbackTimer)
    this.fallbackTimer = undefined
    const reconnected = this.everOpened
    this.ready = this.everOpened = true
    // A connection that the server closes at once is no success: the count (and the backoff) goes on until it stayed.
    const { stableAfter } = this.options.backoff
    if (stableAfter === 0) this.attempt = 0
    else this.stableTimer = deadline(stableAfter, () => { this.stableTimer = undefined; this.attempt = 0 })
    this.currentState = 'open'
    this.link.opened(() => { ws.send(PING) }, () => { this.abandon('ping timeout') })
    // First frame of the connection, before onReconnect's joins and the queue: the server holds the positions.
    const resume = this.options.recovery ? this.positions.resumeFrame(Date.now()) : undefined
    if (resume !== undefined) ws.send(resume)
    if (this.current === 'stream') this.scheduleProbe()
    const transport = this.current
    const hook = reconnected ? this.options.onReconnect : undefined
    if (hook === undefined) {
      this.flush(ws)
      this.emit('open', { reconnected, transport })
      return this.retire()
    }
    this.emit('open', { reconnected, transport })
    this.background(this.rejoin(ws, hook))
  }

  /**
   * Runs `onReconnect` (re-join rooms there), then sends what was queued while away, in order. The hook gets a view
   * of the client whose frames go out at once; what the rest of the app sends meanwhile is queued behind the queue.
   */
  private async rejoin (ws: WebSocketLike, hook: NonNullable<ClientOptions<R>['onReconnect']>): Promise<void> {
    this.holding = ws
    const view = Object.create(this, { direct: { value: ws } }) as RealtimeClient<R>
    try {
      if (this.ws === ws && this.ready) await hook(view)
    } catch (err) {
      // After close() the hook's requests fail with CLOSED: the app asked for it, nothing to report.
      if (!this.isClosed()) this.emit('error', err instanceof RealtimeClientError ? err : new RealtimeClientError(ClientErrorCode.RECONNECT_HOOK_FAILED, String(err)))
    } finally {
      if (this.holding === ws) this.holding = undefined
    }
    this.flush(ws)
    if (this.ws === ws) this.retire()
  }

  /** Sends the queue on `ws`, if it is still the open socket (else the queue waits for the next one). */
  private flush (ws: WebSocketLike): void {
    if (this.ws !== ws || !this.ready) return
    for (const { frame, id } of this.outbox.drain()) this.transmit(frame, id)
  }

  private handleMessage (raw: unknown): void {
    // Any frame proves the link alive, not only the pong (which may wait behind events on a slow link).
    this.link.alive()
    const incoming = decodeIncoming(raw)
    switch (incoming?.kind) {
      case 'pong': return
      case 'reply': return this.outbox.settle(incoming.id, { data: incoming.data })
      case 'error':
        if (incoming.id !== undefined && this.outbox.has(incoming.id)) {
          const { id, error } = incoming
          const later = RETRY_LATER.has(error.code) && this.outbox.retryLater(id, (n) => this.retryDelay(n), (frame) => { this.resend(frame, id) })
          if (!later) this.outbox.settle(id, { error })
          return
        }
        return this.emit('error', incoming.error)
      case 'binary': return this.emit('binary', incoming.data)
      case 'event':
        if (incoming.type === 'rt.position') {
          if (!this.options.recovery) return
          const recovery = this.positions.position(incoming.data)
          if (recovery !== undefined) this.emit('recovery', recovery)
          return
        }
        if (PRESENCE.has(incoming.type)) return this.presenceViews.receive(incoming.type, incoming.data)
        if (LIFECYCLE.has(incoming.type)) return
        if (incoming.offset !== undefined && this.options.recovery &&
          !this.positions.accept(incoming.room as string, incoming.offset, (gap) => { this.emit('recovery', gap) })) return
        this.emit(incoming.type, incoming.data)
    }
  }

  /**
   * The link is left (it closed, or the client moved to a WebSocket): its frames are read no more, its timers stop,
   * the positions are kept for the resume, and what was sent on it and not answered fails with `err` (or is retried).
   */
  private leaveLink (err: RealtimeClientError): void {
    this.ready = false
    this.detach?.()
    this.detach = undefined
    this.link.stop()
    clearTimeout(this.stableTimer)
    this.stableTimer = undefined
    this.positions.closed(Date.now())
    this.outbox.failInFlight(err)
  }

  private async handleClose (code: number, reason: string): Promise<void> {
    const wasOpen = this.ready
    clearTimeout(this.fallbackTimer)
    clearTimeout(this.probeTimer)
    this.fallbackTimer = this.probeTimer = undefined
    this.cancelUpgrade()
    this.retire()
    this.leaveLink(new RealtimeClientError(ClientErrorCode.DISCONNECTED, 'the connection dropped before the reply: the request may have run', { closeCode: code }))
    if (this.isClosed()) return
    this.emit('close', { code, reason })
    const canRenew = this.options.getToken !== undefined || this.freshToken !== undefined
    if (wasOpen) {
      if (shouldReconnect(code, canRenew)) return this.schedule(`closed with ${code}`)
      const why = `closed by the server with ${code}${reason === '' ? '' : ` (${reason})`}`
      return this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, why, { closeCode: code }), true)
    }
    // It failed before opening, and browsers hide why: ask the same URL over plain HTTP.
    const controller = this.diagnosis = new AbortController()
    const verdict = await diagnose(this.url, {
      token: this.token === '' ? undefined : this.token,
      tokenSource: this.options.tokenSource,
      canRenewToken: canRenew,
      protocol: this.options.protocol,
      fetch: this.options.fetch ?? globalThis.fetch?.bind(globalThis),
      controller,
      timeout: Math.min(this.options.connectTimeout, DIAGNOSIS_TIMEOUT)
    })
    this.diagnosis = undefined
    if (this.isClosed()) return
    if (!verdict.retry) {
      return this.giveUp(new RealtimeClientError(verdict.code ?? ClientErrorCode.REFUSED, verdict.message, { status: verdict.status }), true)
    }
    // A WebSocket that failed on the way to a route that serves the stream: the stream, at once. A stream that failed:
    // the next attempt, after the backoff, is a WebSocket again.
    if (verdict.stream && this.canFallBack()) {
      this.current = 'stream'
      return this.background(this.connect())
    }
    if (this.current === 'stream' && this.options.transports.includes('websocket') && this.WS !== undefined) this.current = 'websocket'
    this.schedule(verdict.message)
  }

  /** Runs a task nobody awaits; it is written not to fail, and if it does, the app hears of it. */
  private background (task: Promise<void>): void {
    task.catch((err: unknown) => { this.emit('error', new RealtimeClientError('CLIENT_ERROR', String(err))) })
  }

  /** Read through a method: the state may change across an await or a listener, which narrowing cannot see. */
  private isClosed (): boolean {
    return this.currentState === 'closed'
  }

  private schedule (why: string): void {
    if (this.isClosed()) return
    const max = this.options.maxAttempts
    if (++this.attempt > max) {
      return this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, `gave up after ${max} attempts: ${why}`), true)
    }
    const delay = backoffDelay(this.attempt, this.options.backoff)
    this.currentState = 'reconnecting'
    this.emit('reconnecting', { attempt: this.attempt, delay })
    if (this.isClosed()) return
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      this.background(this.connect())
    }, delay)
  }

  /** Stops for good: timers cleared, the diagnosis aborted, everything waiting rejected with `err`. */
  private giveUp (err: RealtimeClientError, announce: boolean): void {
    if (this.isClosed()) return
    this.currentState = 'closed'
    this.ready = false
    clearTimeout(this.reconnectTimer)
    clearTimeout(this.stableTimer)
    clearTimeout(this.tokenTimer)
    clearTimeout(this.fallbackTimer)
    clearTimeout(this.probeTimer)
    this.reconnectTimer = this.stableTimer = this.tokenTimer = this.fallbackTimer = this.probeTimer = undefined
    this.cancelUpgrade()
    this.retire()
    this.link.stop()
    this.diagnosis?.abort()
    this.detach?.()
    this.detach = undefined
    this.outbox.failAll(err)
    if (announce) this.emit('offline', err)
  }

  /** A dead link: a close handshake would wait on it, so drop the socket and go on as after an abnormal close. */
  private abandon (why: string): void {
    const ws = this.ws
    this.detach?.()
    this.detach = undefined
    if (typeof ws?.terminate === 'function') ws.terminate()
    else ws?.close(CloseCode.NORMAL, why)
    this.background(this.handleClose(CloseCode.ABNORMAL, why))
  }
}

/** Opens a client of the route `R` (`createClient<typeof chatRoute>(url, options)`, the route imported with `import type`). */
export function createClient<R extends AnyRoute> (url: string, options: ClientOptions<R> = {}): RealtimeClient<R> {
  return new RealtimeClient<R>(url, options)
}
