import type { ChainableCommander, Cluster, Redis } from 'ioredis'
import type { BrokerNode } from './types.js'

type Kind = 'room' | 'user'

// Expiry is computed from Redis's clock (TIME) when written and when read, so instances whose clocks disagree
// still agree on which entries are alive. `replicate_commands` lets Redis 3.2–4 write after TIME; later versions
// always replicate effects.
const CLOCK = `if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
`
/** KEYS[1] the hash, ARGV: instance id, its count, TTL in ms. */
const WRITE = `${CLOCK}
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. string.format('%d', now + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`
/** KEYS[1] the hash: the sum of the live counts; expired fields are removed on the way. */
const COUNT = `${CLOCK}
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local count, expires = string.match(fields[i + 1], '^(%d+):(%d+)$')
  if count ~= nil and tonumber(expires) > now then
    total = total + tonumber(count)
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return total`

/** The first early retry of a failed write, in ms (then doubling, up to the refresh interval). */
const RETRY_FIRST = 50

interface Scripts {
  rtPresenceWrite: (key: string, instance: string, count: number, ttlMs: number) => Promise<unknown>
  rtPresenceCount: (key: string) => Promise<number>
}

/**
 * Cluster-wide member counts for `roomSize` and `online`: a hash per room and per user, one field per instance
 * holding `<count>:<expires at, ms on Redis's clock>`. Each instance writes its field when its count changes and
 * rewrites all its fields every third of the TTL; a reader sums the fields that have not expired, so a crashed
 * instance's members stop counting within the TTL, and the hash itself expires when nobody refreshes it.
 *
 * Writes are idempotent (they set the current count): one that fails (a cluster client still settling its node
 * connections answers "Connection is closed", a Redis away) is counted through `failed` and its name marked dirty;
 * dirty names are written again with their current count after a short backoff (50 ms doubling up to the refresh
 * interval), and by every refresh, so counts are right again as soon as Redis answers, not a refresh later.
 */
export class RedisPresence {
  private readonly redis: (Redis | Cluster) & Scripts
  private timer: ReturnType<typeof setInterval> | undefined
  private node: BrokerNode | undefined
  /** Names whose last write failed or could not be sent: written again with their current count (0: removed). */
  private readonly dirty = new Map<string, { kind: Kind, name: string }>()
  /** The early retry of the dirty names, while one is scheduled. */
  private retry: ReturnType<typeof setTimeout> | undefined
  private retryDelay = RETRY_FIRST
  /** A refresh not answered yet: a Redis that stopped answering does not get another one piled on every tick. */
  private refreshing = false
  private stopped = false

  constructor (
    redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly instanceId: string,
    private readonly ttlMs: number,
    /** Wraps a name in a cluster hash tag (`{lobby}`), or leaves it as it is. */
    private readonly tag: (name: string) => string = (name) => name,
    /** A write failed or could not be sent (counted, never swallowed). */
    private readonly failed: (err: Error) => void = () => {}
  ) {
    redis.defineCommand('rtPresenceWrite', { numberOfKeys: 1, lua: WRITE })
    redis.defineCommand('rtPresenceCount', { numberOfKeys: 1, lua: COUNT })
    this.redis = redis as (Redis | Cluster) & Scripts
  }

  private key (kind: Kind, name: string): string {
    return `${this.prefix}presence:${kind}:${this.tag(name)}`
  }

  private get interval (): number {
    return Math.max(100, Math.floor(this.ttlMs / 3))
  }

  /**
   * Idempotent writes of names' counts (0 removes this instance's field): one pipeline on a single Redis; on a
   * cluster, where a pipeline's keys must share a slot, one by one (ioredis routes each to its shard). A failed
   * write marks its name dirty. Resolves true when every write succeeded.
   */
  private async writeMany (entries: Array<{ kind: Kind, name: string, count: number }>): Promise<boolean> {
    if (entries.length === 0) return true
    const keys = entries.map(({ kind, name }) => this.key(kind, name))
    let errors: Array<Error | null>
    if (this.redis.isCluster) {
      const settled = await Promise.allSettled(entries.map(async ({ count }, i) => {
        const key = keys[i] as string
        return count === 0 ? await this.redis.hdel(key, this.instanceId) : await this.redis.rtPresenceWrite(key, this.instanceId, count, this.ttlMs)
      }))
      errors = settled.map((r) => r.status === 'rejected' ? r.reason as Error : null)
    } else {
      const pipeline = this.redis.pipeline() as ChainableCommander & { rtPresenceWrite: (key: string, instance: string, count: number, ttlMs: number) => ChainableCommander }
      entries.forEach(({ count }, i) => {
        const key = keys[i] as string
        if (count === 0) pipeline.hdel(key, this.instanceId)
        else pipeline.rtPresenceWrite(key, this.instanceId, count, this.ttlMs)
      })
      try {
        const results = await pipeline.exec()
        errors = entries.map((_, i) => results?.[i]?.[0] ?? (results === null ? new Error('redis broker: pipeline discarded') : null))
      } catch (err) {
        errors = entries.map(() => err as Error)
      }
    }
    let ok = true
    errors.forEach((err, i) => {
      const entry = entries[i]
      if (err === null || entry === undefined) return
      ok = false
      this.markDirty(keys[i] as string, entry.kind, entry.name, err)
    })
    return ok
  }

