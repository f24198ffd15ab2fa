import type { Cluster, Redis } from 'ioredis'
import { withDeadline } from '../deadline.js'
import type { Claim, IdempotencyStore, ResolvedIdempotency } from './store.js'

/**
 * KEYS: the key's entry. ARGV: the pending entry (`p` + fingerprint), its ttl in ms. Claims the key, or returns
 * what it holds: `p<fp>` while its request runs, `d<fp>\n<outcome>` once it finished.
 */
const CLAIM = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
`

/** Every call is bounded: a stalled Redis fails the request (`STORE_UNAVAILABLE`, nothing ran) instead of hanging it. */
const CALL_TIMEOUT = 2000

type ScriptClient = (Redis | Cluster) & { rtIdemClaim: (key: string, pending: string, ttl: number) => Promise<string | null> }

/**
 * The keys in Redis, shared by every instance, so a retry that reconnects to another instance is still answered
 * from the first outcome. One string per key (`<prefix>idem:<scope>:<key>`), with a TTL: `pendingTtl` while its
 * request runs (an instance that dies mid-handler frees it), `window` once the outcome is written. The key holds no
 * `:`, so the last `:` ends the scope whatever the user id holds.
 */
export class RedisIdempotencyStore implements IdempotencyStore {
  private readonly redis: ScriptClient

  constructor (redis: Redis | Cluster, private readonly prefix: string, private readonly options: ResolvedIdempotency) {
    this.redis = redis as ScriptClient
    if (typeof this.redis.rtIdemClaim !== 'function') redis.defineCommand('rtIdemClaim', { numberOfKeys: 1, lua: CLAIM })
  }

  async claim (scope: string, key: string, fp: string): Promise<Claim> {
    const held = await withDeadline(this.redis.rtIdemClaim(this.keyOf(scope, key), `p${fp}`, this.options.pendingTtl), CALL_TIMEOUT, 'idempotency claim')
    if (held === null) return { kind: 'run' }
    const done = held.startsWith('d')
    const newline = done ? held.indexOf('\n') : held.length
    if (held.slice(1, newline) !== fp) return { kind: 'conflict' }
    return done ? { kind: 'done', outcome: held.slice(newline + 1) } : { kind: 'pending' }
  }

  async complete (scope: string, key: string, fp: string, outcome: string): Promise<void> {
    await withDeadline(this.redis.set(this.keyOf(scope, key), `d${fp}\n${outcome}`, 'PX', this.options.window), CALL_TIMEOUT, 'idempotency complete')
  }

  close (): void {}

  private keyOf (scope: string, key: string): string {
    return `${this.prefix}idem:${scope}:${key}`
  }
}
