import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface HttpProxyOptions {
  /** The backends' `http://127.0.0.1:<port>` bases. */
  targets: () => string[]
  /**
   * Upgrade requests: refused with 400 and closed (a network that blocks WebSockets), held unanswered until the
   * client gives up (a middlebox that swallows them), or passed through.
   */
  upgrades?: () => 'refuse' | 'hang' | 'pass'
  /**
   * Called for each POST after the backend answered: true drops the answer (the client's connection is cut), so the
   * client retries a request that was handled.
   */
  dropAnswer?: (request: http.IncomingMessage) => boolean
}

/**
 * A plain HTTP proxy on 127.0.0.1 that sends every request to the next target in turn (round-robin per request,
 * not per TCP connection: two requests in a row never reach the same instance when there are two), streams the
 * answers through, and can refuse upgrades or drop answers. `close()` ends it and every connection through it.
 */
export class HttpProxy {
  readonly server: http.Server
  /** Requests sent to each target, by base. */
  readonly routed = new Map<string, number>()
  /** Upgrade requests refused. */
  refusedUpgrades = 0
  /** Upgrade requests held unanswered. */
  heldUpgrades = 0
  private next = 0
  private readonly agent = new http.Agent({ keepAlive: true })
  private readonly sockets = new Set<import('node:net').Socket>()

  constructor (private readonly options: HttpProxyOptions) {
    this.server = http.createServer((request, response) => { this.forward(request, response) })
    this.server.on('connection', (socket) => {
      this.sockets.add(socket)
      socket.on('close', () => { this.sockets.delete(socket) })
    })
    this.server.on('upgrade', (request, socket) => {
      const mode = this.options.upgrades?.() ?? 'refuse'
      if (mode === 'hang') {
        this.heldUpgrades++
        socket.on('error', () => {})
        return
      }
      if (mode === 'refuse') {
        this.refusedUpgrades++
        socket.on('error', () => {})
        socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
        return
      }
      this.passUpgrade(request, socket)
    })
  }

  async listen (): Promise<string> {
    await new Promise<void>((resolve) => { this.server.listen(0, '127.0.0.1', resolve) })
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  async close (): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    this.agent.destroy()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
  }

  private target (): string {
    const targets = this.options.targets()
    const target = targets[this.next++ % targets.length] as string
    this.routed.set(target, (this.routed.get(target) ?? 0) + 1)
    return target
  }

  private forward (request: http.IncomingMessage, response: http.ServerResponse): void {
    const target = new URL(this.target())
    const upstream = http.request({
      host: target.hostname,
      port: target.port,
      method: request.method,
      path: request.url,
      headers: request.headers,
      agent: this.agent
    }, (answer) => {
      if (request.method === 'POST' && this.options.dropAnswer?.(request) === true) {
        answer.resume()
        answer.on('end', () => { response.socket?.destroy() })
        return
      }
      response.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(response)
      answer.on('error', () => { response.destroy() })
    })
    upstream.on('error', () => {
      if (!response.headersSent) response.writeHead(502).end()
      else response.destroy()
    })
    // The client went away (a stream it stopped reading): so does the request to the backend.
    response.on('close', () => { if (!response.writableFinished) upstream.destroy() })
    request.pipe(upstream)
  }

  private passUpgrade (request: http.IncomingMessage, socket: import('node:stream').Duplex): void {
    const target = new URL(this.target())
    const upstream = http.request({ host: target.hostname, port: target.port, method: 'GET', path: request.url, headers: request.headers })
    upstream.on('upgrade', (answer, backend, head) => {
      const lines = [`HTTP/1.1 ${answer.statusCode ?? 101} ${answer.statusMessage ?? ''}`]
      for (let i = 0; i < answer.rawHeaders.length; i += 2) lines.push(`${answer.rawHeaders[i] as string}: ${answer.rawHeaders[i + 1] as string}`)
      socket.write(lines.join('\r\n') + '\r\n\r\n')
      if (head.length > 0) socket.write(head)
      backend.pipe(socket).pipe(backend)
      const end = (): void => { socket.destroy(); backend.destroy() }
      backend.on('error', end)
      socket.on('error', end)
      backend.on('close', end)
      socket.on('close', end)
    })
    upstream.on('response', (answer) => {
      // A refused upgrade: its HTTP answer, as is.
      const lines = [`HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}`]
      for (let i = 0; i < answer.rawHeaders.length; i += 2) lines.push(`${answer.rawHeaders[i] as string}: ${answer.rawHeaders[i + 1] as string}`)
      socket.write(lines.join('\r\n') + '\r\n\r\n')
      answer.pipe(socket)
    })
    upstream.on('error', () => { socket.destroy() })
    socket.on('error', () => { upstream.destroy() })
    upstream.end()
  }
}
