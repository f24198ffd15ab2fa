import { randomUUID } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import { BEAT, CLAIM, ENTER, LEAVE, SYNC, UPDATE } from './redis-scripts.js'
import type { EnterResult, PresenceHost, PresenceSnapshot, PresenceStore } from './store.js'

interface Scripts {
  rtPrEnter: (hash: string, inst: string, key: string, data: string, max: number, channel: string, command: string) => Promise<number>
  rtPrUpdate: (hash: string, inst: string, key: string, data: string, channel: string, command: string) => Promise<number>
  rtPrLeave: (hash: string, inst: string, key: string, channel: string, command: string, emptyTtl: number) => Promise<number>
  rtPrSync: (hash: string, inst: string, channel: string, command: string, emptyTtl: number, ...pairs: string[]) => Promise<number>
  rtPrBeat: (instances: string, inst: string, ttl: number, mode: 'start' | 'beat' | 'grace') => Promise<number>
  rtPrClaim: (instances: string, reaping: string, ttl: number) => Promise<string[]>
}

/** How long an emptied room's hash (its version) is kept. */
const EMPTY_TTL = 24 * 60 * 60 * 1000

/** Where the store reaches Redis: the broker's publisher, its channel names and its subscriptions. */
export interface RedisPresenceWiring {
  redis: Redis | Cluster
  prefix: string
  channelOf: (room: string) => string
  subscribed: (room: string) => Promise<void>
  publishCommand: 'PUBLISH' | 'SPUBLISH'
  ttl: number
}

/**
 * Presence in Redis, shared by every instance (see redis-scripts.ts for the room hash). Besides the rooms:
 *
 *   <prefix>pr-inst:{pr}     ZSET instance → deadline (Redis clock + ttl), renewed every ttl/3
 *   <prefix>pr-reap:{pr}     ZSET instances being reaped → when another reaper may take over
 *   <prefix>pr-rooms:{inst}  SET rooms where the instance holds keys
 *
 * Every instance runs the reaper every ttl/3: a claimed dead instance's keys are released room by room (a leave
 * for each key no other instance holds), so its members leave once, within ttl + ttl/3. An instance whose renewal
 * finds itself gone was taken for dead (cut off from Redis): it takes a new id and puts its members back.
 */
export class RedisPresenceStore implements PresenceStore {
  readonly contiguous = true
  private readonly redis: (Redis | Cluster) & Scripts
  private instance = randomUUID()
  private host: PresenceHost | undefined
  private timer: NodeJS.Timeout | undefined
  /** A change failed (Redis away): the next tick makes Redis hold exactly this instance's keys again. */
  private dirty = false
  private ticking = false
  private readonly instances: string
  private readonly reaping: string

  constructor (private readonly w: RedisPresenceWiring) {
    const r = w.redis
    r.defineCommand('rtPrEnter', { numberOfKeys: 1, lua: ENTER })
    r.defineCommand('rtPrUpdate', { numberOfKeys: 1, lua: UPDATE })
    r.defineCommand('rtPrLeave', { numberOfKeys: 1, lua: LEAVE })
    r.defineCommand('rtPrSync', { numberOfKeys: 1, lua: SYNC })
    r.defineCommand('rtPrBeat', { numberOfKeys: 1, lua: BEAT })
    r.defineCommand('rtPrClaim', { numberOfKeys: 2, lua: CLAIM })
    this.redis = r as (Redis | Cluster) & Scripts
    this.instances = `${w.prefix}pr-inst:{pr}`
    this.reaping = `${w.prefix}pr-reap:{pr}`
  }

  /** This instance's id in the instances set (a new one after it was reaped). */
  get id (): string {
    return this.instance
  }

  async start (host: PresenceHost): Promise<void> {
    this.host = host
    await this.redis.rtPrBeat(this.instances, this.instance, this.w.ttl, 'start')
    this.timer = setInterval(() => { this.tick().catch(() => {}) }, Math.max(1, Math.floor(this.w.ttl / 3)))
    this.timer.unref()
  }

  async enter (room: string, key: string, data: string, maxMembers: number): Promise<EnterResult> {
    await this.w.subscribed(room)
    return await this.guard(async () => {
      await this.redis.sadd(this.roomsOf(this.instance), room)
      const ok = await this.redis.rtPrEnter(this.hash(room), this.instance, key, data, maxMembers, this.w.channelOf(room), this.w.publishCommand)
      return ok === 1 ? 'ok' : 'full'
    })
  }

