import { backoffDelay, shouldReconnect, type BackoffOptions } from './backoff.js'
import { ClientErrorCode, RealtimeClientError } from './errors.js'
import { diagnose } from './diagnose.js'
import type { AnyRoute, EventType, ListenerData, MessageData, MessageType, ReplyData, WebSocketConstructor, WebSocketLike } from './types.js'

/** Options of `createClient()`. */
export interface ClientOptions<R extends AnyRoute = AnyRoute> {
  /** A fixed session token. */
  token?: string
  /** Called on every connect (so a renewed token is used after expiry). */
  getToken?: () => string | Promise<string>
  /** How the token travels: a `bearer.<token>` subprotocol entry, or `?token=` (when the app listed the query source). @default 'protocol' */
  tokenSource?: 'protocol' | 'query'
  /** The application subprotocol offered beside the token. @default 'realtime.v1' */
  protocol?: string
  /** The WebSocket constructor: the global one by default; pass `ws`'s on Node. */
  WebSocket?: WebSocketConstructor
  /** `fetch` for diagnosing a refused handshake. @default globalThis.fetch */
  fetch?: typeof fetch
  /** Reconnect delays. @default { base: 500, cap: 30000 } */
  backoff?: BackoffOptions
  /** Reconnect attempts in a row before giving up. @default Infinity */
  maxAttempts?: number
  /** App-level ping period in ms (0: none). @default 25000 */
  pingInterval?: number
  /** A pong later than this (ms) means a dead link: close and reconnect. @default 10000 */
  pingTimeout?: number
  /** Default request timeout in ms. @default 10000 */
  requestTimeout?: number
  /** Messages kept while disconnected; past it `send` throws QUEUE_FULL. @default 100 */
  maxQueue?: number
  /** Runs after each reconnect, before the queued messages are sent: re-join rooms here. */
  onReconnect?: (client: RealtimeClient<R>) => unknown
}

type State = 'connecting' | 'open' | 'reconnecting' | 'closed'
interface Pending { resolve: (value: any) => void, reject: (err: RealtimeClientError) => void, timer: ReturnType<typeof setTimeout>, sent: boolean }

const OPEN = 1
const DEFAULT_PROTOCOL = 'realtime.v1'

/**
 * A typed client of one realtime route. It connects at once, reconnects with backoff after an abnormal close,
 * queues what is sent while it is away, and knows why a handshake was refused by asking the server.
 */
export class RealtimeClient<R extends AnyRoute = AnyRoute> {
  readonly url: string
  private readonly options: ClientOptions<R>
  private readonly WS: WebSocketConstructor
  private ws: WebSocketLike | undefined
  private currentState: State = 'connecting'
  private attempt = 0
  private opened = false
  private everOpened = false
  private token: string | undefined
  private seq = 0
  private readonly pending = new Map<string, Pending>()
  private queue: string[] = []
  private readonly listeners = new Map<string, Set<(data: any) => void>>()
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private pingTimer: ReturnType<typeof setInterval> | undefined
  private pongTimer: ReturnType<typeof setTimeout> | undefined
  private detach: (() => void) | undefined

  constructor (url: string, options: ClientOptions<R> = {}) {
    this.url = url
    this.options = options
    this.token = options.token
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (WS === undefined) throw new TypeError('no WebSocket: pass options.WebSocket (on Node: import WebSocket from \'ws\')')
    this.WS = WS
    this.background(this.connect())
  }

  /** `connecting`, `open`, `reconnecting`, or `closed` for good. */
  get state (): State {
    return this.currentState
  }

  /** Fire and forget; queued while disconnected. Throws QUEUE_FULL past `maxQueue`, CLOSED after `close()`. */
  send<K extends MessageType<R>> (type: K, data: MessageData<R, K>): void {
    this.transmit(JSON.stringify({ type, data }))
  }

  /** Sends with a fresh id; resolves with the reply's data, rejects with the server's error code, TIMEOUT or DISCONNECTED. */
  async request<K extends MessageType<R>> (type: K, data: MessageData<R, K>, options: { timeout?: number } = {}): Promise<ReplyData<R, K>> {
    return await this.call(type, data, options.timeout)
  }

  /**
   * Renews the session over the open socket (`auth.refresh`) with `token`, or one from `getToken`; later
   * reconnects use it too. Resolves with the new expiry (seconds since the epoch).
   */
  async refreshToken (token?: string): Promise<{ exp: number | null }> {
    const next = token ?? await this.options.getToken?.()
    if (next === undefined) throw new RealtimeClientError(ClientErrorCode.NO_TOKEN, 'refreshToken needs a token or getToken')
    const reply = await this.call('auth.refresh', { token: next }) as { exp: number | null }
    this.token = next
    return reply
  }

  on<K extends EventType<R> | 'open' | 'close' | 'reconnecting' | 'offline' | 'error' | 'binary'> (type: K, listener: (data: ListenerData<R, RealtimeClientError, K>) => void): this {
    let set = this.listeners.get(type)
    if (set === undefined) this.listeners.set(type, set = new Set())
    set.add(listener)
    return this
  }

