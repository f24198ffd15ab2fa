import type { Redis } from 'ioredis'
import type { BrokerNode } from './types.js'

/**
 * Cluster-wide member counts for `roomSize` and `online`: a hash per room and per user, one field per instance
 * holding `<count>:<expires at, ms>`. Each instance writes its field when its count changes and rewrites all its
 * fields every third of the TTL; a reader sums the fields that have not expired, so a crashed instance's members
 * stop counting within the TTL, and the hash itself expires when nobody refreshes it.
 */
export class RedisPresence {
  private timer: ReturnType<typeof setInterval> | undefined

  constructor (
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly instanceId: string,
    private readonly ttlMs: number
  ) {}

  private key (kind: 'room' | 'user', name: string): string {
    return `${this.prefix}presence:${kind}:${name}`
  }

  start (node: BrokerNode): void {
    this.timer = setInterval(() => { this.refresh(node) }, Math.max(100, Math.floor(this.ttlMs / 3)))
    this.timer.unref()
  }

  /** Writes one count now; a failure is left to the next refresh. */
  set (kind: 'room' | 'user', name: string, count: number): void {
    if (this.redis.status !== 'ready') return
    const key = this.key(kind, name)
    const write = count === 0
      ? this.redis.hdel(key, this.instanceId)
      : this.redis.multi().hset(key, this.instanceId, `${count}:${Date.now() + this.ttlMs}`).pexpire(key, this.ttlMs).exec()
    write.catch(() => {})
  }

  /** Rewrites every local count with a fresh expiry. */
  refresh (node: BrokerNode): void {
    if (this.redis.status !== 'ready') return
    const expires = Date.now() + this.ttlMs
    const batch = this.redis.pipeline()
    for (const kind of ['room', 'user'] as const) {
      for (const [name, count] of node.local(kind)) {
        const key = this.key(kind, name)
        batch.hset(key, this.instanceId, `${count}:${expires}`).pexpire(key, this.ttlMs)
      }
    }
    if (batch.length > 0) batch.exec().catch(() => {})
  }

  /** The members across instances; expired fields are dropped on the way. */
  async count (kind: 'room' | 'user', name: string): Promise<number> {
    const key = this.key(kind, name)
    const fields = await this.redis.hgetall(key)
    const now = Date.now()
    let total = 0
    const expired: string[] = []
    for (const [instance, value] of Object.entries(fields)) {
      const [count, expires] = value.split(':').map(Number)
      if (count === undefined || expires === undefined || !(expires > now)) expired.push(instance)
      else total += count
    }
    if (expired.length > 0) this.redis.hdel(key, ...expired).catch(() => {})
    return total
  }

  /** Removes this instance's fields (a clean shutdown) and stops refreshing. */
  async stop (node: BrokerNode | undefined): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    if (node === undefined || this.redis.status !== 'ready') return
    const batch = this.redis.pipeline()
    for (const kind of ['room', 'user'] as const) {
      for (const [name] of node.local(kind)) batch.hdel(this.key(kind, name), this.instanceId)
    }
    if (batch.length > 0) await batch.exec().catch(() => {})
  }
}
