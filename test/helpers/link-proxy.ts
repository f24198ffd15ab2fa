// A TCP proxy in front of one Redis (any host and port), so a test or a simulated schedule can cut or stall one
// instance's link alone: a Redis outage, or a Redis that keeps the connection and stops answering, without touching
// the server. test/helpers/redis.ts's RedisProxy is this one aimed at the test files' REDIS_URL.
import net from 'node:net'

export class LinkProxy {
  private server: net.Server | undefined
  private readonly pairs = new Set<[net.Socket, net.Socket]>()
  private stalled = false
  port = 0

  constructor (private readonly target: { host: string, port: number }) {}

  get url (): string {
    return `redis://127.0.0.1:${this.port}`
  }

  get state (): 'up' | 'cut' | 'stalled' {
    return this.server === undefined ? 'cut' : this.stalled ? 'stalled' : 'up'
  }

  async start (port = this.port): Promise<string> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target.port, this.target.host)
      const pair: [net.Socket, net.Socket] = [client, upstream]
      this.pairs.add(pair)
      for (const s of pair) {
        s.on('error', () => {})
        s.on('close', () => { this.pairs.delete(pair); client.destroy(); upstream.destroy() })
      }
      upstream.pipe(client)
      if (this.stalled) client.pause()
      else client.pipe(upstream)
    })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve() })
    })
    this.port = (server.address() as net.AddressInfo).port
    return this.url
  }

  /** Refuses new connections and drops every open one. */
  async cut (): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const pair of this.pairs) for (const s of pair) s.destroy()
    await new Promise<void>((resolve) => { if (server === undefined) resolve(); else server.close(() => { resolve() }) })
  }

  async restore (): Promise<void> {
    if (this.server !== undefined) return
    // The port was ours a moment ago; on a busy machine its release can lag: retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.start(this.port)
        return
      } catch (err) {
        if (attempt >= 50) throw err
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
  }

  /** Keeps the connections open but stops passing requests on, as a Redis that stopped answering would. */
  stall (): void {
    this.stalled = true
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream)
      client.pause()
    }
  }

  resume (): void {
    if (!this.stalled) return
    this.stalled = false
    for (const [client, upstream] of this.pairs) {
      client.pipe(upstream)
      client.resume()
    }
  }

  async stop (): Promise<void> {
    this.resume()
    await this.cut()
  }
}
