import type { Connection } from '../connection.js'
import { textFrame } from '../protocol/frame.js'
import { envelopeType } from '../protocol/envelope.js'
import type { InstanceMeter } from '../meter.js'
import { bump, type Counters } from '../stats.js'
import type { HistoryPolicy, ResolvedHistory } from './options.js'
import { decideRecovery, encodePosition, parseResume, validPosition, type JoinPosition, type Recovery } from './recovery.js'
import { eventHead, type Appended, type HistoryRead, type HistoryStore, type Position } from './store.js'
import { RoomCursor, type StreamMessage } from './cursor.js'
import { RoomLives, type Life } from '../room-life.js'

/** A live frame held for a connection while its join reads the store. */
interface Held {
  epoch: string
  offset: number
  frame: Buffer
}

/**
 * A connection between its join and live delivery: first its frames are held (`buffer`) while the store is read;
 * then, until the instance's cursor passes what the join sent (`floor`), frames at or below it are in flight from
 * pub/sub and already replayed, so they are skipped for this connection. The object is also the join's identity: a
 * read that comes back for a sync no longer registered belongs to a join the connection left (and maybe made again).
 */
interface Sync {
  buffer: Held[] | undefined
  /** Bytes held; past the replay budget the frames are let go and the join answers `limit` past them. */
  bytes: number
  /** The highest offset held (kept counting once the buffer was let go). */
  top: number
  overflow: boolean
  epoch: string
  floor: number
}

/** One history room on this instance, for one life: its stream cursor and its joins in progress. */
interface HistoryRoom {
  cursor: RoomCursor
  syncing: Map<Connection<any, any>, Sync>
  /** Members whose join answered `unavailable`: they get a position once the store answers again. */
  positionless: Set<Connection<any, any>>
  /** The next try to read the room's position for them. */
  retry: NodeJS.Timeout | undefined
  attempts: number
}

/** While the store does not answer, members without a position are retried this often, this many times. */
const RETRY_MS = 1000
const MAX_RETRIES = 30

/** What the history needs of the registry. */
export interface HistoryHost {
  members: (room: string) => ReadonlySet<Connection<any, any>> | undefined
  counters: Counters
  /** The metrics counters, when the app asked for metrics. */
  meter: InstanceMeter | undefined
}

const MAX_PENDING = 256

function isPromise<T> (value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | null)?.then === 'function'
}

/**
 * History rooms on one instance: numbering fan-outs through the store, the `rt.resume` positions a connection
 * sent, and the join that answers `rt.position`, replays what was missed and only then lets live frames through.
 *
 *   join ─▶ (live frames held) ─▶ store.read ─▶ rt.position ─▶ replay (if recovered) ─▶ held frames past it ─▶ live
 *
 * With a synchronous store (memory) the whole join runs in one go, so nothing is ever held. Everything kept per
 * room lives in the room's life (lib/room-life.ts), from its first local member to its last: a read that comes
 * back after the room's life ended, or for a join its connection left, is dropped and re-creates nothing.
 */
export class RoomHistory {
  /** rt.resume positions by connection, until `resumeWindow` passes or the room is joined. */
  private readonly pending = new WeakMap<Connection<any, any>, { expires: number, rooms: Map<string, Position> }>()
  private readonly lives: RoomLives<HistoryRoom>

  constructor (readonly options: ResolvedHistory, readonly store: HistoryStore, private readonly host: HistoryHost) {
    this.lives = new RoomLives<HistoryRoom>((room) => this.open(room), (life) => {
      life.state.cursor.stop()
      clearTimeout(life.state.retry)
    })
  }

  /** A numbered frame from a shared store's subscription (every instance's publishes, this one's included). */
  received (room: string, message: StreamMessage): void {
    // No life: no local member any more (an unsubscribe still in flight); nothing is kept for the room.
    this.lives.get(room)?.state.cursor.received(message)
  }

  /** The subscription came back after an outage: read what it lost, and give members without a position one. */
  resync (): void {
    for (const life of this.lives) {
      life.state.cursor.resync()
      if (life.state.positionless.size > 0) this.settle(life, 0)
    }
  }

  /** Rooms with local members whose history state this instance keeps (for tests and stats). */
  get rooms (): number {
    return this.lives.size
  }

  /** Rooms whose `{ epoch, offset }` the store keeps in this process (the memory store; 0 for a shared one). */
  get metas (): number {
    return (this.store as { metas?: { rooms: number } }).metas?.rooms ?? 0
  }

  policy (room: string): HistoryPolicy | undefined {
    return this.options.policy(room)
  }

