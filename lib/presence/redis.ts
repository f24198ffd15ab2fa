import { randomBytes, randomUUID } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import { DeadlineError, withDeadline } from '../deadline.js'
import { hashTag } from '../redis-tag.js'
import { BEAT, CLAIM, ENTER, KEEP, LEAVE, RENEW, SYNC, UPDATE } from './redis-scripts.js'
import type { EnterResult, PresenceHost, PresenceSnapshot, PresenceStore } from './store.js'

interface Scripts {
  rtPrEnter: (hash: string, inst: string, key: string, data: string, max: number, channel: string, command: string, epoch: string) => Promise<number>
  rtPrUpdate: (hash: string, inst: string, key: string, data: string, channel: string, command: string, epoch: string) => Promise<number>
  rtPrLeave: (hash: string, inst: string, key: string, channel: string, command: string, emptyTtl: number, epoch: string) => Promise<number>
  rtPrSync: (hash: string, inst: string, channel: string, command: string, emptyTtl: number, epoch: string, reaping: '1' | '0', ...pairs: string[]) => Promise<number>
  rtPrBeat: (instances: string, reaping: string, inst: string, ttl: number, mode: 'start' | 'beat' | 'grace', keep: number) => Promise<number>
  rtPrClaim: (instances: string, reaping: string, ttl: number, keep: number) => Promise<string[]>
  rtPrRenew: (reaping: string, inst: string, ttl: number) => Promise<number>
  rtPrKeep: (key: string, ms: number) => Promise<number>
}

/** How long an emptied room's hash (its version) is kept, and what an instance left behind lives at most. */
const DAY = 24 * 60 * 60 * 1000
/** Rooms per step of a reaper, a repair or a shutdown: their scripts go out together, then the event loop breathes. */
export const BATCH = 100

const epoch = (): string => randomBytes(6).toString('base64url')
const breathe = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

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
 *   <prefix>pr-inst:{pr}     ZSET instance → deadline (Redis clock + ttl), renewed every ttl/3; expires a day after
 *                            the last deadline (emptied by the last ZREM of a shutdown without grace)
 *   <prefix>pr-reap:{pr}     ZSET instances being reaped → when another reaper may take over; same TTL
 *   <prefix>pr-rooms:{inst}  SET rooms where the instance holds keys (the last leave of a room removes it); TTL a day,
 *                            renewed by each beat; deleted by the reaper or a shutdown without grace
 *
 * Three loops, none waiting behind another: the heartbeat renews this instance's deadline every ttl/3; the repair
 * (after a failed call, an outage, being taken for dead) makes Redis hold exactly this instance's keys, room by room
 * through the host's room queues; the reaper (every ttl/3) releases the keys of a claimed dead instance in batches
 * of `BATCH` rooms, yielding between them and renewing its claim, so its members leave once, within ttl + ttl/3
 * (plus the batches). Every call has a deadline (a stalled Redis is a failed call). An instance whose renewal finds
 * itself gone was taken for dead (cut off from Redis): it takes a new id and puts its members back.
 */
export class RedisPresenceStore implements PresenceStore {
  readonly contiguous = true
  private readonly redis: (Redis | Cluster) & Scripts
  private instance = randomUUID()
  /**
   * Ids this instance had before it was taken for dead: markers it may have written under one after the reaper
   * passed (a repair racing the reap) are released by the next repair, once the new id holds the keys.
   */
  private readonly retired = new Set<string>()
  private host: PresenceHost | undefined
  private beatTimer: NodeJS.Timeout | undefined
  private reapTimer: NodeJS.Timeout | undefined
  /** A change failed (Redis away): the repair makes Redis hold exactly this instance's keys again. */
  private dirty = false
  private beating = false
  private repairing = false
  private reapingNow = false
  private closed = false
  private readonly instances: string
  private readonly reaping: string
  /** The deadline of one Redis call (or one batch of them). */
  readonly callTimeout: number

