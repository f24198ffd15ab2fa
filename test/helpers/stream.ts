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

/** A stream opened over a connection of its own (no pool keeps a socket after it): for tests that count handles. */
export interface RawStream {
  status: number
  headers: import('node:http').IncomingHttpHeaders
  /** The events so far (rt.open included), and the body text when the answer is not a stream. */
  events: StreamEvent[]
  body: string
  /** Resolves when the response ended. */
  ended: Promise<void>
  /** Stops reading without closing (a reader that stalls). */
  pause: () => void
  destroy: () => void
}

export async function rawStream (port: number, headers: Record<string, string>, path = '/rt'): Promise<RawStream> {
  const http = await import('node:http')
  return await new Promise<RawStream>((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, path, agent: false, headers: { accept: 'text/event-stream', connection: 'close', ...headers } }, (response) => {
      const parser = new SseParser()
      const stream: RawStream = {
        status: response.statusCode ?? 0,
        headers: response.headers,
        events: [],
        body: '',
        ended: new Promise<void>((resolve) => { response.on('close', resolve) }),
        pause: () => { response.pause() },
        destroy: () => { request.destroy() }
      }
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        if (stream.status === 200) stream.events.push(...parser.push(chunk))
        else stream.body += chunk
      })
      response.on('error', () => {})
      if (stream.status !== 200) {
        response.on('end', () => { resolve(stream) })
        return
      }
      const started = Date.now()
      const wait = (): void => {
        if (stream.events.length > 0) resolve(stream)
        else if (Date.now() - started > 3000) reject(new Error('no rt.open within 3 s'))
        else setTimeout(wait, 5)
      }
      wait()
    })
    request.on('error', reject)
    request.end()
  })
}

/** POSTs `body` (a string as is, else JSON) over a connection of its own; the status and the parsed body. */
export async function rawPost (port: number, body: unknown, headers: Record<string, string> = {}, path = '/rt'): Promise<{ status: number, body: any }> {
  const http = await import('node:http')
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  return await new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: false, headers: { 'content-type': 'application/json', connection: 'close', 'content-length': String(Buffer.byteLength(text)), ...headers } }, (response) => {
      let data = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { data += chunk })
      response.on('end', () => {
        let parsed: unknown = data
        try { parsed = JSON.parse(data) } catch {}
        resolve({ status: response.statusCode ?? 0, body: parsed })
      })
    })
    request.on('error', reject)
    request.end(text)
  })
}