  /** `to(room).send()` of a history room: numbered and stored; returns the local members reached. */
  send (room: string, policy: HistoryPolicy, type: string, data: unknown, except: string | undefined): number {
    let appended: Appended | Promise<Appended>
    try {
      appended = this.store.append(room, policy, eventHead(type, data, room), except)
    } catch {
      this.host.counters.brokerFailures++
      return 0
    }
    if (isPromise(appended)) {
      // Delivered when it comes back through the broker's subscription, in offset order.
      appended.then(() => { this.published() }, () => { this.host.counters.brokerFailures++ })
      return this.host.members(room)?.size ?? 0
    }
    this.lives.get(room)?.state.cursor.advance(appended.epoch, appended.offset)
    return this.deliver(room, appended.epoch, appended.offset, appended.frame, except)
  }

  /** `to(room).publish()`: resolves with the event's position once stored; rejects when the store cannot take it. */
  async publish (room: string, policy: HistoryPolicy, type: string, data: unknown, except: string | undefined): Promise<Position> {
    let appended: Appended | Promise<Appended>
    try {
      appended = this.store.append(room, policy, eventHead(type, data, room), except)
    } catch (err) {
      this.host.counters.brokerFailures++
      throw err
    }
    if (isPromise(appended)) {
      try {
        const { epoch, offset } = await appended
        this.published()
        return { epoch, offset }
      } catch (err) {
        this.host.counters.brokerFailures++
        throw err
      }
    }
    this.lives.get(room)?.state.cursor.advance(appended.epoch, appended.offset)
    this.deliver(room, appended.epoch, appended.offset, appended.frame, except)
    return { epoch: appended.epoch, offset: appended.offset }
  }

  /**
   * A shared store's append also published the event to every instance (one atomic step in Redis): that is the
   * broker's publish of a history room, counted as the registry's publishes are.
   */
  private published (): void {
    const meter = this.host.meter
    if (meter !== undefined) meter.brokerPublishes++
  }

  /** The room's current `{ epoch, offset }` (read before loading a snapshot, then join with it as `since`). */
  async position (room: string, policy: HistoryPolicy): Promise<Position> {
    const read = await this.store.read(room, policy, undefined)
    return { epoch: read.epoch, offset: read.top }
  }

  /** Sends a numbered frame to the room's local members; those still joining get it after their replay. */
  deliver (room: string, epoch: string, offset: number, frame: Buffer, except: string | undefined): number {
    const members = this.host.members(room)
    if (members === undefined) return 0
    // Joins in progress are rare and short: without one, a member costs no lookup.
    const joining = this.lives.get(room)?.state.syncing
    const syncing = joining !== undefined && joining.size > 0 ? joining : undefined
    const wire = textFrame(frame)
    // For metrics, the event's type read once for every member (the frame is all a shared store hands back).
    const type = this.host.meter === undefined ? undefined : envelopeType(frame)
    let sent = 0
    for (const conn of members) {
      if (conn.id === except) continue
      const sync = syncing?.get(conn)
      if (sync !== undefined) {
        if (sync.buffer !== undefined || sync.overflow) {
          this.hold(sync, epoch, offset, frame)
          continue
        }
        if (epoch === sync.epoch && offset <= sync.floor) continue
        syncing?.delete(conn)
      }
      if (conn.sendPrebuilt(frame, wire, type)) sent++
    }
    return sent
  }

  /** Keeps an `rt.resume`'s positions for `resumeWindow`; a later one adds to them (256 rooms at most). */
  resume (conn: Connection<any, any>, data: unknown): void {
    const rooms = parseResume(data)
    const pending = this.pending.get(conn)
    const expires = performance.now() + this.options.resumeWindow
    if (pending === undefined || performance.now() > pending.expires) {
      this.pending.set(conn, { expires, rooms })
      return
    }
    pending.expires = expires
    for (const [room, position] of rooms) {
      if (pending.rooms.size >= MAX_PENDING && !pending.rooms.has(room)) break
      pending.rooms.set(room, position)
    }
  }