  private markDirty (key: string, kind: Kind, name: string, err: Error): void {
    if (this.stopped) return
    this.dirty.set(key, { kind, name })
    this.failed(err)
    this.scheduleRetry()
  }

  private scheduleRetry (): void {
    if (this.retry !== undefined || this.stopped || this.node === undefined) return
    const delay = this.retryDelay
    this.retryDelay = Math.min(this.retryDelay * 2, this.interval)
    this.retry = setTimeout(() => {
      this.retry = undefined
      this.repair()
    }, delay)
    this.retry.unref()
  }

  /** Writes the dirty names again with their current counts. While Redis is away the refresh on its return does. */
  private repair (): void {
    const node = this.node
    if (node === undefined || this.dirty.size === 0 || this.stopped) return
    if (this.redis.status !== 'ready') return
    const dirty = new Map(this.dirty)
    this.dirty.clear()
    const writes: Array<{ kind: Kind, name: string, count: number }> = []
    for (const kind of ['room', 'user'] as const) {
      for (const [name, count] of node.local(kind)) {
        if (dirty.delete(this.key(kind, name))) writes.push({ kind, name, count })
      }
    }
    for (const { kind, name } of dirty.values()) writes.push({ kind, name, count: 0 })
    this.writeMany(writes).then((ok) => { if (ok) this.retryDelay = RETRY_FIRST }, () => {})
  }

  start (node: BrokerNode): void {
    this.node = node
    this.timer = setInterval(() => { this.refresh(node) }, this.interval)
    this.timer.unref()
  }

  /** Writes one count now; while Redis is away it is counted as failed and the refresh after it is back writes it. */
  set (kind: Kind, name: string, count: number): void {
    const key = this.key(kind, name)
    if (this.redis.status !== 'ready') {
      this.markDirty(key, kind, name, new Error('redis broker: the count of a room or user was not written: Redis is not connected'))
      return
    }
    this.writeMany([{ kind, name, count }]).catch(() => {})
  }

  /** Rewrites every local count with a fresh expiry, and the dirty names (those left: removed). */
  refresh (node: BrokerNode): void {
    if (this.redis.status !== 'ready' || this.refreshing || this.stopped) return
    const dirty = new Map(this.dirty)
    this.dirty.clear()
    const writes: Array<{ kind: Kind, name: string, count: number }> = []
    for (const kind of ['room', 'user'] as const) {
      for (const [name, count] of node.local(kind)) {
        dirty.delete(this.key(kind, name))
        writes.push({ kind, name, count })
      }
    }
    for (const { kind, name } of dirty.values()) writes.push({ kind, name, count: 0 })
    if (writes.length === 0) return
    this.refreshing = true
    this.writeMany(writes).then((ok) => { if (ok) this.retryDelay = RETRY_FIRST }, () => {}).finally(() => { this.refreshing = false })
  }

  /** The members across instances. Rejects while Redis is unreachable. */
  async count (kind: Kind, name: string): Promise<number> {
    return await this.redis.rtPresenceCount(this.key(kind, name))
  }

  /** Removes this instance's fields (a clean shutdown) and stops refreshing. */
  async stop (node: BrokerNode | undefined): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    if (this.retry !== undefined) clearTimeout(this.retry)
    this.retry = undefined
    if (node === undefined || this.redis.status !== 'ready') return
    // Fields of names left while Redis was away (dirty) go too; a failure here is left to the fields' expiry.
    const writes = [...this.dirty.values()].map(({ kind, name }) => ({ kind, name, count: 0 }))
    for (const kind of ['room', 'user'] as const) {
      for (const [name] of node.local(kind)) writes.push({ kind, name, count: 0 })
    }
    await this.writeMany(writes)
  }
}