  async update (room: string, key: string, data: string): Promise<void> {
    await this.guard(async () => { await this.redis.rtPrUpdate(this.hash(room), this.instance, key, data, this.w.channelOf(room), this.w.publishCommand) })
  }

  async leave (room: string, key: string): Promise<void> {
    await this.guard(async () => { await this.redis.rtPrLeave(this.hash(room), this.instance, key, this.w.channelOf(room), this.w.publishCommand, EMPTY_TTL) })
  }

  async read (room: string): Promise<PresenceSnapshot> {
    await this.w.subscribed(room)
    const fields = await this.redis.hgetall(this.hash(room))
    const members = new Map<string, string>()
    for (const [field, value] of Object.entries(fields)) if (field.startsWith('m:')) members.set(field.slice(2), value)
    return { v: Number(fields.v ?? 0), members }
  }

  async count (room: string): Promise<number> {
    return Math.max(0, Number(await this.redis.hget(this.hash(room), 'n') ?? 0))
  }

  /** A diff from the room's channel (`\x03` + body), every instance's, this one's included. */
  received (room: string, body: string): void {
    const v = /^\{"v":(\d+)/.exec(body)
    if (v !== null) this.host?.diff(room, Number(v[1]), body)
  }

  /** The subscriber is back after an outage: diffs may be lost, and this instance's own changes may have failed. */
  reconnected (): void {
    this.dirty = true
    this.tick().catch(() => {})
  }

  async shutdown (grace: number): Promise<void> {
    clearInterval(this.timer)
    this.timer = undefined
    if (grace > 0) {
      // The entries stay until the deadline; then another instance's reaper releases what no one took over.
      await this.redis.rtPrBeat(this.instances, this.instance, grace, 'grace')
      return
    }
    for (const [room] of this.host?.local() ?? []) await this.sync(room, new Map())
    await this.redis.zrem(this.instances, this.instance)
    await this.redis.del(this.roomsOf(this.instance))
  }

  close (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** Renews this instance's deadline, puts back what an outage lost, and reaps dead instances. */
  async tick (): Promise<void> {
    if (this.ticking || this.host === undefined) return
    this.ticking = true
    try {
      const alive = await this.redis.rtPrBeat(this.instances, this.instance, this.w.ttl, 'beat')
      if (alive === 0) {
        // Taken for dead while cut off: its old entries are (being) released; it comes back as a new instance.
        this.instance = randomUUID()
        await this.redis.rtPrBeat(this.instances, this.instance, this.w.ttl, 'start')
        this.dirty = true
        this.host.log.warn({ instance: this.instance }, 'presence: this instance was taken for dead (cut off from Redis); its members are put back')
      }
      if (this.dirty) {
        this.dirty = false
        for (const [room, members] of this.host.local()) await this.sync(room, members)
        this.host.resync()
      }
      await this.reap()
    } catch (err) {
      this.dirty = true
      this.host.log.warn({ err }, 'presence: heartbeat failed')
    } finally {
      this.ticking = false
    }
  }

  private async reap (): Promise<void> {
    const claimed = await this.redis.rtPrClaim(this.instances, this.reaping, this.w.ttl)
    for (const dead of claimed) {
      const rooms = this.roomsOf(dead)
      for (const room of await this.redis.smembers(rooms)) {
        await this.redis.rtPrSync(this.hash(room), dead, this.w.channelOf(room), this.w.publishCommand, EMPTY_TTL)
      }
      await this.redis.del(rooms)
      await this.redis.zrem(this.reaping, dead)
    }
  }

  private async sync (room: string, members: Map<string, string>): Promise<void> {
    const pairs: string[] = []
    for (const [key, data] of members) pairs.push(key, data)
    if (members.size > 0) await this.redis.sadd(this.roomsOf(this.instance), room)
    else await this.redis.srem(this.roomsOf(this.instance), room)
    await this.redis.rtPrSync(this.hash(room), this.instance, this.w.channelOf(room), this.w.publishCommand, EMPTY_TTL, ...pairs)
  }

  private async guard<T> (change: () => Promise<T>): Promise<T> {
    try {
      return await change()
    } catch (err) {
      this.dirty = true
      throw err
    }
  }

  private hash (room: string): string {
    return `${this.w.prefix}pr:{${room}}`
  }

  private roomsOf (instance: string): string {
    return `${this.w.prefix}pr-rooms:{${instance}}`
  }
}