  /**
   * A connection was just indexed in a history room: answers `rt.position`, replays what it missed when it
   * resumes from a position (`since`, else its `rt.resume`), then lets live frames through. Never rejects.
   */
  join (conn: Connection<any, any>, room: string, policy: HistoryPolicy, since: unknown): Promise<JoinPosition> {
    const from = since === undefined ? this.takePending(conn, room) : validPosition(since)
    const life = this.lives.open(room)
    const { cursor, syncing } = life.state
    let read: HistoryRead | Promise<HistoryRead>
    try {
      read = this.store.read(room, policy, from?.offset)
    } catch {
      return Promise.resolve(this.unavailable(conn, room, []))
    }
    if (!isPromise(read)) {
      if (cursor.seed(read.epoch, read.top)) this.notify(life, read.epoch, read.top, 'epoch', conn)
      return Promise.resolve(this.finish(conn, room, policy, from, read, undefined))
    }
    const sync: Sync = { buffer: [], bytes: 0, top: 0, overflow: false, epoch: '', floor: 0 }
    syncing.set(conn, sync)
    // The join is still this connection's, in this room's life: else its answer is dropped (it left, and maybe came back).
    const current = (): boolean => life.live && syncing.get(conn) === sync
    return read.then(
      (r) => {
        if (!current()) return { epoch: r.epoch, offset: r.top }
        // Other local members learn of an epoch the read found first (a flushed Redis); this one is still held.
        if (cursor.seed(r.epoch, r.top)) this.notify(life, r.epoch, r.top, 'epoch')
        if (life.state.positionless.size > 0) this.givePositions(life)
        const result = this.finish(conn, room, policy, from, r, sync)
        sync.buffer = undefined
        sync.overflow = false
        const position = cursor.position
        if (position !== undefined && position.epoch === r.epoch && position.last < result.offset) {
          sync.epoch = r.epoch
          sync.floor = result.offset
        } else {
          syncing.delete(conn)
        }
        return result
      },
      () => {
        if (!current()) return { epoch: '', offset: 0 }
        syncing.delete(conn)
        const result = this.unavailable(conn, room, sync.buffer ?? [])
        life.state.positionless.add(conn)
        this.settle(life, RETRY_MS)
        return result
      }
    )
  }

  /** A history room's member left: its client forgets the position (`rt.position` with `offset: null`). */
  left (conn: Connection<any, any>, room: string): void {
    const life = this.lives.get(room)
    if (life !== undefined) {
      life.state.syncing.delete(conn)
      life.state.positionless.delete(conn)
      if (this.host.members(room) === undefined) this.lives.end(room, life)
    }
    if (conn.isOpen) conn.sendProtocol(encodePosition(room, undefined, null), 'rt.position')
  }

  private open (room: string): HistoryRoom {
    const syncing = new Map<Connection<any, any>, Sync>()
    const cursor = new RoomCursor({
      deliver: (m) => { this.deliver(room, m.epoch, m.offset, m.frame, m.except) },
      notify: (epoch, offset, reason) => {
        const life = this.lives.get(room)
        if (life !== undefined && life.state.cursor === cursor) this.notify(life, epoch, offset, reason)
      },
      read: async (since) => {
        const policy = this.policy(room)
        if (policy === undefined) throw new Error(`room "${room}" keeps no history here`)
        return await this.store.read(room, policy, since)
      }
    })
    return { cursor, syncing, positionless: new Set(), retry: undefined, attempts: 0 }
  }

  /**
   * Reads the room's position for the members whose join answered `unavailable` (after `delay`, then every second
   * for about half a minute while the store does not answer): without it the instance would run the room with no
   * cursor (no duplicate dropped, no hole mended) and those clients with no position to recover from.
   */
  private settle (life: Life<HistoryRoom>, delay: number): void {
    const state = life.state
    if (!life.live) return
    clearTimeout(state.retry)
    state.retry = setTimeout(() => {
      state.retry = undefined
      const policy = this.policy(life.room)
      if (!life.live || state.positionless.size === 0 || policy === undefined) return
      const again = (): void => { if (++state.attempts < MAX_RETRIES) this.settle(life, RETRY_MS) }
      let read: HistoryRead | Promise<HistoryRead>
      try {
        read = this.store.read(life.room, policy, undefined)
      } catch {
        return again()
      }
      Promise.resolve(read).then((r) => {
        if (!life.live) return
        state.attempts = 0
        if (state.cursor.seed(r.epoch, r.top)) this.notify(life, r.epoch, r.top, 'epoch')
        this.givePositions(life)
      }, again)
    }, delay)
    state.retry.unref()
  }

  /** Members that had no position get the room's: from here on they are followed; `unavailable` says they may have missed events. */
  private givePositions (life: Life<HistoryRoom>): void {
    const position = life.state.cursor.position
    if (position === undefined) return
    const text = encodePosition(life.room, position.epoch, position.last, { recovered: false, reason: 'unavailable' })
    for (const conn of life.state.positionless) {
      if (life.state.syncing.has(conn)) continue
      life.state.positionless.delete(conn)
      if (conn.isOpen && conn.inRoom(life.room)) conn.sendProtocol(text, 'rt.position')
    }
  }

  /** A live frame for a connection whose join is still reading: held, up to the replay budget. */
  private hold (sync: Sync, epoch: string, offset: number, frame: Buffer): void {
    if (epoch === sync.epoch || sync.epoch === '') sync.top = Math.max(sync.top, offset)
    if (sync.overflow) return
    sync.bytes += frame.length
    if (sync.bytes > this.options.replayBudget) {
      // A busy room and a slow read: the connection's memory stays bounded, and its join will say `limit`.
      sync.overflow = true
      sync.buffer = undefined
      return
    }
    sync.buffer?.push({ epoch, offset, frame })
  }

