import type { Connection } from '../connection.js'
import { textFrame } from '../protocol/frame.js'
import { bump, type Counters } from '../stats.js'
import type { HistoryPolicy, ResolvedHistory } from './options.js'
import { decideRecovery, encodePosition, parseResume, validPosition, type JoinPosition, type Recovery } from './recovery.js'
import { eventHead, type Appended, type HistoryRead, type HistoryStore, type Position } from './store.js'
import { Cursors, type StreamMessage } from './cursor.js'

/** A live frame held for a connection while its join reads the store. */
interface Held {
  epoch: string
  offset: number
  frame: Buffer
}

/**
 * A connection between its join and live delivery: first its frames are held (`buffer`) while the store is read;
 * then, until the instance's cursor passes what the join sent (`floor`), frames at or below it are in flight from
 * pub/sub and already replayed, so they are skipped for this connection.
 */
interface Sync {
  buffer: Held[] | undefined
  epoch: string
  floor: number
}

/** What the history needs of the registry. */
export interface HistoryHost {
  members: (room: string) => ReadonlySet<Connection<any, any>> | undefined
  counters: Counters
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
 * With a synchronous store (memory) the whole join runs in one go, so nothing is ever held.
 */
export class RoomHistory {
  /** rt.resume positions by connection, until `resumeWindow` passes or the room is joined. */
  private readonly pending = new WeakMap<Connection<any, any>, { expires: number, rooms: Map<string, Position> }>()
  /** Per room, the connections whose join is reading the store, with the live frames held for them. */
  private readonly syncing = new Map<string, Map<Connection<any, any>, Sync>>()
  /** A shared store's frames come back through the broker: this instance's last offset per room mends what pub/sub lost. */
  private readonly cursors = new Cursors({
    deliver: (room, m) => { this.deliver(room, m.epoch, m.offset, m.frame, m.except) },
    notify: (room, epoch, offset, reason) => { this.notify(room, epoch, offset, reason) },
    read: async (room, since) => {
      const policy = this.policy(room)
      if (policy === undefined) throw new Error(`room "${room}" keeps no history here`)
      return await this.store.read(room, policy, since)
    }
  })

  constructor (readonly options: ResolvedHistory, readonly store: HistoryStore, private readonly host: HistoryHost) {}

  /** A numbered frame from a shared store's subscription (every instance's publishes, this one's included). */
  received (room: string, message: StreamMessage): void {
    this.cursors.received(room, message)
  }

