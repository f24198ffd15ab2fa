/**
 * A raw client of the HTTP-streaming fallback (docs/15-fallback.md) for tests: reads the stream with fetch, parses
 * its events, and POSTs batches exactly as told (any seq, any body), so a test can be exact about the wire.
 */

export interface StreamEvent { event: string | undefined, data: string }

export interface OpenOptions {
  headers?: Record<string, string>
  /** Where to POST (default: the stream's own origin). */
  postBase?: string
}

/** What the server answered instead of a stream. */
export class StreamRefused extends Error {
  constructor (readonly status: number, readonly body: any) {
    super(`stream refused: ${status} ${JSON.stringify(body)}`)
  }
}

/** Parses SSE text incrementally: `push` a chunk, get the complete events; comments counted. */
export class SseParser {
  private buffer = ''
  comments = 0

  push (chunk: string): StreamEvent[] {
    this.buffer += chunk
    const events: StreamEvent[] = []
    let end: number
    while ((end = this.buffer.indexOf('\n\n')) !== -1) {
      const block = this.buffer.slice(0, end)
      this.buffer = this.buffer.slice(end + 2)
      let event: string | undefined
      const data: string[] = []
      let isComment = true
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue
        isComment = false
        if (line.startsWith('event: ')) event = line.slice(7)
        else if (line.startsWith('data: ')) data.push(line.slice(6))
      }
      if (isComment) {
        this.comments++
        continue
      }
      events.push({ event, data: data.join('\n') })
    }
    return events
  }
}

export class StreamClient {
  session = ''
  post = ''
  heartbeat = 0
  seq = 0
  readonly headers: Headers
  /** Resolves with the `rt.close` code and reason, or 1006 when the stream ended without one. */
  readonly closed: Promise<{ code: number, reason: string }>
  readonly parser = new SseParser()
  /** Every event after `rt.open`, in order (binary ones as `{ binary: Buffer }`). */
  readonly received: unknown[] = []
  private readonly waiters: Array<() => void> = []
  private resolveClosed!: (value: { code: number, reason: string }) => void
  private read = 0

  private constructor (readonly url: string, readonly response: Response, private readonly postBase: string, private readonly controller: AbortController) {
    this.headers = response.headers
    this.closed = new Promise((resolve) => { this.resolveClosed = resolve })
  }

  /** Opens the stream; resolves once `rt.open` arrived, rejects with `StreamRefused` on a refusal. */
  static async open (url: string, options: OpenOptions = {}): Promise<StreamClient> {
    const controller = new AbortController()
    const response = await fetch(url, { headers: { accept: 'text/event-stream', ...options.headers }, signal: controller.signal })
    if (response.status !== 200) {
      const text = await response.text()
      let body: unknown = text
      try { body = JSON.parse(text) } catch {}
      throw new StreamRefused(response.status, body)
    }
    const client = new StreamClient(url, response, options.postBase ?? new URL(url).origin, controller)
    const opened = new Promise<void>((resolve, reject) => {
      client.onOpen = resolve
      client.closed.then((c) => { reject(new Error(`stream closed before rt.open: ${c.code}`)) }, () => {})
    })
    client.pump().catch(() => {})
    await withTimeout(opened, 3000, 'rt.open')
    return client
  }

  private onOpen: () => void = () => {}

  private async pump (): Promise<void> {
    const body = this.response.body
    if (body === null) throw new Error('no body')
    const decoder = new TextDecoder()
    let closed: { code: number, reason: string } | undefined
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
        for (const { event, data } of this.parser.push(decoder.decode(chunk, { stream: true }))) {
          if (event === 'rt.open') {
            const open = JSON.parse(data) as { session: string, post: string, heartbeat: number }
            this.session = open.session
            this.post = open.post
            this.heartbeat = open.heartbeat
            this.onOpen()
          } else if (event === 'rt.close') {
            closed = JSON.parse(data)
          } else if (event === 'rt.binary') {
            this.push({ binary: Buffer.from(data, 'base64') })
          } else {
            this.push(JSON.parse(data))
          }
        }
      }
    } catch {}
    this.resolveClosed(closed ?? { code: 1006, reason: '' })
    for (const waiter of this.waiters.splice(0)) waiter()
  }

  private push (value: unknown): void {
    this.received.push(value)
    for (const waiter of this.waiters.splice(0)) waiter()
  }

  /** The next event not yet read; rejects after `timeout` ms. */
  async nextMessage<T = any> (timeout = 3000): Promise<T> {
    const deadline = Date.now() + timeout
    while (this.read >= this.received.length) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no message within ${timeout} ms`)
      await withTimeout(new Promise<void>((resolve) => { this.waiters.push(resolve) }), left, 'a message').catch(() => {})
    }
    return this.received[this.read++] as T
  }

  /** POSTs a batch as given; the next seq when `seq` is omitted. */
  async send (frames: unknown[], options: { seq?: number, session?: string, headers?: Record<string, string>, body?: unknown } = {}): Promise<{ status: number, body: any }> {
    const seq = options.seq ?? ++this.seq
    const body = options.body ?? { session: options.session ?? this.session, seq, frames }
    const response = await fetch(this.postBase + this.post, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...options.headers },
      body: typeof body === 'string' ? body : JSON.stringify(body)
    })
    const text = await response.text()
    let parsed: unknown = text
    try { parsed = JSON.parse(text) } catch {}
    return { status: response.status, body: parsed }
  }

  /** Sends `{ type, data, id }` in a batch of its own and returns the next message. */
  async request<T = any> (type: string, data?: unknown, options: { headers?: Record<string, string> } = {}): Promise<T> {
    const answer = await this.send([JSON.stringify({ type, data, id: this.seq + 1 })], options)
    if (answer.status !== 200) throw new Error(`batch refused: ${answer.status} ${JSON.stringify(answer.body)}`)
    return await this.nextMessage<T>()
  }

  /** Stops reading (the client goes away). */
  abort (): void {
    this.controller.abort()
  }
}

async function withTimeout<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no ${what} within ${ms} ms`)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}
