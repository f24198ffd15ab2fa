import type { Idempotency } from './idempotency/keyed.js'
import type { FastifyBaseLogger } from 'fastify'
import { CloseCode, closeLabel } from './protocol/codes.js'
import { encodeEvent } from './protocol/envelope.js'
import { textFrame } from './protocol/frame.js'
import type { Connection } from './connection.js'
import type { Broker, Delivery, Target } from './broker/types.js'
import { bump, createCounters, type Counters, type RealtimeStats } from './stats.js'
import type { AsyncApiDocument, AsyncApiOptions } from './asyncapi.js'
import { RT_ERR_ASYNCAPI_NOT_READY } from './errors.js'
import type { RoomHistory } from './history/rooms.js'
import type { Position } from './history/store.js'
import type { InstanceMeter } from './meter.js'
import type { StreamMessage } from './history/cursor.js'
import type { JoinOptions, JoinResult } from './connection.js'
import { RealtimeError, ErrorCode } from './protocol/codes.js'
import type { ConnectionPresence, PresenceHandle, PresenceOutcome, RoomPresence } from './presence/rooms.js'
import { fanoutChannel, traced, type FanoutTraceContext } from './tracing.js'

/** Who a fan-out skips: a connection or a connection id. */
export type Except = Connection<any, any> | string

/** Options of a fan-out. */
export interface SendOptions {
  /** A connection (or its id) that does not receive it (a replay after a reconnect does not know it any more). */
  except?: Except
  /** History rooms: not stored, replayed or numbered (a typing indicator). @default false */
  volatile?: boolean
}

/** A fan-out aimed at a room or a user. */
export interface FanOut {
  /** Sends `{ type, data }` to every member, here and (with a broker) on every instance; returns the local count. */
  send: (type: string, data?: unknown, options?: SendOptions) => number
  /**
   * History rooms: sends like `send` and resolves with the event's `{ epoch, offset }` once stored; rejects when
   * the history store is unavailable, or the room keeps no history.
   */
  publish: (type: string, data?: unknown, options?: { except?: Except }) => Promise<Position>
}

/** `app.realtime.history(room)`. */
export interface HistoryHandle {
  /** The room's `{ epoch, offset }` now: read it before loading a snapshot, then join with it as `since`. */
  position: () => Promise<Position>
}

/** `app.realtime`: every open connection of this instance, by id, user and room, and fan-out to them. */
export interface RealtimeRegistry {
  /** Every open connection of every route of this instance, by id. */
  readonly connections: ReadonlyMap<string, Connection<any, any>>
  /** A user's open connections on this instance (one per tab). */
  byUser: (userId: string) => Array<Connection<any, any>>
  /** The members of a room on this instance. */
  roomMembers: (room: string) => ReadonlySet<Connection<any, any>>
  to: (room: string) => FanOut
  toUser: (userId: string) => Omit<FanOut, 'publish'>
  broadcast: (type: string, data?: unknown, options?: { except?: Except }) => number
  /** A history room's position; rejects for a room without history. */
  history: (room: string) => HistoryHandle
  /** A presence room's member list and count across the cluster; throws for a room without presence. */
  presence: (room: string) => PresenceHandle
  /** Members of a room across the cluster (this instance alone with the in-process broker). */
  roomSize: (room: string) => Promise<number>
  /** Whether the user has a connection anywhere in the cluster. */
  online: (userId: string) => Promise<boolean>
  /** Counters and sizes; cheap enough to call every second. */
  stats: () => RealtimeStats
  /** The AsyncAPI 3.0.0 document of every realtime route of this instance; after `app.ready()`. */
  asyncapi: (options: AsyncApiOptions) => AsyncApiDocument
}

/** Adds `delta` to a count kept per key; a count that reaches 0 leaves the map. */
function adjust (counts: Map<string, number>, key: string, delta: number): void {
  const count = (counts.get(key) ?? 0) + delta
  if (count > 0) counts.set(key, count)
  else counts.delete(key)
}

function exceptId (except: Except | undefined): string | undefined {
  return except === undefined ? undefined : typeof except === 'string' ? except : except.id
}