  /** The subscription came back after an outage: read what it lost. */
  resync (): void {
    this.cursors.resync()
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
      appended.catch(() => { this.host.counters.brokerFailures++ })
      return this.host.members(room)?.size ?? 0
    }
    this.cursors.advance(room, appended.epoch, appended.offset)
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
        return { epoch, offset }
      } catch (err) {
        this.host.counters.brokerFailures++
        throw err
      }
    }
    this.cursors.advance(room, appended.epoch, appended.offset)
    this.deliver(room, appended.epoch, appended.offset, appended.frame, except)
    return { epoch: appended.epoch, offset: appended.offset }
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
    const wire = textFrame(frame)
    const held = this.syncing.get(room)
    let sent = 0
    for (const conn of members) {
      if (conn.id === except) continue
      const sync = held?.get(conn)
      if (sync !== undefined) {
        if (sync.buffer !== undefined) {
          sync.buffer.push({ epoch, offset, frame })
          continue
        }
        if (epoch === sync.epoch && offset <= sync.floor) continue
        this.release(room, conn, sync)
      }
      if (conn.sendPrebuilt(frame, wire)) sent++
    }
    return sent
  }

  /** Keeps an `rt.resume`'s positions for `resumeWindow`; a later one adds to them (256 rooms at most). */
  resume (conn: Connection<any, any>, data: unknown): void {
    const rooms = parseResume(data)
    const pending = this.pending.get(conn)
    const expires = Date.now() + this.options.resumeWindow
    if (pending === undefined || Date.now() > pending.expires) {
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
    let read: HistoryRead | Promise<HistoryRead>
    try {
      read = this.store.read(room, policy, from?.offset)
    } catch {
      return Promise.resolve(this.unavailable(conn, room))
    }
    if (!isPromise(read)) {
      if (this.cursors.seed(room, read.epoch, read.top)) this.notify(room, read.epoch, read.top, 'epoch', conn)
      return Promise.resolve(this.finish(conn, room, policy, from, read, []))
    }
    let held = this.syncing.get(room)
    if (held === undefined) this.syncing.set(room, held = new Map())
    const sync: Sync = { buffer: [], epoch: '', floor: 0 }
    held.set(conn, sync)
    return read.then(
      (r) => {
        // Other local members learn of an epoch the read found first (a flushed Redis); this one is still held.
        if (this.cursors.seed(room, r.epoch, r.top)) this.notify(room, r.epoch, r.top, 'epoch')
        const buffer = sync.buffer ?? []
        sync.buffer = undefined
        const result = this.finish(conn, room, policy, from, r, buffer)
        const cursor = this.cursors.position(room)
        if (cursor !== undefined && cursor.epoch === r.epoch && cursor.last < result.offset) {
          sync.epoch = r.epoch
          sync.floor = result.offset
        } else {
          this.release(room, conn, sync)
        }
        return result
      },
      () => {
        this.release(room, conn, sync)
        return this.unavailable(conn, room)
      }
    )
  }

  /** A history room's member left: its client forgets the position (`rt.position` with `offset: null`). */
  left (conn: Connection<any, any>, room: string): void {
    const sync = this.syncing.get(room)?.get(conn)
    if (sync !== undefined) this.release(room, conn, sync)
    if (this.host.members(room) === undefined) this.cursors.forget(room)
    if (conn.isOpen) conn.sendText(encodePosition(room, undefined, null))
  }

  /** `rt.position` with a lost continuity to the room's members, except those whose join is still reading. */
  private notify (room: string, epoch: string, offset: number, reason: 'epoch' | 'gap', joining?: Connection<any, any>): void {
    const members = this.host.members(room)
    if (members === undefined) return
    const text = encodePosition(room, epoch, offset, { recovered: false, reason })
    const held = this.syncing.get(room)
    for (const conn of members) {
      if (conn === joining) continue
      const sync = held?.get(conn)
      if (sync?.buffer !== undefined) continue
      if (sync !== undefined) this.release(room, conn, sync)
      conn.sendText(text)
    }
  }

  private release (room: string, conn: Connection<any, any>, sync: Sync): void {
    const held = this.syncing.get(room)
    if (held === undefined || held.get(conn) !== sync) return
    held.delete(conn)
    if (held.size === 0) this.syncing.delete(room)
  }

  private takePending (conn: Connection<any, any>, room: string): Position | undefined {
    const pending = this.pending.get(conn)
    if (pending === undefined) return undefined
    if (Date.now() > pending.expires) {
      this.pending.delete(conn)
      return undefined
    }
    const position = pending.rooms.get(room)
    pending.rooms.delete(room)
    return position
  }

  private finish (conn: Connection<any, any>, room: string, policy: HistoryPolicy, from: Position | undefined, read: HistoryRead, buffer: Held[]): JoinPosition {
    let recovery: Recovery | undefined = from === undefined ? undefined : decideRecovery(from, read, policy)
    // Several rooms replayed in one tick share the connection's backlog: past half of it, the rest are `limit`.
    if (recovery?.recovered === true && recovery.missed > 0) {
      let bytes = 0
      for (const entry of read.entries) bytes += entry.length
      if (conn.socket.bufferedAmount + bytes > this.options.replayBudget) recovery = { recovered: false, reason: 'limit' }
    }
    const recovered = recovery?.recovered === true
    if (recovery !== undefined) bump(this.host.counters.recoveries, recovery.recovered ? 'recovered' : recovery.reason)
    let last = recovered ? (from as Position).offset : read.top
    const result: JoinPosition = { epoch: read.epoch, offset: read.top }
    if (recovery !== undefined) Object.assign(result, recovery)
    // Left (or closed) while reading: nothing to send.
    if (!conn.rooms.has(room) || !conn.isOpen) return result
    conn.sendText(encodePosition(room, read.epoch, last, recovery))
    if (recovered) {
      for (const entry of read.entries) conn.sendFrame(entry)
      last = read.top
    }
    for (const entry of buffer) {
      if (entry.epoch !== read.epoch || entry.offset <= last) continue
      if (entry.offset !== last + 1) conn.sendText(encodePosition(room, read.epoch, entry.offset - 1, { recovered: false, reason: 'gap' }))
      conn.sendFrame(entry.frame)
      last = entry.offset
    }
    result.offset = last
    return result
  }

  /** The store did not answer: the client learns its position is unknown, and live frames flow on. */
  private unavailable (conn: Connection<any, any>, room: string): JoinPosition {
    const recovery = { recovered: false, reason: 'unavailable' } as const
    bump(this.host.counters.recoveries, 'unavailable')
    if (conn.isOpen && conn.rooms.has(room)) conn.sendText(JSON.stringify({ type: 'rt.position', data: { room, offset: null, recovery } }))
    return { epoch: '', offset: 0, ...recovery }
  }
}
