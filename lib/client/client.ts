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
import { deadline } from './timer.js'
import type { AnyRoute, LifecycleEvents, ListenerData, ListenerType, MessageData, MessageType, ReplyData, WebSocketConstructor, WebSocketLike } from './types.js'

/**
 * The client's life (`state`; docs/03-the-client.md, "The client's states", draws it):
 *
 *   connecting ──open──▶ open ──abnormal close, dead link──▶ reconnecting ──backoff, new socket──▶ open …
 *   (the attempt count starts again only once a connection stayed open backoff.stableAfter)
 *       │                  └──final close code (1000, 1008, 4401 without getToken…)──▶ closed
 *       └─ an attempt fails before open ─▶ diagnosis over HTTP ─┬─ network, 426, 429, 5xx, TOKEN_EXPIRED ─▶ reconnecting
 *                                                               └─ other 4xx (401, 403) ─▶ closed
 *   any ──close(), maxAttempts──▶ closed: timers cleared, requests rejected, nothing left running
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
const LIFECYCLE: ReadonlySet<string> = new Set<keyof LifecycleEvents>(['open', 'close', 'reconnecting', 'offline', 'error', 'binary', 'recovery'])

/**
 * A typed client of one realtime route. It connects at once, reconnects with backoff after an abnormal close,
 * queues what is sent while it is away, and asks the server why when a handshake fails.
 */
export class RealtimeClient<R extends AnyRoute = AnyRoute> {
  readonly url: string
  private readonly options: ResolvedOptions<R>
  private readonly WS: WebSocketConstructor
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
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (WS === undefined) throw new TypeError('no WebSocket: pass options.WebSocket (on Node 20: import WebSocket from \'ws\')')
    this.url = url
    this.options = resolveOptions(options)
    this.WS = WS
    this.token = options.token
    this.outbox = new Outbox(this.options.maxQueue)
    this.link = new Liveness(this.options)
    this.background(this.connect())
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
    return this.ready && this.ws?.readyState === OPEN && (this.holding === undefined || this.direct === this.holding)
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
    const { url, protocols } = handshakeOf(this.url, this.token, this.options.tokenSource, this.options.protocol)
    let ws: WebSocketLike
    try {
      ws = new this.WS(url, protocols)
    } catch (err) {
      return this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, `cannot open ${this.url}: ${(err as Error).message}`), true)
    }
    this.ws = ws
    ws.binaryType = 'arraybuffer'
    this.detach = listen(ws, {
      open: () => { this.handleOpen(ws) },
      message: (data) => { this.handleMessage(data) },
      close: (code, reason) => { this.background(this.handleClose(code, reason)) }
    })
    this.link.connecting(() => { this.abandon('connect timeout') })
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
    const hook = reconnected ? this.options.onReconnect : undefined
    if (hook === undefined) {
      this.flush(ws)
      return this.emit('open', { reconnected })
    }
    this.emit('open', { reconnected })
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

  private async handleClose (code: number, reason: string): Promise<void> {
    const wasOpen = this.ready
    this.ready = false
    this.detach?.()
    this.detach = undefined
    this.link.stop()
    clearTimeout(this.stableTimer)
    this.stableTimer = undefined
    this.positions.closed(Date.now())
    this.outbox.failInFlight(new RealtimeClientError(ClientErrorCode.DISCONNECTED, 'the connection dropped before the reply: the request may have run', { closeCode: code }))
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
    this.reconnectTimer = this.stableTimer = this.tokenTimer = undefined
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