/** Owns the indexes. Connections register on open and leave on every way out, through `remove`. */
export class Registry implements RealtimeRegistry {
  readonly connections = new Map<string, Connection<any, any>>()
  readonly counters: Counters = createCounters()
  /** Connections whose session expires. */
  readonly expiring = new Set<Connection<any, any>>()
  /** Connection slots reserved by handshakes in progress (see lib/route.ts), counted against maxConnections. */
  reserved = 0
  private readonly reservedByUser = new Map<string, number>()
  /** Open connections and reserved handshake slots by client address, only with `limits.maxConnectionsPerIp`. */
  readonly byIp = new Map<string, number>()
  /** Whether `byIp` is kept (set by the plugin from `limits.maxConnectionsPerIp`). */
  countIps = false
  /** The metrics counters, when the app asked for metrics. */
  meter: InstanceMeter | undefined
  closing = false
  /** Set by the plugin once the instance is ready (see lib/asyncapi-serve.ts). */
  asyncapi: (options: AsyncApiOptions) => AsyncApiDocument = () => { throw new RT_ERR_ASYNCAPI_NOT_READY() }
  private readonly users = new Map<string, Set<Connection<any, any>>>()
  /** Between `checkJoin` and `join` (one synchronous step of `conn.join`): the presence member checked. */
  private readonly joining = new Map<Connection<any, any>, { key: string, data: string | undefined } | undefined>()
  private readonly rooms = new Map<string, Set<Connection<any, any>>>()
  private readonly broker: Broker
  private readonly log: FastifyBaseLogger
  private readonly onCountChange: (size: number) => void
  private drained: (() => void) | undefined
  /** Set when the `history` option is: history rooms are numbered and recoverable. */
  roomHistory: RoomHistory | undefined = undefined
  /** Set when the `presence` option is: presence rooms keep a member list. */
  roomPresence: RoomPresence | undefined = undefined
  /** Idempotency keys (the `idempotency` option), when the broker keeps them. */
  idempotency: Idempotency | undefined = undefined

  constructor (broker: Broker, log: FastifyBaseLogger, onCountChange: (size: number) => void) {
    this.broker = broker
    this.log = log
    this.onCountChange = onCountChange
  }

  add (conn: Connection<any, any>): void {
    this.connections.set(conn.id, conn)
    if (this.countIps) this.countIp(conn.request.ip, 1)
    if (conn.userId !== undefined) this.index(this.users, 'user', conn.userId, conn)
    if (conn.expiresAt !== undefined) this.expiring.add(conn)
    this.onCountChange(this.connections.size)
  }

  /** Removes the connection from every index; safe to call twice. */
  remove (conn: Connection<any, any>, code: number): void {
    if (!this.connections.delete(conn.id)) return
    if (this.countIps) this.countIp(conn.request.ip, -1)
    conn.dispose()
    if (conn.userId !== undefined) this.unindex(this.users, 'user', conn.userId, conn)
    this.expiring.delete(conn)
    // A code the server chose (the app's own 4000s included) is the app's vocabulary; one a client chose is not.
    bump(this.counters.closes, conn.closeIntent === code ? String(code) : closeLabel(code))
    this.onCountChange(this.connections.size)
    if (this.connections.size === 0) this.drained?.()
  }

  checkJoin (conn: Connection<any, any>, room: string, options?: JoinOptions): void {
    const presence = this.roomPresence
    if (presence?.isPresenceRoom(room) === true) this.joining.set(conn, presence.member(conn, options?.presence))
  }

  join (conn: Connection<any, any>, room: string, options?: JoinOptions): Promise<JoinResult> | undefined {
    this.index(this.rooms, 'room', room, conn)
    let presence: Promise<PresenceOutcome> | undefined
    if (this.joining.has(conn)) {
      const member = this.joining.get(conn)
      this.joining.delete(conn)
      presence = (this.roomPresence as RoomPresence).join(conn, room, member)
    }
    const since = options?.since
    const policy = this.roomHistory?.policy(room)
    const position = policy === undefined ? undefined : (this.roomHistory as RoomHistory).join(conn, room, policy, since)
    if (presence === undefined) return position
    if (position === undefined) return presence.then((outcome) => ({ presence: outcome }))
    return Promise.all([position, presence]).then(([joined, outcome]) => ({ ...joined, presence: outcome }))
  }