  off<K extends EventType<R> | 'open' | 'close' | 'reconnecting' | 'offline' | 'error' | 'binary'> (type: K, listener: (data: ListenerData<R, RealtimeClientError, K>) => void): this {
    this.listeners.get(type)?.delete(listener)
    return this
  }

  /** Closes for good: no reconnect; what waits is rejected with CLOSED; every timer is cleared. */
  close (code = 1000, reason = ''): void {
    if (this.currentState === 'closed') return
    const ws = this.ws
    this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, 'the client was closed', { closeCode: code }), false)
    if (ws !== undefined && ws.readyState <= OPEN) ws.close(code, reason)
  }

  private async call (type: string, data: unknown, timeout = this.options.requestTimeout ?? 10_000): Promise<any> {
    const id = `${++this.seq}`
    const frame = JSON.stringify({ type, data, id })
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        const i = this.queue.indexOf(frame)
        if (i !== -1) this.queue.splice(i, 1)
        reject(new RealtimeClientError(ClientErrorCode.TIMEOUT, `no reply to ${type} within ${timeout} ms`))
      }, timeout)
      const entry: Pending = { resolve, reject, timer, sent: false }
      this.pending.set(id, entry)
      try {
        entry.sent = this.transmit(frame)
      } catch (err) {
        clearTimeout(timer)
        this.pending.delete(id)
        reject(err)
      }
    })
  }

  /** Sends now when open, else queues; true when it went out. */
  private transmit (frame: string): boolean {
    if (this.currentState === 'closed') throw new RealtimeClientError(ClientErrorCode.CLOSED, 'the client is closed')
    if (this.opened && this.ws !== undefined && this.ws.readyState === OPEN) {
      this.ws.send(frame)
      return true
    }
    if (this.queue.length >= (this.options.maxQueue ?? 100)) {
      throw new RealtimeClientError(ClientErrorCode.QUEUE_FULL, `more than ${this.options.maxQueue ?? 100} messages wait for the connection`)
    }
    this.queue.push(frame)
    return false
  }

  private emit (type: string, data: unknown): void {
    for (const listener of this.listeners.get(type) ?? []) {
      try {
        listener(data)
      } catch (err) {
        // A listener's bug must not break the client; surface it where the platform reports errors.
        setTimeout(() => { throw err }, 0)
      }
    }
  }

  private async connect (): Promise<void> {
    let token = this.token
    if (this.options.getToken !== undefined) {
      try {
        token = this.token = await this.options.getToken()
      } catch (err) {
        this.schedule(`getToken failed: ${(err as Error).message}`)
        return
      }
    }
    if (this.currentState === 'closed') return
    const source = this.options.tokenSource ?? 'protocol'
    let url = this.url
    const protocols = [this.options.protocol ?? DEFAULT_PROTOCOL]
    if (token !== undefined && source === 'protocol') protocols.unshift(`bearer.${token}`)
    if (token !== undefined && source === 'query') url += `${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`
    let ws: WebSocketLike
    try {
      ws = new this.WS(url, protocols)
    } catch (err) {
      this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, `cannot open ${this.url}: ${(err as Error).message}`), true)
      return
    }
    this.ws = ws
    ws.binaryType = 'arraybuffer'
    const onOpen = (): void => { this.handleOpen() }
    const onMessage = (event: { data: unknown }): void => { this.handleMessage(event.data) }
    const onClose = (event: { code: number, reason: string }): void => { this.background(this.handleClose(event.code, event.reason, token)) }
    const onError = (): void => {}
    ws.addEventListener('open', onOpen)
    ws.addEventListener('message', onMessage)
    ws.addEventListener('close', onClose)
    ws.addEventListener('error', onError)
    // The error listener stays: `ws` on Node throws an 'error' with no listener, as when a socket still connecting is closed.
    this.detach = () => {
      ws.removeEventListener('open', onOpen)
      ws.removeEventListener('message', onMessage)
      ws.removeEventListener('close', onClose)
    }
  }

  private handleOpen (): void {
    const reconnected = this.everOpened
    this.opened = this.everOpened = true
    this.attempt = 0
    this.currentState = 'open'
    this.startPing()
    this.emit('open', { reconnected })
    const flush = (): void => {
      const queued = this.queue
      this.queue = []
      for (const frame of queued) this.transmit(frame)
      for (const entry of this.pending.values()) entry.sent = true
    }
    const onReconnect = this.options.onReconnect
    if (!reconnected || onReconnect === undefined) return flush()
    // Re-join rooms first, then what was queued while away goes out, in order.
    Promise.resolve().then(() => onReconnect(this)).then(flush, (err: unknown) => {
      this.emit('error', err instanceof RealtimeClientError ? err : new RealtimeClientError('RECONNECT_HOOK_FAILED', String(err)))
      flush()
    })
  }

  private handleMessage (raw: unknown): void {
    if (typeof raw !== 'string') {
      this.emit('binary', raw)
      return
    }
    let message: { type?: unknown, id?: unknown, data?: unknown, error?: { code: string, message: string, details?: unknown } }
    try {
      message = JSON.parse(raw)
    } catch {
      return
    }
    const id = message.id === undefined ? undefined : String(message.id)
    if (message.type === 'pong') {
      clearTimeout(this.pongTimer)
      this.pongTimer = undefined
      return
    }
    if (message.type === 'reply' || (message.type === 'error' && id !== undefined && this.pending.has(id))) {
      const entry = id === undefined ? undefined : this.pending.get(id)
      if (entry === undefined || id === undefined) return
      this.pending.delete(id)
      clearTimeout(entry.timer)
      if (message.type === 'reply') entry.resolve(message.data ?? null)
      else entry.reject(new RealtimeClientError(message.error?.code ?? 'ERROR', message.error?.message ?? 'error', { details: message.error?.details }))
      return
    }
    if (message.type === 'error') {
      this.emit('error', new RealtimeClientError(message.error?.code ?? 'ERROR', message.error?.message ?? 'error', { details: message.error?.details }))
      return
    }
    if (typeof message.type === 'string') this.emit(message.type, message.data)
  }

  private async handleClose (code: number, reason: string, token: string | undefined): Promise<void> {
    const wasOpen = this.opened
    this.opened = false
    this.detach?.()
    this.detach = undefined
    this.stopPing()
    for (const [id, entry] of this.pending) {
      if (!entry.sent) continue
      this.pending.delete(id)
      clearTimeout(entry.timer)
      entry.reject(new RealtimeClientError(ClientErrorCode.DISCONNECTED, 'the connection dropped before the reply', { closeCode: code }))
    }
    if (this.currentState === 'closed') return
    this.emit('close', { code, reason })
    const canRenew = this.options.getToken !== undefined
    if (wasOpen) {
      if (shouldReconnect(code, canRenew)) return this.schedule(reason)
      return this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, `closed by the server with ${code}${reason === '' ? '' : ` (${reason})`}`, { closeCode: code }), true)
    }
    // It failed before opening: browsers hide why, so ask the same URL over plain HTTP.
    const verdict = await diagnose(this.url, token, this.options.fetch ?? globalThis.fetch?.bind(globalThis))
    if (this.isClosed()) return
    if (verdict.retry === false || (verdict.code === 'TOKEN_EXPIRED' && !canRenew)) {
      return this.giveUp(new RealtimeClientError(verdict.code ?? 'REFUSED', verdict.message, { status: verdict.status }), true)
    }
    this.schedule(verdict.message)
  }

  /** Runs a task nobody awaits; it is written not to fail, and if it does, the app hears of it. */
  private background (task: Promise<void>): void {
    task.catch((err: unknown) => { this.emit('error', new RealtimeClientError('CLIENT_ERROR', String(err))) })
  }

  /** Read through a method: the state may change across an await, which narrowing cannot see. */
  private isClosed (): boolean {
    return this.currentState === 'closed'
  }

  private schedule (why: string): void {
    if (this.currentState === 'closed') return
    const max = this.options.maxAttempts ?? Infinity
    if (++this.attempt > max) {
      return this.giveUp(new RealtimeClientError(ClientErrorCode.CLOSED, `gave up after ${max} attempts: ${why}`), true)
    }
    const delay = backoffDelay(this.attempt, this.options.backoff)
    this.currentState = 'reconnecting'
    this.emit('reconnecting', { attempt: this.attempt, delay })
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      this.background(this.connect())
    }, delay)
  }

  /** Stops for good: timers cleared, everything waiting rejected with the reason. */
  private giveUp (err: RealtimeClientError, announce: boolean): void {
    if (this.currentState === 'closed') return
    this.currentState = 'closed'
    this.opened = false
    clearTimeout(this.reconnectTimer)
    this.stopPing()
    this.detach?.()
    this.detach = undefined
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer)
      entry.reject(err)
    }
    this.pending.clear()
    this.queue = []
    if (announce) this.emit('offline', err)
  }

  private startPing (): void {
    const interval = this.options.pingInterval ?? 25_000
    if (interval <= 0) return
    this.pingTimer = setInterval(() => {
      if (this.ws === undefined || this.ws.readyState !== OPEN || this.pongTimer !== undefined) return
      this.ws.send('{"type":"ping"}')
      this.pongTimer = setTimeout(() => { this.abandon() }, this.options.pingTimeout ?? 10_000)
    }, interval)
  }

  private stopPing (): void {
    clearInterval(this.pingTimer)
    clearTimeout(this.pongTimer)
    this.pingTimer = this.pongTimer = undefined
  }

  /** A dead link: a close handshake would wait on it, so drop the socket and go on as after an abnormal close. */
  private abandon (): void {
    const ws = this.ws
    this.detach?.()
    this.detach = undefined
    if (ws !== undefined) {
      if (typeof ws.terminate === 'function') ws.terminate()
      else ws.close(4000, 'ping timeout')
    }
    this.background(this.handleClose(1006, 'ping timeout', this.token))
  }
}

/** Opens a client of the route `R` (`createClient<typeof chatRoute>(url, options)`, the route imported with `import type`). */
export function createClient<R extends AnyRoute> (url: string, options: ClientOptions<R> = {}): RealtimeClient<R> {
  return new RealtimeClient<R>(url, options)
}
