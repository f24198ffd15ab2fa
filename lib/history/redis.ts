import type { Cluster, Redis } from 'ioredis'
import { newEpoch } from './memory.js'
import type { HistoryPolicy } from './options.js'
import type { Appended, HistoryRead, HistoryStore } from './store.js'
import { hashTag } from '../redis-tag.js'

/**
 * The meta's epoch, made anew when the stream may have lost writes. Redis replicates asynchronously: a promoted
 * replica (a failover) or a restart may lack the last appends, and numbering on from its older top would hand out
 * offsets members already hold, under the same epoch. The meta keeps the replication id of the Redis that wrote
 * it; another id means another history, so a new epoch (members recover with `reason: 'epoch'`). ARGV[n] is the
 * epoch to start with.
 */
const EPOCH = (n: number): string => `
local rid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
local m = redis.call('HMGET', KEYS[2], 'e', 's', 'r')
local e = m[1]
if e and m[3] and m[3] ~= rid then
  e = nil
  redis.call('DEL', KEYS[1], KEYS[2])
end
if not e then e = ARGV[${n}]; redis.call('HSET', KEYS[2], 'e', e, 'r', rid) elseif not m[3] then redis.call('HSET', KEYS[2], 'r', rid) end
`

/**
 * KEYS: stream, meta. ARGV: head, size, ttl ms, meta ttl ms, new epoch, channel, except, publish command (PUBLISH,
 * or SPUBLISH for sharded pub/sub on a cluster: the room's channel shares the keys' slot through the `{room}` tag),
 * the publisher's time (ms since the epoch, for the broker lag).
 * One atomic step numbers, stores and publishes, so offset order is publish order on every instance. Offsets are
 * the stream's own entry ids (`N-0`), trimmed exactly (MAXLEN without `~`: "size = N" holds at the boundary).
 * The message is `\x04<epoch>:<offset>:<except's length in bytes>:<except><frame>` when the except holds a `|` or
 * a `:` (`decodeNumbered`, in lib/broker/redis-codec.ts: the except is counted, not delimited, so no string of the
 * app's can end it early), else the previous `\x02<epoch>:<offset>:<except>:<time>|<frame>`, which instances not yet
 * upgraded in a rolling deploy still read (connection ids, UUIDs, hold neither; those instances ignore the time, a
 * fourth field they never split off). The first format has no room for the time: those few frames are not timed.
 */
const APPEND = `${EPOCH(5)}
local top = redis.call('HINCRBY', KEYS[2], 's', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if top == 1 then redis.call('DEL', KEYS[1]) end
local n = string.format('%d', top)
local frame = ARGV[1] .. n .. '}'
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], n .. '-0', 'f', frame)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if string.find(ARGV[7], '[|:]') then
  redis.call(ARGV[8], ARGV[6], '\\4' .. e .. ':' .. n .. ':' .. string.format('%d', string.len(ARGV[7])) .. ':' .. ARGV[7] .. frame)
else
  redis.call(ARGV[8], ARGV[6], '\\2' .. e .. ':' .. n .. ':' .. ARGV[7] .. ':' .. ARGV[9] .. '|' .. frame)
end
return { top, e }`

/**
 * KEYS: stream, meta. ARGV: since (or ''), max entries, new epoch, meta ttl ms. Returns { epoch, top, first,
 * frame… }; entries only when at most `max` were missed (never an unbounded range). A room read before its first
 * publish gets its epoch here, so a first join learns a stable one.
 */
const READ = `${EPOCH(3)}
local top = tonumber(redis.call('HGET', KEYS[2], 's')) or 0
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
  rtHistAppend: (stream: string, meta: string, head: string, size: number, ttl: number, metaTtl: number, epoch: string, channel: string, except: string, command: string, publishedAt: number) => Promise<[number, string]>
  rtHistReadBuffer: (stream: string, meta: string, since: string, max: number, epoch: string, metaTtl: number) => Promise<[Buffer, number, number, ...Buffer[]]>
}

/** How long a read may take before the join answers `unavailable`. */
const READ_TIMEOUT = 5000

/**
 * History in Redis, shared by every instance: per room a stream `<prefix>hist:{room}` (entry id = offset, field
 * `f` = the whole frame) and a hash `<prefix>hist:{room}:meta` (`e` epoch, `s` top). The `{room}` hash tag keeps
 * both in one cluster slot; the name is escaped in it (`hashTag`, lib/redis-tag.ts) so that any name does. A flush, an eviction of the meta or a restart without persistence loses the meta, and
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
    const stream = `${this.prefix}hist:${hashTag(room)}`
    return [stream, `${stream}:meta`]
  }

  async append (room: string, policy: HistoryPolicy, head: string, except?: string): Promise<Appended> {
    if (this.redis.status !== 'ready') throw new Error('redis history: Redis is not connected')
    const size = head.length
    if (this.pending + size > this.maxPending) throw new Error(`redis history: Redis has not answered ${this.pending} bytes of appends`)
    const [stream, meta] = this.keys(room)
    this.pending += size
    try {
      const [offset, epoch] = await this.redis.rtHistAppend(stream, meta, head, policy.size, policy.ttl, policy.metaTtl, newEpoch(), this.channelOf(room), except ?? '', this.publishCommand, Date.now())
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
    const read = async (): Promise<[Buffer, number, number, ...Buffer[]]> => await this.redis.rtHistReadBuffer(stream, meta,
      since === undefined ? '' : String(since), policy.maxRecover, newEpoch(), policy.metaTtl)
    let reply: [Buffer, number, number, ...Buffer[]] | undefined
    // A read changes nothing a second read would not (a first read only sets the epoch it returns), so one cut off
    // by a connection the cluster client was replacing is tried again; appends never are (they may have run).
    for (let attempt = 1; reply === undefined; attempt++) {
      try {
        reply = await read()
      } catch (err) {
        if (attempt >= 3 || (err as Error).message !== 'Connection is closed.' || this.redis.status !== 'ready') throw err
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt))
      }
    }
    const [epoch, top, first, ...entries] = reply
    return { epoch: epoch.toString(), top: Number(top), first: entries.length > 0 ? Number(first) : (since ?? top) + 1, entries }
  }

  close (): void {}
}
