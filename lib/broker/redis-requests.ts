import type { BrokerNode } from './types.js'

/**
 * The first byte of a request to one instance on its own channel, and of its answer. The other messages' first
 * bytes: 1 and 5 a fan-out (lib/broker/redis-codec.ts, short and long header), 2 and 4 a history room's frame, 3 a
 * presence diff.
 */
export const REQUEST = 6
export const ANSWER = 7

/**
 * Requests waiting for their answer, at most: past it a request fails at once (the POST gets 503 and is retried), so
 * batches for an instance that does not answer cannot pile up for their 5 s each.
 */
const MAX_WAITING = 1024

interface Waiting {
  resolve: (answer: string) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * Requests from one instance to another over pub/sub (the HTTP-streaming fallback's batches, sent to the instance
 * that holds their session): each instance listens on a channel of its own; a request carries its id and the
 * sender, and the answer goes back on the sender's channel. Nothing is kept for a request past its timeout: an
 * answer that comes later finds nobody waiting and is dropped (the caller answered 503, and the client's retry of
 * the same batch is acknowledged without running it again).
 */
export class RedisRequests {
  private seq = 0
  private readonly waiting = new Map<number, Waiting>()

  constructor (
    private readonly instanceId: string,
    private readonly channelOf: (instance: string) => string,
    private readonly publish: (channel: string, message: Buffer) => Promise<number>,
    /** Whether a publish's count of receivers is the whole truth (not on a cluster's classic pub/sub). */
    private readonly countsReceivers: boolean
  ) {}

  /** This instance's channel. */
  get channel (): string {
    return this.channelOf(this.instanceId)
  }

  async request (instance: string, body: string, timeoutMs: number): Promise<string> {
    if (this.waiting.size >= MAX_WAITING) throw new Error(`${MAX_WAITING} requests to other instances are waiting for their answers`)
    const id = ++this.seq
    const message = encode(REQUEST, { id, from: this.instanceId, body })
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => { this.fail(id, new Error(`no answer from instance ${instance} within ${timeoutMs} ms`)) }, timeoutMs)
      this.waiting.set(id, { resolve, reject, timer })
      this.publish(this.channelOf(instance), message).then((receivers) => {
        if (receivers === 0 && this.countsReceivers) this.fail(id, new Error(`instance ${instance} is not listening`))
      }, (err: Error) => { this.fail(id, err) })
    })
  }

  /** A message on this instance's channel. */
  received (message: Buffer, node: BrokerNode | undefined): void {
    const decoded = decode(message)
    if (decoded === undefined) return
    if (message[0] === ANSWER) {
      const waiting = this.waiting.get(decoded.id)
      if (waiting === undefined) return
      this.waiting.delete(decoded.id)
      clearTimeout(waiting.timer)
      waiting.resolve(decoded.body)
      return
    }
    const answer = node?.answer
    if (answer === undefined || typeof decoded.from !== 'string') return
    answer(decoded.body).then(
      async (body) => await this.publish(this.channelOf(decoded.from as string), encode(ANSWER, { id: decoded.id, body })),
      () => {}
    ).catch(() => {})
  }

  /** Rejects every request still waiting (the broker is closing). */
  close (): void {
    for (const id of [...this.waiting.keys()]) this.fail(id, new Error('the broker closed'))
  }

  private fail (id: number, err: Error): void {
    const waiting = this.waiting.get(id)
    if (waiting === undefined) return
    this.waiting.delete(id)
    clearTimeout(waiting.timer)
    waiting.reject(err)
  }
}

function encode (kind: number, payload: { id: number, from?: string, body: string }): Buffer {
  const json = Buffer.from(JSON.stringify(payload))
  const message = Buffer.allocUnsafe(json.length + 1)
  message[0] = kind
  json.copy(message, 1)
  return message
}

function decode (message: Buffer): { id: number, from?: string, body: string } | undefined {
  try {
    const payload = JSON.parse(message.subarray(1).toString()) as { id?: unknown, from?: unknown, body?: unknown }
    if (typeof payload.id !== 'number' || typeof payload.body !== 'string') return undefined
    return { id: payload.id, from: typeof payload.from === 'string' ? payload.from : undefined, body: payload.body }
  } catch {
    return undefined
  }
}
