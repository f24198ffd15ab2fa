import { CloseCode } from './reconnect.js'
import { withQueryToken } from './socket.js'
import type { WebSocketLike } from './types.js'

/**
 * The client's side of the HTTP-streaming fallback (docs/15-fallback.md), shaped as a WebSocket so the client runs
 * unchanged on either: the server-sent-event stream is read with `fetch` (EventSource cannot send an
 * `Authorization` header), and what the client sends goes up in POSTed batches, one at a time, each retried with
 * its sequence number until it is answered (the server takes a batch once, however often it arrives).
 *
 *   fetch GET (Accept: text/event-stream) ─▶ rt.open {session, post} ─▶ 'open'
 *     data: <frame> ─▶ 'message'   rt.binary ─▶ 'message' (ArrayBuffer)   rt.close {code, reason}, end ─▶ 'close'
 *   send(frame) ─▶ queued ─▶ POST {session, seq, frames} (≤ 64 frames) ─▶ 200 {ack} ─▶ the next batch
 */

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3

/** Frames in one batch, at most (the server's limit). */
const MAX_FRAMES = 64
/** The longest line (an event's data) the client takes from a stream, in UTF-16 units: past it the link ends (1009). */
const MAX_LINE = 16 * 1024 * 1024
/** The wait before a batch is sent again after no answer, a 429 or a 5xx (ms); it doubles up to RETRY_CAP. */
const RETRY_BASE = 200
const RETRY_CAP = 4000
/** How long `close()` waits for the frames sent before it and the close itself to be taken (ms); then it aborts. */
const CLOSE_WAIT = 2000

export interface StreamLinkOptions {
  /** The session token: an `Authorization` header, or `?token=` with the query source. */
  token: string | undefined
  tokenSource: 'protocol' | 'query'
  /** The application subprotocol, in `X-Realtime-Protocol`. */
  protocol: string
  fetch: typeof fetch
}

interface SseEvent { event: string, data: string }

/** Reads server-sent events from text chunks (the part of the format the server writes, and comments). */
class SseReader {
  private buffer = ''
  private event = ''
  private data: string[] = []

  push (chunk: string, emit: (event: SseEvent) => void): void {
    this.buffer += chunk
    let start = 0
    let end: number
    while ((end = this.buffer.indexOf('\n', start)) !== -1) {
      let line = this.buffer.slice(start, end)
      start = end + 1
      if (line.endsWith('\r')) line = line.slice(0, -1)
      if (line === '') {
        if (this.data.length > 0) emit({ event: this.event, data: this.data.join('\n') })
        this.event = ''
        this.data = []
      } else if (line.startsWith('data:')) {
        this.data.push(line.slice(line.startsWith('data: ') ? 6 : 5))
      } else if (line.startsWith('event:')) {
        this.event = line.slice(line.startsWith('event: ') ? 7 : 6)
      } // ':' comments (the heartbeat) and other fields are skipped.
    }
    this.buffer = this.buffer.slice(start)
    if (this.buffer.length > MAX_LINE) throw new RangeError('a server-sent event line over 16 MiB')
  }
}

/** `ws://` → `http://`, `wss://` → `https://`; an http(s) URL as it is. */
export function httpUrlOf (url: string): string {
  return url.replace(/^ws(s?):/i, 'http$1:')
}

function arrayBufferOf (base64: string): ArrayBuffer {
  const text = atob(base64)
  const bytes = new Uint8Array(text.length)
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i)
  return bytes.buffer
}

/**
 * One stream and its batches. `close()` and `terminate()` abort every request; the 'close' event carries the
 * server's `rt.close` code, the code given to `close()`, or 1006 for a stream that ended without either. A batch the
 * server refuses for good ends the link: 401 as 4401 (renew the token), 413 as 1009, anything else as 1006.
 */