  constructor (private readonly w: RedisPresenceWiring) {
    const r = w.redis
    r.defineCommand('rtPrEnter', { numberOfKeys: 1, lua: ENTER })
    r.defineCommand('rtPrUpdate', { numberOfKeys: 1, lua: UPDATE })
    r.defineCommand('rtPrLeave', { numberOfKeys: 1, lua: LEAVE })
    r.defineCommand('rtPrSync', { numberOfKeys: 1, lua: SYNC })
    r.defineCommand('rtPrBeat', { numberOfKeys: 2, lua: BEAT })
    r.defineCommand('rtPrClaim', { numberOfKeys: 2, lua: CLAIM })
    r.defineCommand('rtPrRenew', { numberOfKeys: 1, lua: RENEW })
    r.defineCommand('rtPrKeep', { numberOfKeys: 1, lua: KEEP })
    this.redis = r as (Redis | Cluster) & Scripts
    this.instances = `${w.prefix}pr-inst:{pr}`
    this.reaping = `${w.prefix}pr-reap:{pr}`
    this.callTimeout = presenceCallTimeout(w.ttl)
  }

  /** This instance's id in the instances set (a new one after it was reaped). */
  get id (): string {
    return this.instance
  }

  async start (host: PresenceHost): Promise<void> {
    this.host = host
    await this.bounded(this.redis.rtPrBeat(this.instances, this.reaping, this.instance, this.w.ttl, 'start', DAY), 'register')
    const every = Math.max(1, Math.floor(this.w.ttl / 3))
    this.beatTimer = setInterval(() => { this.beat().catch(() => {}) }, every)
    this.reapTimer = setInterval(() => { this.reap().catch(() => {}) }, every)
    this.beatTimer.unref()
    this.reapTimer.unref()
    // What instances gone before this one left (a crash, a shutdown's grace run out while no instance was up) is
    // released at once, not a third of the ttl later: an instance restarted and closed again soon reaps them too.
    this.reap().catch(() => {})
  }

  async enter (room: string, key: string, data: string, maxMembers: number): Promise<EnterResult> {
    let abandoned = false
    // Past its deadline the caller has gone on (the key may have left since): an enter sent now would land after
    // that leave and stay for good; after a shutdown began, its SADD would make the instance's room set again with
    // no expiry. What a late enter owed is the repair's, which the failure scheduled.
    const giveUp = (): void => { if (abandoned || this.closed) throw new Error('presence enter: abandoned (deadline or shutdown), not sent') }
    return await this.guard(async () => {
      await this.w.subscribed(room)
      giveUp()
      await this.redis.sadd(this.roomsOf(this.instance), room)
      giveUp()
      const ok = await this.redis.rtPrEnter(this.hash(room), this.instance, key, data, maxMembers, this.w.channelOf(room), this.w.publishCommand, epoch())
      return ok === 1 ? 'ok' : 'full'
    }, 'enter', () => { abandoned = true })
  }

  async update (room: string, key: string, data: string): Promise<void> {
    await this.guard(async () => {
      await this.redis.rtPrUpdate(this.hash(room), this.instance, key, data, this.w.channelOf(room), this.w.publishCommand, epoch())
    }, 'update')
  }

  async leave (room: string, key: string, last = false): Promise<void> {
    let abandoned = false
    await this.guard(async () => {
      await this.redis.rtPrLeave(this.hash(room), this.instance, key, this.w.channelOf(room), this.w.publishCommand, DAY, epoch())
      // Past its deadline a key may have entered the room again since: the room stays in this instance's set (the
      // reaper's list) and the repair releases it if nobody is left, never a late SREM under a new member.
      if (last && !abandoned) await this.redis.srem(this.roomsOf(this.instance), room)
    }, 'leave', () => { abandoned = true })
  }

  async sync (room: string, members: ReadonlyMap<string, string>): Promise<void> {
    await this.guard(async () => { await this.syncNow(room, members) }, 'sync')
  }

  async read (room: string): Promise<PresenceSnapshot> {
    return await this.guard(async () => {
      await this.w.subscribed(room)
      const fields = await this.redis.hgetall(this.hash(room))
      const members = new Map<string, string>()
      for (const [field, value] of Object.entries(fields)) if (field.startsWith('m:')) members.set(field.slice(2), value)
      return { v: Number(fields.v ?? 0), epoch: fields.e, members }
    }, 'read')
  }

  async count (room: string): Promise<number> {
    return await this.guard(async () => Math.max(0, Number(await this.redis.hget(this.hash(room), 'n') ?? 0)), 'count')
  }

  /** A diff from the room's channel (`\x03` + body), every instance's, this one's included. */
  received (room: string, body: string): void {
    const m = /^\{"v":(\d+)(?:,"epoch":"([^"\\]*)")?/.exec(body)
    if (m !== null) this.host?.diff(room, Number(m[1]), body, m[2])
  }

