/** Where the client stands in a history room: the stream's epoch and the last offset it delivered. */
export interface RoomPosition {
  epoch: string
  offset: number
}

/** The client's `recovery` event, one for every join that resumed from a position. */
export interface RecoveryEvent {
  room: string
  recovered: boolean
  /** Events replayed (they follow through the usual listeners), when recovered. */
  missed?: number
  /**
   * Why not: `trimmed`, `expired`, `epoch`, `limit`, `invalid`, `gap` or `unavailable` (the server's), or
   * `forgotten` (the client dropped the room's position: over 256 rooms, or resumed on connections that stayed
   * open 30 s in all without joining it, and now the room is joined again). Reload the room.
   */
  reason?: string
}

interface Entry extends RoomPosition {
  /** When the current connection's `rt.resume` carried it; cleared by the next `rt.position` of the room. */
  resumedAt: number | undefined
  /** Connected time (ms) of earlier connections whose `rt.resume` carried it and that never joined the room. */
  waited: number
  /** The store did not answer the room's join (`offset: null`, `unavailable`): the next numbered event is the position. */
  suspended: boolean
}

const MAX_ROOMS = 256
/**
 * A position sent in `rt.resume` on connections that stayed open this long in all (the server's resumeWindow)
 * without joining the room is forgotten. Time offline does not count: a long outage forgets nothing.
 */
const STALE_AFTER = 30_000
const MAX_EPOCH_LENGTH = 16
/** Rooms whose position was dropped, kept (names only, the oldest dropped first) to say so when one is joined again. */
const MAX_FORGOTTEN = 1024

/** An offset as the server sends it: an integer from 0 to 2^53 - 1 (anything else is ignored). */
export function isOffset (value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0
}

/**
 * The positions of the client's history rooms (at most 256, least recently used dropped), from `rt.position`
 * frames and from every numbered event. They go back to the server in `rt.resume` after a reconnect, and they
 * drop the replay's overlap: an offset at or below the position was delivered already.
 */
export class Positions {
  private readonly rooms = new Map<string, Entry>()
  private readonly forgotten = new Set<string>()

  constructor (private readonly staleAfter = STALE_AFTER) {}

  get (room: string): RoomPosition | undefined {
    const entry = this.rooms.get(room)
    return entry === undefined ? undefined : { epoch: entry.epoch, offset: entry.offset }
  }

  set (room: string, position: RoomPosition): void {
    if (typeof position?.epoch !== 'string' || position.epoch === '' || position.epoch.length > MAX_EPOCH_LENGTH ||
      !Number.isSafeInteger(position.offset) || position.offset < 0) {
      throw new TypeError('a position is { epoch: string (1-16 characters), offset: integer >= 0 }')
    }
    this.forgotten.delete(room)
    this.put(room, fresh(position.epoch, position.offset))
  }

  /**
   * An `rt.position` frame's data: updates the room, or forgets it on a leave (`offset: null` without recovery);
   * returns the `recovery` event to emit, if any. An `unavailable` answer (`offset: null`) keeps the position: the
   * next numbered event or `rt.position` replaces it. A join of a room whose position the client dropped, answered
   * without recovery, is reported as `forgotten`. A malformed frame (an offset that is no integer ≥ 0) is ignored.
   */
  position (data: unknown): RecoveryEvent | undefined {
    const { room, epoch, offset, recovery } = (data ?? {}) as { room?: unknown, epoch?: unknown, offset?: unknown, recovery?: { recovered?: unknown, missed?: unknown, reason?: unknown } }
    if (typeof room !== 'string') return undefined
    const told = typeof recovery === 'object' && recovery !== null
    const wasForgotten = this.forgotten.delete(room)
    if (offset === null) {
      const entry = this.rooms.get(room)
      if (!told) this.rooms.delete(room)
      else if (entry !== undefined) Object.assign(entry, { suspended: true, resumedAt: undefined, waited: 0 })
    } else if (typeof epoch === 'string' && epoch !== '' && epoch.length <= MAX_EPOCH_LENGTH && isOffset(offset)) {
      this.put(room, fresh(epoch, offset))
    } else {
      if (wasForgotten) this.forgotten.add(room)
      return undefined
    }
    if (!told) return wasForgotten && offset !== null ? { room, recovered: false, reason: 'forgotten' } : undefined
    if (recovery.recovered === true) return { room, recovered: true, missed: isOffset(recovery.missed) ? recovery.missed : 0 }
    return { room, recovered: false, reason: typeof recovery.reason === 'string' ? recovery.reason : 'unknown' }
  }

  /**
   * A numbered event: false when it was delivered already (drop it); true to deliver, after which it is the
   * position. A hole (which the server should never leave) is reported as a `gap` through `onGap`.
   */
  accept (room: string, offset: number, onGap: (event: RecoveryEvent) => void): boolean {
    const entry = this.rooms.get(room)
    if (entry === undefined) return true
    if (offset <= entry.offset) return false
    // After `unavailable` (already reported) the hole up to the first live event is known: no `gap` for it.
    if (offset > entry.offset + 1 && !entry.suspended) onGap({ room, recovered: false, reason: 'gap' })
    entry.offset = offset
    entry.suspended = false
    return true
  }

  /**
   * The `rt.resume` frame for a new connection, or undefined with no positions; forgets those resumed on
   * connections that stayed open `staleAfter` ms in all without joining the room.
   */
  resumeFrame (now: number): string | undefined {
    const rooms: Record<string, RoomPosition> = {}
    let any = false
    this.closed(now)
    for (const [room, entry] of this.rooms) {
      if (entry.waited > this.staleAfter) {
        this.forget(room)
        continue
      }
      entry.resumedAt = now
      rooms[room] = { epoch: entry.epoch, offset: entry.offset }
      any = true
    }
    return any ? JSON.stringify({ type: 'rt.resume', data: { rooms } }) : undefined
  }

  /** The connection closed at `now`: the time it was open counts against the positions it resumed and did not join. */
  closed (now: number): void {
    for (const entry of this.rooms.values()) {
      if (entry.resumedAt === undefined) continue
      entry.waited += Math.max(0, now - entry.resumedAt)
      entry.resumedAt = undefined
    }
  }

  /** One room's `rt.resume` (after `setPosition` on an open connection). */
  resumeOne (room: string): string | undefined {
    const entry = this.rooms.get(room)
    return entry === undefined ? undefined : JSON.stringify({ type: 'rt.resume', data: { rooms: { [room]: { epoch: entry.epoch, offset: entry.offset } } } })
  }

  private put (room: string, entry: Entry): void {
    this.rooms.delete(room)
    this.rooms.set(room, entry)
    if (this.rooms.size > MAX_ROOMS) this.forget(this.rooms.keys().next().value as string)
  }

  /** Drops a room's position, remembering that it was known. */
  private forget (room: string): void {
    this.rooms.delete(room)
    this.forgotten.delete(room)
    this.forgotten.add(room)
    if (this.forgotten.size > MAX_FORGOTTEN) this.forgotten.delete(this.forgotten.values().next().value as string)
  }
}

function fresh (epoch: string, offset: number): Entry {
  return { epoch, offset, resumedAt: undefined, waited: 0, suspended: false }
}