export class StreamLink implements WebSocketLike {
  readyState = CONNECTING
  binaryType = 'arraybuffer'
  private readonly listeners = new Map<string, Set<(event: any) => void>>()
  private readonly controller = new AbortController()
  private readonly url: string
  private token: string | undefined
  private postUrl = ''
  private session = ''
  private seq = 0
  /** Frames given to `send` and not yet in a batch. */
  private queue: string[] = []
  /** A batch is on its way (or waits to be sent again). */
  private posting = false
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private closeTimer: ReturnType<typeof setTimeout> | undefined
  private wake: (() => void) | undefined
  private code: number = CloseCode.ABNORMAL
  private reason = ''
  /** `close()` was called on the open stream: the queue, then a batch with `close`, go up before the end. */
  private closing = false

  constructor (url: string, private readonly options: StreamLinkOptions) {
    this.token = options.token === '' ? undefined : options.token
    const http = httpUrlOf(url)
    this.url = this.token !== undefined && options.tokenSource === 'query' ? withQueryToken(http, this.token) : http
    this.read().catch(() => {})
  }

  /** Nothing waits to go up: every frame given to `send` was acknowledged. */
  get idle (): boolean {
    return !this.posting && this.queue.length === 0
  }

  /** The token later batches carry (after `auth.refresh` renewed the session). */
  setToken (token: string): void {
    this.token = token
  }

  send (data: string): void {
    if (this.readyState === CONNECTING) throw new Error('the stream is not open yet')
    if (this.readyState !== OPEN) return
    this.queue.push(data)
    if (!this.posting) this.post().catch(() => {})
  }

  /**
   * On an open stream, what was sent before goes up, then a batch with `close` (the server's connection closes with
   * this code, as after a WebSocket's close frame), and the stream ends when the server ends it (CLOSE_WAIT at most).
   */
  close (code: number = CloseCode.NORMAL, reason = ''): void {
    if (this.readyState >= CLOSING) return
    this.code = code
    this.reason = reason
    const open = this.readyState === OPEN
    this.readyState = CLOSING
    if (!open) return this.controller.abort()
    this.closing = true
    this.closeTimer = setTimeout(() => { this.controller.abort() }, CLOSE_WAIT)
    if (!this.posting) this.post().catch(() => {})
  }

  terminate (): void {
    if (this.readyState >= CLOSING) return
    this.readyState = CLOSING
    this.controller.abort()
  }

  addEventListener (type: string, listener: (event: any) => void): void {
    let set = this.listeners.get(type)
    if (set === undefined) this.listeners.set(type, set = new Set())
    set.add(listener)
  }

  removeEventListener (type: string, listener: (event: any) => void): void {
    this.listeners.get(type)?.delete(listener)
  }

  private emit (type: string, event: unknown): void {
    const listeners = this.listeners.get(type)
    if (listeners !== undefined) for (const listener of listeners) listener(event)
  }

  private headers (extra: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = { ...extra, 'x-realtime-protocol': this.options.protocol }
    if (this.token !== undefined && this.options.tokenSource === 'protocol') headers.authorization = `Bearer ${this.token}`
    return headers
  }

  /** The stream, from the request to its end; then 'close'. */
  private async read (): Promise<void> {
    try {
      const res = await this.options.fetch(this.url, {
        headers: this.headers({ accept: 'text/event-stream' }),
        credentials: 'include',
        signal: this.controller.signal
      })
      const type = res.headers.get('content-type') ?? ''
      if (res.status !== 200 || res.body === null || !type.startsWith('text/event-stream')) {
        // A refusal: the client's diagnosis asks the route why, as after a failed upgrade.
        await res.body?.cancel().catch(() => {})
        return
      }
      const reader = res.body.getReader()
      const decoder = new TextDecoder()
      const sse = new SseReader()
      for (;;) {
        const { done, value } = await reader.read()
        if (done || (this.readyState >= CLOSING && !this.closing)) break
        try {
          sse.push(decoder.decode(value, { stream: true }), (event) => { this.received(event) })
        } catch {
          // A line past MAX_LINE, or an rt.open that is not the server's: the stream is not one to trust.
          this.fail(CloseCode.MESSAGE_TOO_BIG, 'the stream sent what no server of this route would')
          break
        }
      }
      await reader.cancel().catch(() => {})
    } catch {
      // Aborted by close() or terminate(), or the network: the close event says which.
    } finally {
      this.ended()
    }
  }