  /** The subscriber is back after an outage: diffs may be lost, and this instance's own changes may have failed. */
  reconnected (): void {
    this.dirty = true
    this.repair()
  }

  async shutdown (grace: number): Promise<void> {
    this.stop()
    const mine = this.roomsOf(this.instance)
    if (grace > 0) {
      // The entries stay until the deadline; then another instance's reaper releases what no one took over. Should
      // no instance be left to do it, every key of this instance expires a day after the grace.
      await this.bounded(this.redis.rtPrBeat(this.instances, this.reaping, this.instance, grace, 'grace', DAY), 'shutdown')
      await this.bounded(this.redis.pexpire(mine, grace + DAY), 'shutdown')
      // The set's rooms and this instance's own (a set lost with Redis data may lack some it holds).
      const held = new Set(await this.bounded(this.redis.smembers(mine), 'shutdown'))
      for (const [room] of this.host?.local() ?? []) held.add(room)
      const rooms = [...held]
      for (let i = 0; i < rooms.length; i += BATCH) {
        await this.bounded(Promise.all(rooms.slice(i, i + BATCH).map(async (room) => await this.redis.rtPrKeep(this.hash(room), grace + DAY))), 'shutdown')
      }
      return
    }
    const rooms = new Set(await this.bounded(this.redis.smembers(mine), 'shutdown'))
    for (const [room] of this.host?.local() ?? []) rooms.add(room)
    const list = [...rooms]
    for (let i = 0; i < list.length; i += BATCH) {
      await this.bounded(Promise.all(list.slice(i, i + BATCH).map(async (room) => { await this.syncNow(room, new Map()) })), 'shutdown')
    }
    await this.bounded(this.redis.zrem(this.instances, this.instance), 'shutdown')
    await this.bounded(this.redis.del(mine), 'shutdown')
  }

  close (): void {
    this.stop()
  }

  /** Renews this instance's deadline (on its own timer: never behind a repair or a reap); a failure marks dirty. */
  async beat (): Promise<void> {
    if (this.beating || this.closed || this.host === undefined) return
    this.beating = true
    try {
      await this.renew('heartbeat')
      await this.bounded(this.redis.pexpire(this.roomsOf(this.instance), this.w.ttl + DAY), 'heartbeat')
    } catch (err) {
      this.dirty = true
      this.host.log.warn({ err }, 'presence: heartbeat failed')
    } finally {
      this.beating = false
    }
    if (this.dirty) this.repair()
  }

  /**
   * Renews the deadline; when the instance finds itself gone (taken for dead while cut off: its old entries are, or
   * are being, released), it comes back under a new id, and the repair puts its members back.
   */
  private async renew (what: string): Promise<void> {
    const host = this.host as PresenceHost
    const id = this.instance
    const alive = await this.bounded(this.redis.rtPrBeat(this.instances, this.reaping, id, this.w.ttl, 'beat', DAY), what)
    // A renewal racing this one (the heartbeat and a repair) already moved to a new id.
    if (alive !== 0 || this.instance !== id) return
    this.retired.add(id)
    this.instance = randomUUID()
    await this.bounded(this.redis.rtPrBeat(this.instances, this.reaping, this.instance, this.w.ttl, 'start', DAY), what)
    this.dirty = true
    host.log.warn({ instance: this.instance }, 'presence: this instance was taken for dead (cut off from Redis); its members are put back')
  }

  /**
   * Makes Redis hold exactly this instance's keys (through the host's room queues), then sends snapshots again. It
   * renews the deadline first, so it never writes under an id the reaper took; markers written under a retired id
   * (a repair that raced the reap) are released after the new id holds the keys, so nobody sees a leave and a join.
   */
  private repair (): void {
    const host = this.host
    if (this.repairing || this.closed || host === undefined) return
    this.repairing = true
    const run = async (): Promise<void> => {
      while (this.dirty && !this.closed) {
        this.dirty = false
        try {
          await this.renew('repair')
          const stored = await this.bounded(this.redis.smembers(this.roomsOf(this.instance)), 'repair')
          await host.repair(stored)
          await this.releaseRetired()
          host.resync()
        } catch (err) {
          this.dirty = true
          host.log.warn({ err }, 'presence: re-sync failed (retried at the next heartbeat)')
          return
        }
      }
    }
    run().finally(() => { this.repairing = false }).catch(() => {})
  }