  leave (conn: Connection<any, any>, room: string): void {
    this.unindex(this.rooms, 'room', room, conn)
    if (this.roomHistory?.policy(room) !== undefined) this.roomHistory.left(conn, room)
    if (this.roomPresence?.isPresenceRoom(room) === true) this.roomPresence.left(conn, room)
  }

  presence (room: string): PresenceHandle {
    const presence = this.roomPresence
    if (presence?.isPresenceRoom(room) !== true) throw new Error(`fastify-realtime: room "${room}" keeps no presence (see the presence option)`)
    return presence.handle(room)
  }

  /** `conn.presence(room)`. */
  connectionPresence (conn: Connection<any, any>, room: string): ConnectionPresence {
    const presence = this.roomPresence
    if (presence?.isPresenceRoom(room) !== true) throw new RealtimeError(ErrorCode.VALIDATION_FAILED, `presence: room "${room}" keeps no presence`)
    return { update: (data) => { presence.update(conn, room, data) } }
  }

  /** Rooms or users here, with their number of local connections (for a broker's presence keys). */
  * local (kind: 'room' | 'user'): Iterable<[string, number]> {
    for (const [name, set] of kind === 'room' ? this.rooms : this.users) yield [name, set.size]
  }

  /** Open connections (and reserved slots) of a client address. */
  countIp (ip: string, delta: number): void {
    adjust(this.byIp, ip, delta)
  }

  /** Slots reserved for the user by handshakes in progress. */
  reservedFor (userId: string): number {
    return this.reservedByUser.get(userId) ?? 0
  }

  reserveFor (userId: string, delta: number): void {
    adjust(this.reservedByUser, userId, delta)
  }

  userCount (userId: string): number {
    return this.users.get(userId)?.size ?? 0
  }

  byUser (userId: string): Array<Connection<any, any>> {
    const set = this.users.get(userId)
    return set === undefined ? [] : [...set]
  }

  roomMembers (room: string): ReadonlySet<Connection<any, any>> {
    return this.rooms.get(room) ?? new Set()
  }

  to (room: string): FanOut {
    return {
      send: (type, data, options) => {
        const policy = options?.volatile === true ? undefined : this.roomHistory?.policy(room)
        if (policy === undefined) return this.publish({ kind: 'room', name: room }, type, data, options?.except)
        // A history room's fan-out is numbered by its store, not published by the registry: counted here.
        if (this.meter !== undefined) bump(this.meter.fanouts, 'room')
        return (this.roomHistory as RoomHistory).send(room, policy, type, data, exceptId(options?.except))
      },
      publish: async (type, data, options) => {
        const policy = this.roomHistory?.policy(room)
        if (policy === undefined) throw new Error(`fastify-realtime: room "${room}" keeps no history (see the history option)`)
        if (this.meter !== undefined) bump(this.meter.fanouts, 'room')
        return await (this.roomHistory as RoomHistory).publish(room, policy, type, data, exceptId(options?.except))
      }
    }
  }

  history (room: string): HistoryHandle {
    return {
      position: async () => {
        const policy = this.roomHistory?.policy(room)
        if (policy === undefined) throw new Error(`fastify-realtime: room "${room}" keeps no history (see the history option)`)
        return await (this.roomHistory as RoomHistory).position(room, policy)
      }
    }
  }

  /** The room's local members (undefined when none). */
  members (room: string): ReadonlySet<Connection<any, any>> | undefined {
    return this.rooms.get(room)
  }

  toUser (userId: string): Omit<FanOut, 'publish'> {
    return { send: (type, data, options) => this.publish({ kind: 'user', name: userId }, type, data, options?.except) }
  }

  broadcast (type: string, data?: unknown, options?: { except?: Except }): number {
    return this.publish({ kind: 'all' }, type, data, options?.except)
  }

  async roomSize (room: string): Promise<number> {
    return this.broker.roomSize !== undefined ? await this.broker.roomSize(room) : this.rooms.get(room)?.size ?? 0
  }

  async online (userId: string): Promise<boolean> {
    return this.broker.online !== undefined ? await this.broker.online(userId) : this.users.has(userId)
  }

