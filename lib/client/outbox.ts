import { ClientErrorCode, RealtimeClientError } from './errors.js'
import { deadline } from './timer.js'

/** A frame waiting for the socket; `id` when it is a request's. */
export interface Queued {
  frame: string
  id: string | undefined
}

/** How a request is sent again: its frame (same id, same key) and whether it may be. */
export interface Resend {
  frame: string
  /** The idempotency key the frame carries. */
  key: string | undefined
  /** Sent again after a disconnect, `REQUEST_IN_PROGRESS` or `STORE_UNAVAILABLE`, instead of rejected. */
  retry: boolean
}

interface Pending extends Resend {
  resolve: (data: unknown) => void
  reject: (err: RealtimeClientError) => void
  timer: ReturnType<typeof setTimeout> | undefined
  /** Written to a socket: lost if that socket drops. */
  inFlight: boolean
  /** Queued while `onReconnect` ran (sent through the client itself, not the one the hook was given). */
  held: boolean
  /** Answers `REQUEST_IN_PROGRESS` or `STORE_UNAVAILABLE` retried so far. */
  tries: number
  /** The wait before the next of those retries. */
  retryTimer: ReturnType<typeof setTimeout> | undefined
}

/** Retries of one request after `REQUEST_IN_PROGRESS` or `STORE_UNAVAILABLE`, at most (its timeout bounds them too). */
export const MAX_RETRIES = 10

/** The error `err` as the rejection of a request with idempotency key `key` (`err.key`). */
function withKey (err: RealtimeClientError, key: string | undefined): RealtimeClientError {
  if (key === undefined || err.key === key) return err
  const message = err.code === ClientErrorCode.DISCONNECTED ? `${err.message}; a retry with its key (err.key) is safe` : err.message
  return new RealtimeClientError(err.code, message, { details: err.details, status: err.status, closeCode: err.closeCode, key })
}

/**
 * What waits on the server: frames queued while the socket is away (bounded, sent in order when it is back) and
 * requests waiting for their reply, each with a timer that runs from the call, queued time included.
 */
export class Outbox {
  private queue: Queued[] = []
  private readonly pending = new Map<string, Pending>()
  private seq = 0
  private readonly maxQueue: number

  constructor (maxQueue: number) {
    this.maxQueue = maxQueue
  }

  /** A fresh request id. */
  nextId (): string {
    return `${++this.seq}`
  }

  /** Keeps a frame for the next socket (or for the end of onReconnect: `held`); throws QUEUE_FULL past `maxQueue`. */
  enqueue (frame: string, id?: string, held = false): void {
    if (this.queue.length >= this.maxQueue) {
      throw new RealtimeClientError(ClientErrorCode.QUEUE_FULL, `${this.maxQueue} messages already wait for the connection`)
    }
    this.queue.push({ frame, id })
    const entry = id === undefined ? undefined : this.pending.get(id)
    if (entry !== undefined) entry.held = held
  }

  /** Takes every queued frame, oldest first. */
  drain (): Queued[] {
    const queued = this.queue
    this.queue = []
    return queued
  }

  /** Starts waiting for the reply to request `id`; rejects with TIMEOUT after `timeout` ms (0, Infinity: never). */
  expect (id: string, type: string, timeout: number, resend: Resend = { frame: '', key: undefined, retry: false }): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = deadline(timeout, () => {
        // Awaited by onReconnect itself, such a request would wait for the hook to end: say where to send it.
        const hint = this.pending.get(id)?.held === true ? ' (it waited for onReconnect to finish: inside the hook, send through the client it is given)' : ''
        this.forget(id)
        reject(new RealtimeClientError(ClientErrorCode.TIMEOUT, `no reply to ${type} within ${timeout} ms${hint}`, { key: resend.key }))
      })
      this.pending.set(id, { ...resend, resolve, reject, timer, inFlight: false, held: false, tries: 0, retryTimer: undefined })
    })
  }

  /**
   * The server asked to retry request `id` later (`REQUEST_IN_PROGRESS`, `STORE_UNAVAILABLE`): when it may be retried
   * and has retries left, `send(frame, id)` runs after `delay(try)` ms and this returns true; else false (settle it).
   */
  retryLater (id: string, delay: (attempt: number) => number, send: (frame: string, id: string) => void): boolean {
    const entry = this.pending.get(id)
    if (entry === undefined || !entry.retry || entry.tries >= MAX_RETRIES) return false
    entry.inFlight = false
    entry.retryTimer = setTimeout(() => {
      entry.retryTimer = undefined
      if (this.pending.get(id) === entry) send(entry.frame, id)
    }, delay(++entry.tries))
    return true
  }

  /** Queues a frame that was accepted already (a request sent again), past `maxQueue`. */
  requeue (frame: string, id: string): void {
    this.queue.push({ frame, id })
  }

  /** The request's frame went out on the current socket. */
  sent (id: string): void {
    const entry = this.pending.get(id)
    if (entry !== undefined) entry.inFlight = true
  }

  /** Drops request `id` and its queued frame, if any; it will never settle. */
  forget (id: string): void {
    const entry = this.pending.get(id)
    if (entry === undefined) return
    clearTimeout(entry.timer)
    clearTimeout(entry.retryTimer)
    this.pending.delete(id)
    const i = this.queue.findIndex((q) => q.id === id)
    if (i !== -1) this.queue.splice(i, 1)
  }

  /** Whether a request written to the socket waits for its reply. */
  get waiting (): boolean {
    for (const entry of this.pending.values()) if (entry.inFlight) return true
    return false
  }

  /** Whether request `id` still waits (a reply or error for any other id answers nothing). */
  has (id: string): boolean {
    return this.pending.has(id)
  }

  /** Settles request `id` with the reply's data or the server's error. */
  settle (id: string, outcome: { data: unknown } | { error: RealtimeClientError }): void {
    const entry = this.pending.get(id)
    if (entry === undefined) return
    clearTimeout(entry.timer)
    clearTimeout(entry.retryTimer)
    this.pending.delete(id)
    if ('error' in outcome) entry.reject(withKey(outcome.error, entry.key))
    else entry.resolve(outcome.data)
  }

  /**
   * The socket dropped: what was written to it will get no reply. A request that may be retried goes back to the
   * head of the queue (in the order of the calls), to be sent again with its key; the others are rejected with
   * `err` (and their key). Queued requests keep waiting.
   */
  failInFlight (err: RealtimeClientError): void {
    const again: Queued[] = []
    for (const [id, entry] of this.pending) {
      if (!entry.inFlight) continue
      entry.inFlight = false
      if (entry.retry) {
        again.push({ frame: entry.frame, id })
        continue
      }
      clearTimeout(entry.timer)
      this.pending.delete(id)
      entry.reject(withKey(err, entry.key))
    }
    if (again.length > 0) this.queue = [...again, ...this.queue]
  }

  /** The client gave up: every request is rejected with `err`, queued frames are dropped. */
  failAll (err: RealtimeClientError): void {
    const entries = [...this.pending.values()]
    this.pending.clear()
    this.queue = []
    for (const entry of entries) {
      clearTimeout(entry.timer)
      clearTimeout(entry.retryTimer)
      entry.reject(withKey(err, entry.key))
    }
  }
}
