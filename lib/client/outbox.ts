import { ClientErrorCode, RealtimeClientError } from './errors.js'
import { deadline } from './timer.js'

/** A frame waiting for the socket; `id` when it is a request's. */
export interface Queued {
  frame: string
  id: string | undefined
}

interface Pending {
  resolve: (data: unknown) => void
  reject: (err: RealtimeClientError) => void
  timer: ReturnType<typeof setTimeout> | undefined
  /** Written to a socket: lost if that socket drops. */
  inFlight: boolean
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

  /** Keeps a frame for the next socket; throws QUEUE_FULL past `maxQueue`. */
  enqueue (frame: string, id?: string): void {
    if (this.queue.length >= this.maxQueue) {
      throw new RealtimeClientError(ClientErrorCode.QUEUE_FULL, `${this.maxQueue} messages already wait for the connection`)
    }
    this.queue.push({ frame, id })
  }

  /** Takes every queued frame, oldest first. */
  drain (): Queued[] {
    const queued = this.queue
    this.queue = []
    return queued
  }

  /** Starts waiting for the reply to request `id`; rejects with TIMEOUT after `timeout` ms (0, Infinity: never). */
  expect (id: string, type: string, timeout: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = deadline(timeout, () => {
        this.forget(id)
        reject(new RealtimeClientError(ClientErrorCode.TIMEOUT, `no reply to ${type} within ${timeout} ms`))
      })
      this.pending.set(id, { resolve, reject, timer, inFlight: false })
    })
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
    this.pending.delete(id)
    const i = this.queue.findIndex((q) => q.id === id)
    if (i !== -1) this.queue.splice(i, 1)
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
    this.pending.delete(id)
    if ('error' in outcome) entry.reject(outcome.error)
    else entry.resolve(outcome.data)
  }

  /** The socket dropped: what was written to it will get no reply. Queued requests keep waiting. */
  failInFlight (err: RealtimeClientError): void {
    for (const [id, entry] of this.pending) {
      if (!entry.inFlight) continue
      clearTimeout(entry.timer)
      this.pending.delete(id)
      entry.reject(err)
    }
  }

  /** The client gave up: every request is rejected with `err`, queued frames are dropped. */
  failAll (err: RealtimeClientError): void {
    const entries = [...this.pending.values()]
    this.pending.clear()
    this.queue = []
    for (const entry of entries) {
      clearTimeout(entry.timer)
      entry.reject(err)
    }
  }
}