  /** `rt.position` with a lost continuity to the room's members, except those whose join is still reading. */
  private notify (life: Life<HistoryRoom>, epoch: string, offset: number, reason: 'epoch' | 'gap', joining?: Connection<any, any>): void {
    const members = this.host.members(life.room)
    if (members === undefined) return
    const text = encodePosition(life.room, epoch, offset, { recovered: false, reason })
    const syncing = life.state.syncing
    for (const conn of members) {
      if (conn === joining) continue
      const sync = syncing.get(conn)
      if (sync !== undefined && (sync.buffer !== undefined || sync.overflow)) continue
      if (sync !== undefined) syncing.delete(conn)
      conn.sendProtocol(text, 'rt.position')
    }
  }

  private takePending (conn: Connection<any, any>, room: string): Position | undefined {
    const pending = this.pending.get(conn)
    if (pending === undefined) return undefined
    if (performance.now() > pending.expires) {
      this.pending.delete(conn)
      return undefined
    }
    const position = pending.rooms.get(room)
    pending.rooms.delete(room)
    return position
  }

  /**
   * Answers the join: `rt.position`, the replay when it recovers, then the live frames held meanwhile. The replay
   * and the held frames together stay within the replay budget (half the backlog limit), so the join itself can
   * never trip the slow-consumer close: a replay that does not fit is `limit`, and so are held frames that did not.
   */
  private finish (conn: Connection<any, any>, room: string, policy: HistoryPolicy, from: Position | undefined, read: HistoryRead, sync: Sync | undefined): JoinPosition {
    const result: JoinPosition = { epoch: read.epoch, offset: read.top }
    // Left (or closed) while reading: nothing to send, nothing to count.
    if (!conn.inRoom(room) || !conn.isOpen) return result
    const held: Held[] = []
    let heldBytes = 0
    for (const entry of sync?.buffer ?? []) {
      if (entry.epoch !== read.epoch || entry.offset <= read.top) continue
      held.push(entry)
      heldBytes += entry.frame.length
    }
    const backlog = conn.socket.bufferedAmount
    const overflow = sync?.overflow === true || backlog + heldBytes > this.options.replayBudget
    let recovery: Recovery | undefined = from === undefined ? undefined : decideRecovery(from, read, policy)
    if (recovery?.recovered === true && recovery.missed > 0) {
      let bytes = 0
      for (const entry of read.entries) bytes += entry.length
      // Several rooms replayed in one tick share the connection's backlog: past half of it, the rest are `limit`.
      if (overflow || backlog + bytes + heldBytes > this.options.replayBudget) recovery = { recovered: false, reason: 'limit' }
    }
    if (recovery !== undefined) Object.assign(result, recovery)
    if (overflow) {
      // The live frames held past the top did not fit either: the member goes on from the last one, told `limit`.
      const top = Math.max(read.top, sync?.overflow === true && sync.top > 0 ? sync.top : 0, held.at(-1)?.offset ?? 0)
      const limit: Recovery = { recovered: false, reason: 'limit' }
      bump(this.host.counters.recoveries, 'limit')
      conn.sendProtocol(encodePosition(room, read.epoch, top, limit), 'rt.position')
      Object.assign(result, limit, { offset: top })
      return result
    }
    if (recovery !== undefined) bump(this.host.counters.recoveries, recovery.recovered ? 'recovered' : recovery.reason)
    const recovered = recovery?.recovered === true
    let last = recovered ? (from as Position).offset : read.top
    conn.sendProtocol(encodePosition(room, read.epoch, last, recovery), 'rt.position')
    if (recovered) {
      for (const entry of read.entries) conn.sendFrame(entry)
      last = read.top
    }
    for (const entry of held) {
      if (entry.offset <= last) continue
      if (entry.offset !== last + 1) conn.sendProtocol(encodePosition(room, read.epoch, entry.offset - 1, { recovered: false, reason: 'gap' }), 'rt.position')
      conn.sendFrame(entry.frame)
      last = entry.offset
    }
    result.offset = last
    return result
  }

  /** The store did not answer: the client learns its position is unknown, and live frames (held ones first) flow on. */
  private unavailable (conn: Connection<any, any>, room: string, held: Held[]): JoinPosition {
    const recovery = { recovered: false, reason: 'unavailable' } as const
    if (conn.isOpen && conn.inRoom(room)) {
      bump(this.host.counters.recoveries, 'unavailable')
      conn.sendProtocol(JSON.stringify({ type: 'rt.position', data: { room, offset: null, recovery } }), 'rt.position')
      for (const entry of held) conn.sendFrame(entry.frame)
    }
    return { epoch: '', offset: 0, ...recovery }
  }
}
