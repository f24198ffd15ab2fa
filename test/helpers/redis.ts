import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** Fails (never skips) when no Redis answers, saying how to start one. */
export async function requireRedis (): Promise<Redis> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  try {
    await redis.connect()
    await redis.ping()
    return redis
  } catch (err) {
    redis.disconnect()
    throw new Error(`These tests need a Redis at ${REDIS_URL} (${(err as Error).message}). Start one with: ` +
      'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no')
  }
}

/** A key and channel prefix of its own for each test, so runs never see each other. */
export const uniquePrefix = (): string => `rt-test-${randomBytes(4).toString('hex')}:`

/**
 * A TCP proxy in front of Redis that a test can cut and restore: an outage without stopping the shared server.
 */
export class RedisProxy {
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()
  port = 0

  async start (port = 0): Promise<string> {
    const target = new URL(REDIS_URL)
    this.server = net.createServer((client) => {
      const upstream = net.connect(Number(target.port || 6379), target.hostname)
      for (const s of [client, upstream]) {
        this.sockets.add(s)
        s.on('error', () => {})
        s.on('close', () => { this.sockets.delete(s); client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', resolve))
    this.port = (this.server.address() as net.AddressInfo).port
    return `redis://127.0.0.1:${this.port}`
  }

  /** Refuses new connections and drops every open one. */
  async cut (): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => { if (server === undefined) resolve(); else server.close(() => { resolve() }) })
  }

  async restore (): Promise<void> {
    await this.start(this.port)
  }
}
