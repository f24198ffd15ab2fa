import WebSocket, { type ClientOptions } from 'ws'
import { once } from 'node:events'

/** What the server answered instead of a 101. */
export interface Refusal {
  statusCode: number
  body: { statusCode: number, code: string, message: string }
}

/** A raw ws client with the conveniences every test needs. */
export class TestClient {
  readonly ws: WebSocket
  /** Resolves with the close code and reason the client saw. */
  readonly closed: Promise<{ code: number, reason: string }>
  private readonly inbox: unknown[] = []
  private readonly waiters: Array<(value: unknown) => void> = []
  private nextId = 1

  constructor (ws: WebSocket) {
    this.ws = ws
    ws.on('message', (data, isBinary) => {
      const value = isBinary ? data : JSON.parse(data.toString())
      const waiter = this.waiters.shift()
      if (waiter !== undefined) waiter(value)
      else this.inbox.push(value)
    })
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => { resolve({ code, reason: reason.toString() }) })
    })
    ws.on('error', () => {})
  }

  /** The next message, parsed; rejects after `timeout` ms. */
  async nextMessage<T = any> (timeout = 3000): Promise<T> {
    if (this.inbox.length > 0) return this.inbox.shift() as T
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter)
        if (i !== -1) this.waiters.splice(i, 1)
        reject(new Error(`no message within ${timeout} ms`))
      }, timeout)
      const waiter = (value: unknown): void => { clearTimeout(timer); resolve(value as T) }
      this.waiters.push(waiter)
    })
  }

  /** Messages received and not yet read. */
  get pending (): number {
    return this.inbox.length
  }

  sendJson (value: unknown): void {
    this.ws.send(JSON.stringify(value))
  }

  /** Sends `{ type, data, id }` and returns the next message (tests keep one request in flight). */
  async request<T = any> (type: string, data?: unknown): Promise<T> {
    const id = this.nextId++
    this.sendJson({ type, data, id })
    return await this.nextMessage<T>()
  }

  async close (): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return
    this.ws.close()
    await this.closed
  }

  destroy (): void {
    this.ws.terminate()
  }
}

/** Opens a client; rejects with the server's refusal (status and JSON body) when the handshake is refused. */
export async function connect (url: string, options: ClientOptions & { protocols?: string | string[] } = {}): Promise<TestClient> {
  const { protocols, ...rest } = options
  const ws = new WebSocket(url, protocols, rest)
  const client = new TestClient(ws)
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => { resolve() })
    ws.once('unexpected-response', (req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => {
        req.destroy()
        let parsed: Refusal['body']
        try { parsed = JSON.parse(body) } catch { parsed = { statusCode: res.statusCode ?? 0, code: 'UNPARSEABLE', message: body } }
        reject(Object.assign(new Error(`refused with ${res.statusCode ?? 0}`), { refusal: { statusCode: res.statusCode ?? 0, body: parsed } }))
      })
    })
    ws.once('error', reject)
  })
  return client
}

/** The refusal a `connect` was rejected with. */
export async function refusalOf (promise: Promise<unknown>): Promise<Refusal> {
  try {
    await promise
  } catch (err) {
    const refusal = (err as { refusal?: Refusal }).refusal
    if (refusal !== undefined) return refusal
    throw err
  }
  throw new Error('the handshake was accepted')
}

/** Resolves when `predicate` holds, polling every 10 ms; rejects after `timeout` ms. */
export async function waitFor (predicate: () => boolean, timeout = 3000, what = 'condition'): Promise<void> {
  const start = Date.now()
  while (!predicate()) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

export { once }
