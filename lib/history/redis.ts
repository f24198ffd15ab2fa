import type { Cluster, Redis } from 'ioredis'
import { newEpoch } from './memory.js'
import type { HistoryPolicy } from './options.js'
import type { Appended, HistoryRead, HistoryStore } from './store.js'

/**
 * KEYS: stream, meta. ARGV: head, size, ttl ms, meta ttl ms, new epoch, channel, except, publish command (PUBLISH,
 * or SPUBLISH for sharded pub/sub on a cluster: the room's channel shares the keys' slot through the `{room}` tag).
 * One atomic step numbers, stores and publishes, so offset order is publish order on every instance. Offsets are
 * the stream's own entry ids (`N-0`), trimmed exactly (MAXLEN without `~`: "size = N" holds at the boundary).
 */
const APPEND = `
local e = redis.call('HGET', KEYS[2], 'e')
if not e then e = ARGV[5]; redis.call('HSET', KEYS[2], 'e', e) end
local top = redis.call('HINCRBY', KEYS[2], 's', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if top == 1 then redis.call('DEL', KEYS[1]) end
local n = string.format('%d', top)
local frame = ARGV[1] .. n .. '}'
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], n .. '-0', 'f', frame)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[8], ARGV[6], '\\2' .. e .. ':' .. n .. ':' .. ARGV[7] .. '|' .. frame)
return { top, e }`

/**
 * KEYS: stream, meta. ARGV: since (or ''), max entries, new epoch, meta ttl ms. Returns { epoch, top, first,
 * frame… }; entries only when at most `max` were missed (never an unbounded range). A room read before its first
 * publish gets its epoch here, so a first join learns a stable one.
 */
const READ = `
local m = redis.call('HMGET', KEYS[2], 'e', 's')
local e = m[1]
local top = tonumber(m[2]) or 0
if not e then e = ARGV[3]; redis.call('HSET', KEYS[2], 'e', e) end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local out = { e, top, 0 }
if ARGV[1] ~= '' then
  local since = tonumber(ARGV[1])
  if since < top and top - since <= tonumber(ARGV[2]) then
    local entries = redis.call('XRANGE', KEYS[1], string.format('%d', since + 1), '+', 'COUNT', ARGV[2])
    if #entries > 0 then out[3] = tonumber(string.match(entries[1][1], '^(%d+)')) end
    for i = 1, #entries do out[#out + 1] = entries[i][2][2] end
  end
end
return out`

interface Scripts {
  rtHistAppend: (stream: string, meta: string, head: string, size: number, ttl: number, metaTtl: number, epoch: string, channel: string, except: string, command: string) => Promise<[number, string]>
  rtHistReadBuffer: (stream: string, meta: string, since: string, max: number, epoch: string, metaTtl: number) => Promise<[Buffer, number, number, ...Buffer[]]>
}

/** How long a read may take before the join answers `unavailable`. */
const READ_TIMEOUT = 5000

/**
 * History in Redis, shared by every instance: per room a stream `<prefix>hist:{room}` (entry id = offset, field
 * `f` = the whole frame) and a hash `<prefix>hist:{room}:meta` (`e` epoch, `s` top). The `{room}` hash tag keeps
 * both in one cluster slot. A flush, an eviction of the meta or a restart without persistence loses the meta, and
 * the next append or read starts a new epoch.
 */
export class RedisHistoryStore implements HistoryStore {
  private readonly redis: (Redis | Cluster) & Scripts

  /** Bytes of appends sent and not yet answered: past `maxPending`, appends fail at once (a stalled Redis). */
  private pending = 0

  constructor (redis: Redis | Cluster, private readonly prefix: string, private readonly channelOf: (room: string) => string,
    private readonly subscribed: (room: string) => Promise<void>, private readonly maxPending = 16 * 1024 * 1024,
    private readonly publishCommand: 'PUBLISH' | 'SPUBLISH' = 'PUBLISH') {
    redis.defineCommand('rtHistAppend', { numberOfKeys: 2, lua: APPEND })
    redis.defineCommand('rtHistRead', { numberOfKeys: 2, lua: READ })
    this.redis = redis as (Redis | Cluster) & Scripts
  }

  private keys (room: string): [string, string] {
    const stream = `${this.prefix}hist:{${room}}`
    return [stream, `${stream}:meta`]
  }

  async append (room: string, policy: HistoryPolicy, head: string, except?: string): Promise<Appended> {
    if (this.redis.status !== 'ready') throw new Error('redis history: Redis is not connected')
    const size = head.length
    if (this.pending + size > this.maxPending) throw new Error(`redis history: Redis has not answered ${this.pending} bytes of appends`)
    const [stream, meta] = this.keys(room)
    this.pending += size
    try {
      const [offset, epoch] = await this.redis.rtHistAppend(stream, meta, head, policy.size, policy.ttl, policy.metaTtl, newEpoch(), this.channelOf(room), except ?? '', this.publishCommand)
      return { epoch, offset, frame: Buffer.from(`${head}${offset}}`) }
    } finally {
      this.pending -= size
    }
  }

  async read (room: string, policy: HistoryPolicy, since: number | undefined): Promise<HistoryRead> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => { reject(new Error('redis history: read timed out')) }, READ_TIMEOUT)
    })
    try {
      return await Promise.race([this.readNow(room, policy, since), timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  private async readNow (room: string, policy: HistoryPolicy, since: number | undefined): Promise<HistoryRead> {
    if (this.redis.status !== 'ready') throw new Error('redis history: Redis is not connected')
    // A first local member reads only once the subscription is in place: nothing published after the read is missed.
    await this.subscribed(room)
    if (this.redis.status !== 'ready') throw new Error('redis history: Redis is not connected')
    const [stream, meta] = this.keys(room)
    const [epoch, top, first, ...entries] = await this.redis.rtHistReadBuffer(stream, meta, since === undefined ? '' : String(since),
      policy.maxRecover, newEpoch(), policy.metaTtl)
    return { epoch: epoch.toString(), top: Number(top), first: entries.length > 0 ? Number(first) : (since ?? top) + 1, entries }
  }

  close (): void {}
}