  stats (): RealtimeStats {
    const c = this.counters
    return {
      connections: this.connections.size,
      users: this.users.size,
      rooms: this.rooms.size,
      messagesIn: c.messagesIn,
      messagesOut: c.messagesOut,
      bytesIn: c.bytesIn,
      bytesOut: c.bytesOut,
      dropped: c.dropped,
      brokerFailures: c.brokerFailures,
      brokerCountFailures: c.brokerCountFailures,
      errors: { ...c.errors },
      closes: { ...c.closes },
      refused: { ...c.refused },
      diagnoses: { ...c.diagnoses },
      recoveries: { ...c.recoveries },
      presenceDiffs: c.presenceDiffs,
      roomStates: {
        history: this.roomHistory?.rooms ?? 0,
        presence: this.roomPresence?.size ?? 0,
        historyMetas: this.roomHistory?.metas ?? 0
      }
    }
  }

  /** Delivers a fan-out to this instance's members: the same bytes to each. */
  deliver (delivery: Delivery): number {
    const { target, frame, except, type } = delivery
    const members = target.kind === 'all'
      ? this.connections.values()
      : (target.kind === 'room' ? this.rooms : this.users).get(target.name)
    if (members === undefined) return 0
    const wire = textFrame(frame)
    let sent = 0
    for (const conn of members) {
      if (conn.id !== except && conn.sendPrebuilt(frame, wire, type)) sent++
    }
    return sent
  }

  /** A fan-out from another instance arrived (through the broker). */
  received (delivery: Delivery): void {
    if (this.meter !== undefined) this.observeLag(this.meter, delivery.publishedAt)
    this.deliver(delivery)
  }

  /**
   * A history room's numbered frame arrived through the broker's subscription: every instance's, this one's
   * included (its members get its own events from there too, in offset order).
   */
  receivedNumbered (room: string, message: StreamMessage): void {
    if (this.meter !== undefined) this.observeLag(this.meter, message.publishedAt)
    this.roomHistory?.received(room, message)
  }

  private observeLag (meter: InstanceMeter, publishedAt: number | undefined): void {
    // Wall clocks of two hosts: as exact as their synchronization (NTP keeps it within milliseconds).
    if (publishedAt !== undefined) meter.brokerLag.observe(Math.max(0, Date.now() - publishedAt) / 1000)
  }

  /**
   * Closes every connection with 1001, waits for the close handshakes up to `timeout` ms, then terminates what
   * is left and waits for those sockets to be gone. The broker is closed by the caller (lib/index.ts), within the
   * shutdown's bound.
   */
  async shutdown (timeout: number): Promise<void> {
    this.closing = true
    if (this.connections.size > 0) {
      const drained = new Promise<void>((resolve) => { this.drained = resolve })
      for (const conn of this.connections.values()) conn.close(CloseCode.GOING_AWAY)
      let timer: NodeJS.Timeout | undefined
      const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(resolve, timeout, true) })
      const late = await Promise.race([drained.then(() => false), timedOut])
      clearTimeout(timer)
      if (late === true) {
        this.log.warn({ open: this.connections.size }, 'realtime shutdown timed out; terminating the rest')
        for (const conn of this.connections.values()) conn.terminate()
        await drained
      }
    }
  }

  private publish (target: Target, type: string, data: unknown, except: Except | undefined): number {
    if (this.meter !== undefined) bump(this.meter.fanouts, target.kind)
    if (traced(fanoutChannel)) {
      const context: FanoutTraceContext = { target, type, except: exceptId(except) }
      return fanoutChannel.traceSync(this.fanOut, context, this, target, type, data, except)
    }
    return this.fanOut(target, type, data, except)
  }

  private fanOut (target: Target, type: string, data: unknown, except: Except | undefined): number {
    const delivery: Delivery = { target, frame: Buffer.from(encodeEvent(type, data)), except: exceptId(except), type }
    const sent = this.deliver(delivery)
    this.broker.publish(delivery)
    return sent
  }

  private index (map: Map<string, Set<Connection<any, any>>>, kind: 'room' | 'user', key: string, conn: Connection<any, any>): void {
    let set = map.get(key)
    if (set === undefined) {
      set = new Set()
      map.set(key, set)
    }
    set.add(conn)
    this.broker.membership(kind, key, set.size)
  }

  private unindex (map: Map<string, Set<Connection<any, any>>>, kind: 'room' | 'user', key: string, conn: Connection<any, any>): void {
    const set = map.get(key)
    if (set === undefined || !set.delete(conn)) return
    if (set.size === 0) map.delete(key)
    this.broker.membership(kind, key, set.size)
  }
}