  private received ({ event, data }: SseEvent): void {
    if (this.readyState >= CLOSING) return
    if (event === 'rt.open') {
      if (this.readyState !== CONNECTING) return
      const { session, post } = JSON.parse(data) as { session: string, post: string }
      this.session = session
      const postUrl = new URL(post, this.url)
      // Batches carry the token: never to another origin than the stream's.
      if (postUrl.origin !== new URL(this.url).origin) throw new Error('rt.open names another origin')
      if (this.token !== undefined && this.options.tokenSource === 'query') postUrl.searchParams.set('token', this.token)
      this.postUrl = postUrl.href
      this.readyState = OPEN
      return this.emit('open', {})
    }
    if (this.readyState !== OPEN) return
    if (event === 'rt.close') {
      const { code, reason } = JSON.parse(data) as { code: number, reason: string }
      this.code = code
      this.reason = reason
      this.readyState = CLOSING
      return
    }
    this.emit('message', { data: event === 'rt.binary' ? arrayBufferOf(data) : data })
  }

  /** Sends the queue, a batch at a time, each until it is answered; stops at the link's end or a final refusal. */
  private async post (): Promise<void> {
    this.posting = true
    try {
      await this.postQueue()
    } finally {
      this.posting = false
    }
    // A frame sent between the queue's last batch and here (a microtask later) found `posting` still set.
    if (this.readyState === OPEN && this.queue.length > 0) await this.post()
  }

  private async postQueue (): Promise<void> {
    let delay = RETRY_BASE
    let closed = false
    while (this.sending() && (this.queue.length > 0 || (this.closing && !closed))) {
      const frames = this.queue.slice(0, MAX_FRAMES)
      closed = this.closing && frames.length === this.queue.length
      const body = JSON.stringify(closed ? { session: this.session, seq: ++this.seq, frames, close: { code: this.code, reason: this.reason } } : { session: this.session, seq: ++this.seq, frames })
      for (;;) {
        let status = 0
        try {
          const res = await this.options.fetch(this.postUrl, {
            method: 'POST',
            headers: this.headers({ 'content-type': 'application/json' }),
            body,
            credentials: 'include',
            signal: this.controller.signal
          })
          status = res.status
          await res.text().catch(() => {})
        } catch {} // No answer: the batch may or may not have been taken; its seq makes a retry safe.
        if (!this.sending()) return
        if (status === 200) break
        if (status !== 0 && status !== 429 && status < 500) {
          if (this.closing) return this.controller.abort()
          return this.fail(status === 401 ? CloseCode.SESSION_EXPIRED : status === 413 ? CloseCode.MESSAGE_TOO_BIG : CloseCode.ABNORMAL, `batch refused with ${status}`)
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve
          this.retryTimer = setTimeout(resolve, delay)
        })
        this.wake = undefined
        delay = Math.min(delay * 2, RETRY_CAP)
        if (!this.sending()) return
      }
      delay = RETRY_BASE
      this.queue.splice(0, frames.length)
    }
  }

  /** Batches may go up: the stream is open, or closing by `close()` and not yet ended. */
  private sending (): boolean {
    return this.readyState === OPEN || (this.closing && this.readyState === CLOSING)
  }

  private fail (code: number, reason: string): void {
    if (this.readyState >= CLOSING) return
    this.closing = false
    this.code = code
    this.reason = reason
    this.readyState = CLOSING
    this.controller.abort()
  }

  private ended (): void {
    if (this.readyState === CLOSED) return
    this.readyState = CLOSED
    this.closing = false
    clearTimeout(this.retryTimer)
    clearTimeout(this.closeTimer)
    this.wake?.()
    this.controller.abort()
    this.queue = []
    this.emit('close', { code: this.code, reason: this.reason })
  }
}
