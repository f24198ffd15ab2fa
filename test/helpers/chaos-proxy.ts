// A TCP proxy between WebSocket clients and a server, for soaks: it throttles both directions to a byte rate, stalls
// them (the sockets stay open, nothing passes), or cuts every link (and refuses new ones until restored). Bytes keep
// their order; a throttled or stalled direction queues what it reads and pauses its source past 1 MiB.
import net from 'node:net'

const TICK_MS = 10
const HIGH_WATER = 1024 * 1024

class Direction {
  private readonly queue: Buffer[] = []
  private queued = 0

  constructor (private readonly proxy: ChaosProxy, readonly from: net.Socket, readonly to: net.Socket) {
    from.on('data', (chunk: Buffer) => { this.take(chunk) })
  }

  private take (chunk: Buffer): void {
    if (this.queued === 0 && this.proxy.flowing) {
      this.to.write(chunk)
      return
    }
    this.queue.push(chunk)
    this.queued += chunk.length
    if (this.queued > HIGH_WATER) this.from.pause()
  }

  /** Passes on up to `budget` bytes (Infinity: all); returns what it passed. */
  pump (budget: number): number {
    let sent = 0
    while (this.queue.length > 0 && sent < budget) {
      const head = this.queue[0] as Buffer
      const n = Math.min(head.length, budget - sent)
      if (n === head.length) this.queue.shift()
      else this.queue[0] = head.subarray(n)
      this.to.write(n === head.length ? head : head.subarray(0, n))
      sent += n
      this.queued -= n
    }
    if (this.queued <= HIGH_WATER && this.from.isPaused()) this.from.resume()
    return sent
  }
}

export class ChaosProxy {
  private server: net.Server | undefined
  private readonly links = new Set<{ client: net.Socket, upstream: net.Socket, directions: Direction[] }>()
  private timer: NodeJS.Timeout | undefined
  private rate: number | undefined
  private stalled = false
  private refusing = false
  port = 0
  /** Links the proxy cut (each one a client saw drop for a reason that was not its own). */
  cuts = 0

  constructor (private readonly target: { host: string, port: number }) {}

  /** True when bytes pass at once: neither throttled nor stalled. */
  get flowing (): boolean {
    return this.rate === undefined && !this.stalled
  }

  async start (): Promise<number> {
    const server = net.createServer((client) => {
      if (this.refusing) {
        client.destroy()
        return
      }
      const upstream = net.connect(this.target.port, this.target.host)
      const link = { client, upstream, directions: [] as Direction[] }
      link.directions.push(new Direction(this, client, upstream), new Direction(this, upstream, client))
      this.links.add(link)
      for (const s of [client, upstream]) {
        s.setNoDelay(true)
        s.on('error', () => {})
        s.on('close', () => { this.links.delete(link); client.destroy(); upstream.destroy() })
      }
    })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
    })
    this.port = (server.address() as net.AddressInfo).port
    this.timer = setInterval(() => { this.tick() }, TICK_MS)
    return this.port
  }

  /** Both directions of every link to `bytesPerSecond` (undefined: no limit). */
  throttle (bytesPerSecond: number | undefined): void {
    this.rate = bytesPerSecond
    if (this.flowing) this.tick()
  }

  /** Stops every byte (the sockets stay open) until `stall(false)`. */
  stall (on: boolean): void {
    this.stalled = on
    if (this.flowing) this.tick()
  }

  /** Drops every open link and refuses new ones until `restore()`. */
  cut (): void {
    this.refusing = true
    for (const link of this.links) {
      this.cuts++
      link.client.destroy()
      link.upstream.destroy()
    }
    this.links.clear()
  }

  restore (): void {
    this.refusing = false
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    this.cut()
    const server = this.server
    this.server = undefined
    await new Promise<void>((resolve) => { if (server === undefined) resolve(); else server.close(() => { resolve() }) })
  }

  private tick (): void {
    if (this.stalled) return
    const budget = this.rate === undefined ? Infinity : this.rate * TICK_MS / 1000
    for (const link of this.links) for (const direction of link.directions) direction.pump(budget)
  }
}

/** A seeded generator (mulberry32): the same seed, the same schedule. */
export function seeded (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