  /** Releases what retired ids of this instance still hold: in the rooms their sets list and this instance's own. */
  private async releaseRetired (): Promise<void> {
    for (const old of [...this.retired]) {
      const rooms = new Set<string>(await this.bounded(this.redis.smembers(this.roomsOf(old)), 'repair'))
      for (const [room] of this.host?.local() ?? []) rooms.add(room)
      const list = [...rooms]
      for (let i = 0; i < list.length; i += BATCH) {
        await this.bounded(Promise.all(list.slice(i, i + BATCH).map(async (room) =>
          await this.redis.rtPrSync(this.hash(room), old, this.w.channelOf(room), this.w.publishCommand, DAY, epoch(), '1'))), 'repair')
        await breathe()
      }
      await this.bounded(this.redis.del(this.roomsOf(old)), 'repair')
      this.retired.delete(old)
    }
  }

  /** Claims dead instances and releases their keys, a batch of rooms at a time. */
  async reap (): Promise<void> {
    if (this.reapingNow || this.closed || this.host === undefined) return
    this.reapingNow = true
    try {
      const claimed = await this.bounded(this.redis.rtPrClaim(this.instances, this.reaping, this.w.ttl, DAY), 'reaper')
      for (const dead of claimed) await this.reapOne(dead)
    } catch (err) {
      this.host.log.warn({ err }, 'presence: reaping failed (retried)')
    } finally {
      this.reapingNow = false
    }
  }

  private async reapOne (dead: string): Promise<void> {
    const rooms = this.roomsOf(dead)
    for (;;) {
      if (this.closed) return
      const batch = await this.bounded(this.redis.srandmember(rooms, BATCH), 'reaper') as unknown as string[]
      if (batch.length === 0) break
      await this.bounded(Promise.all(batch.map(async (room) => await this.redis.rtPrSync(this.hash(room), dead, this.w.channelOf(room), this.w.publishCommand, DAY, epoch(), '1'))), 'reaper')
      await this.bounded(this.redis.srem(rooms, ...batch), 'reaper')
      await this.bounded(this.redis.rtPrRenew(this.reaping, dead, this.w.ttl), 'reaper')
      await breathe()
    }
    await this.bounded(this.redis.del(rooms), 'reaper')
    await this.bounded(this.redis.zrem(this.reaping, dead), 'reaper')
  }

  private async syncNow (room: string, members: ReadonlyMap<string, string>): Promise<void> {
    const pairs: string[] = []
    for (const [key, data] of members) pairs.push(key, data)
    if (members.size > 0) await this.redis.sadd(this.roomsOf(this.instance), room)
    await this.redis.rtPrSync(this.hash(room), this.instance, this.w.channelOf(room), this.w.publishCommand, DAY, epoch(), '0', ...pairs)
    if (members.size === 0) await this.redis.srem(this.roomsOf(this.instance), room)
  }

  private stop (): void {
    this.closed = true
    clearInterval(this.beatTimer)
    clearInterval(this.reapTimer)
    this.beatTimer = undefined
    this.reapTimer = undefined
  }

  /** A call of this instance's keys: bounded, and a failure (a timeout included) marks the store for repair. */
  /** A change bounded by the call deadline; a failure marks the instance for repair. `onLate`: the deadline passed. */
  private async guard<T> (change: () => Promise<T>, what: string, onLate?: () => void): Promise<T> {
    try {
      return await this.bounded(change(), what)
    } catch (err) {
      this.dirty = true
      if (err instanceof DeadlineError) onLate?.()
      throw err
    }
  }

  private async bounded<T> (promise: Promise<T>, what: string): Promise<T> {
    return await withDeadline(promise, this.callTimeout, `presence ${what}`)
  }

  private hash (room: string): string {
    return `${this.w.prefix}pr:${hashTag(room)}`
  }

  private roomsOf (instance: string): string {
    return `${this.w.prefix}pr-rooms:${hashTag(instance)}`
  }
}

/** The deadline of one presence store call: a third of ttl, between 1 and 10 seconds. */
export function presenceCallTimeout (ttl: number): number {
  return Math.max(1000, Math.min(Math.floor(ttl / 3), 10_000))
}
