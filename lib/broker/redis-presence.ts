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

interface Scripts {
  rtPresenceWrite: (key: string, instance: string, count: number, ttlMs: number) => Promise<unknown>
  rtPresenceCount: (key: string) => Promise<number>
}
type ScriptPipeline = ChainableCommander & {
  rtPresenceWrite: (key: string, instance: string, count: number, ttlMs: number) => ChainableCommander
}

/**
 * Cluster-wide member counts for `roomSize` and `online`: a hash per room and per user, one field per instance
 * holding `<count>:<expires at, ms on Redis's clock>`. Each instance writes its field when its count changes and
 * rewrites all its fields every third of the TTL; a reader sums the fields that have not expired, so a crashed
 * instance's members stop counting within the TTL, and the hash itself expires when nobody refreshes it.
 */
export class RedisPresence {
  private readonly redis: (Redis | Cluster) & Scripts
  private timer: ReturnType<typeof setInterval> | undefined
  /** Fields whose count fell to 0 while Redis was away: removed at the next refresh instead of waiting to expire. */
  private readonly stale = new Set<string>()
  /** A refresh not answered yet: a Redis that stopped answering does not get another one piled on every tick. */
  private refreshing = false

  constructor (
    redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly instanceId: string,
    private readonly ttlMs: number,
    /** Wraps a name in a cluster hash tag (`{lobby}`), or leaves it as it is. */
    private readonly tag: (name: string) => string = (name) => name
  ) {
    redis.defineCommand('rtPresenceWrite', { numberOfKeys: 1, lua: WRITE })
    redis.defineCommand('rtPresenceCount', { numberOfKeys: 1, lua: COUNT })
    this.redis = redis as (Redis | Cluster) & Scripts
  }

  private key (kind: Kind, name: string): string {
    return `${this.prefix}presence:${kind}:${this.tag(name)}`
  }

  /**
   * A batch of writes: one pipeline on a single Redis; on a cluster, where a pipeline's keys must share a slot,
   * the commands go one by one (ioredis routes each to its shard).
   */
  private batch (): ScriptPipeline & { run: () => Promise<unknown> } {
    if (!this.redis.isCluster) {
      const pipeline = this.redis.pipeline() as ScriptPipeline
      return Object.assign(pipeline, { run: async () => await pipeline.exec() })
    }
    const calls: Array<() => Promise<unknown>> = []
    const redis = this.redis
    const batch = {
      get length () { return calls.length },
      hdel: (key: string, field: string) => { calls.push(async () => await redis.hdel(key, field)); return batch },
      rtPresenceWrite: (key: string, instance: string, count: number, ttlMs: number) => {
        calls.push(async () => await redis.rtPresenceWrite(key, instance, count, ttlMs))
        return batch
      },
      run: async () => await Promise.allSettled(calls.map(async (call) => await call()))
    }
    return batch as unknown as ScriptPipeline & { run: () => Promise<unknown> }
  }

  start (node: BrokerNode): void {
    this.timer = setInterval(() => { this.refresh(node) }, Math.max(100, Math.floor(this.ttlMs / 3)))
    this.timer.unref()
  }

  /** Writes one count now; while Redis is away, the next refresh after it is back writes it. */
  set (kind: Kind, name: string, count: number): void {
    const key = this.key(kind, name)
    if (this.redis.status !== 'ready') {
      if (count === 0) this.stale.add(key)
      return
    }
    const write = count === 0
      ? this.redis.hdel(key, this.instanceId)
      : this.redis.rtPresenceWrite(key, this.instanceId, count, this.ttlMs)
    write.catch(() => {})
  }

  /** Rewrites every local count with a fresh expiry (and drops the fields of names left while Redis was away). */
  refresh (node: BrokerNode): void {
    if (this.redis.status !== 'ready' || this.refreshing) return
    const batch = this.batch()
    for (const key of this.stale) batch.hdel(key, this.instanceId)
    this.stale.clear()
    for (const kind of ['room', 'user'] as const) {
      for (const [name, count] of node.local(kind)) batch.rtPresenceWrite(this.key(kind, name), this.instanceId, count, this.ttlMs)
    }
    if (batch.length === 0) return
    this.refreshing = true
    batch.run().catch(() => {}).finally(() => { this.refreshing = false })
  }

  /** The members across instances. Rejects while Redis is unreachable. */
  async count (kind: Kind, name: string): Promise<number> {
    return await this.redis.rtPresenceCount(this.key(kind, name))
  }

  /** Removes this instance's fields (a clean shutdown) and stops refreshing. */
  async stop (node: BrokerNode | undefined): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    if (node === undefined || this.redis.status !== 'ready') return
    const batch = this.batch()
    for (const kind of ['room', 'user'] as const) {
      for (const [name] of node.local(kind)) batch.hdel(this.key(kind, name), this.instanceId)
    }
    if (batch.length > 0) await batch.run().catch(() => {})
  }
}
