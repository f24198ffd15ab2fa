import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import { isSendableCloseCode } from '../client/reconnect.js'
import { BatchCode, CloseCode, type BatchCodeName } from '../protocol/codes.js'

/**
 * The HTTP-streaming fallback's server side (docs/15-fallback.md): a server-sent-events response carries what the
 * WebSocket would carry, and POSTed batches carry what the client sends. `StreamSocket` has the part of ws's
 * WebSocket that a `Connection`, the registry and the heartbeat use (readyState, bufferedAmount, send, ping,
 * close, terminate, and the message, pong and close events), so everything above it (rooms, history, presence,
 * limits, expiry, shutdown) runs unchanged on either transport.
 *
 *   GET  (Accept: text/event-stream) ─▶ rt.open {session, post} ─▶ data: <frame> … ─▶ rt.close {code, reason}, end
 *   POST {session, seq, frames}      ─▶ the frames in order, once ─▶ 200 {ack: seq}
 */

/** Frames in one POSTed batch, at most. */
export const MAX_BATCH_FRAMES = 64

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3

/** SSE's line ends: a text with one is sent as several `data:` lines, which the reader joins with `\n`. */
const LINE_END = /\r\n|\r|\n/

/** An SSE event whose data is `text`, split into `data:` lines where it has line ends. */
function eventOf (text: string, name?: string): string {
  const head = name === undefined ? '' : `event: ${name}\n`
  if (text.indexOf('\n') === -1 && text.indexOf('\r') === -1) return `${head}data: ${text}\n\n`
  return `${head}${text.split(LINE_END).map((line) => `data: ${line}\n`).join('')}\n`
}

/**
 * A session id: the owner's instance id (so any instance can route a POST to it), then 144 random bits. Knowing
 * it is not enough to write to the session: a POST must carry the same user's credentials too.
 */
export function sessionIdOf (instance: string): string {
  return `${instance}.${randomBytes(18).toString('base64url')}`
}

/** The owner's instance id in a session id, or undefined for one that is not shaped like ours. */
export function ownerOf (session: string): string | undefined {
  const dot = session.lastIndexOf('.')
  return dot > 0 && session.length - dot - 1 === 24 ? session.slice(0, dot) : undefined
}

export class StreamSocket extends EventEmitter {
  static readonly CONNECTING = CONNECTING
  static readonly OPEN = OPEN
  static readonly CLOSING = CLOSING
  static readonly CLOSED = CLOSED

  readyState: number = OPEN
  /** The number the next POSTed batch must carry. */
  nextSeq = 1
  /** The close code and reason the 'close' event reports: 1006 when the response ended without our close. */
  private closeCode = 1006
  private closeReason = ''
  private pingOut = false

  constructor (readonly session: string, private readonly res: ServerResponse) {
    super()
    res.on('close', () => { this.ended() })
    // A reset peer: 'close' follows and reports 1006.
    res.on('error', () => {})
    // A client gone before its stream opened: the response's 'close' was before this listener. The connection still
    // opens (synchronously, after this) and closes on the next tick, so onOpen and onClose stay a pair.
    if (res.destroyed || res.socket === null || res.socket.destroyed) process.nextTick(() => { this.ended() })
  }

  /** Bytes written and not yet taken by the kernel: the reader's backlog, as ws's `bufferedAmount` is. */
  get bufferedAmount (): number {
    return this.res.writableLength
  }

  /** Writes the stream's first event. */
  open (post: string, heartbeat: number | false): void {
    this.res.write(eventOf(JSON.stringify({ session: this.session, post, heartbeat: heartbeat === false ? 0 : heartbeat }), 'rt.open') + ':\n\n')
  }

  send (data: Buffer | string, options?: { binary?: boolean }, cb?: (err?: Error | null) => void): void {
    if (this.readyState !== OPEN) {
      cb?.(new Error('the stream is not open'))
      return
    }
    const text = options?.binary === true
      ? eventOf((typeof data === 'string' ? Buffer.from(data) : data).toString('base64'), 'rt.binary')
      : eventOf(typeof data === 'string' ? data : data.toString())
    this.res.write(text, cb)
  }

  /**
   * The heartbeat's ping: a comment line. Its 'pong' is the kernel taking it: a reader that stopped reading lets
   * the stream's buffers fill, the write stays pending, and the next sweep finds the connection dead.
   */
  ping (): void {
    if (this.readyState !== OPEN || this.pingOut) return
    this.pingOut = true
    this.res.write(':\n\n', (err) => {
      this.pingOut = false
      if (err == null && this.readyState === OPEN) this.emit('pong')
    })
  }

  /** Ends the stream with an `rt.close` event carrying the close code and reason. */
  close (code: number = CloseCode.NORMAL, reason = ''): void {
    if (this.readyState !== OPEN) return
    this.readyState = CLOSING
    this.closeCode = code
    this.closeReason = reason
    this.res.end(eventOf(JSON.stringify({ code, reason }), 'rt.close'))
  }

  /** Cuts the response off (a dead or hopeless reader). */
  terminate (): void {
    if (this.readyState === CLOSED) return
    if (this.readyState === OPEN) this.readyState = CLOSING
    this.res.destroy()
  }

  private ended (): void {
    if (this.readyState === CLOSED) return
    this.readyState = CLOSED
    this.emit('close', this.closeCode, Buffer.from(this.closeReason))
  }
}

/** The headers of a stream's response (and CORS, added by the route). */
export const STREAM_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  // Proxies must neither buffer nor transform it (nginx reads X-Accel-Buffering).
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no'
} as const

/** A POST's body, checked. */
export interface Batch {
  session: string
  seq: number
  frames: Array<{ data: Buffer, binary: boolean }>
  /** The client closes the connection after the frames, with this code and reason. */
  close?: { code: number, reason: string }
}

/** Why a batch is refused: its status and body. */
export interface BatchRefusal { status: number, code: BatchCodeName, message: string }

export function batchRefusal (code: BatchCodeName, message?: string): BatchRefusal {
  return { status: BatchCode[code].statusCode, code, message: message ?? BatchCode[code].message }
}

/** Parses and checks a POSTed body; the frames' sizes against `maxPayload`. */
export function parseBatch (body: unknown, maxPayload: number): Batch | BatchRefusal {
  const bad = (message: string): BatchRefusal => batchRefusal('BAD_BATCH', message)
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return bad('the body must be a JSON object { session, seq, frames }')
  const { session, seq, frames, close } = body as Record<string, unknown>
  if (typeof session !== 'string' || session.length === 0 || session.length > 200) return bad('session must be the id from the stream\'s rt.open event')
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return bad('seq must be a positive integer')
  let closing: Batch['close']
  if (close !== undefined) {
    const { code, reason = '' } = (close ?? {}) as { code?: unknown, reason?: unknown }
    if (typeof code !== 'number' || !isSendableCloseCode(code) || typeof reason !== 'string' || Buffer.byteLength(reason) > 123) {
      return bad('close must be { code: 1000 or 3000-4999, reason?: up to 123 bytes }')
    }
    closing = { code, reason }
  }
  if (!Array.isArray(frames) || (frames.length === 0 && closing === undefined)) return bad('frames must be a non-empty array (it may be empty with close)')
  if (frames.length > MAX_BATCH_FRAMES) return batchRefusal('BATCH_TOO_LARGE', `a batch carries at most ${MAX_BATCH_FRAMES} frames`)
  const parsed: Batch['frames'] = []
  for (const frame of frames) {
    let data: Buffer
    let binary = false
    if (typeof frame === 'string') {
      data = Buffer.from(frame)
    } else if (frame !== null && typeof frame === 'object' && typeof (frame as { binary?: unknown }).binary === 'string' && Object.keys(frame).length === 1) {
      data = Buffer.from((frame as { binary: string }).binary, 'base64')
      binary = true
    } else {
      return bad('each frame is a string (a text frame) or { binary: "<base64>" }')
    }
    if (data.length > maxPayload) return batchRefusal('BATCH_TOO_LARGE', `a frame is over limits.maxPayload (${maxPayload} bytes)`)
    parsed.push({ data, binary })
  }
  return closing === undefined ? { session, seq, frames: parsed } : { session, seq, frames: parsed, close: closing }
}
