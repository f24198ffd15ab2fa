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
  /** Why not: `trimmed`, `expired`, `epoch`, `limit`, `invalid`, `gap` or `unavailable`. Reload the room. */
  reason?: string
}

interface Entry extends RoomPosition {
  /** When an `rt.resume` carried it; cleared by the next `rt.position` of the room. */
  resumedAt: number | undefined
}

const MAX_ROOMS = 256
/** A position sent in an `rt.resume` and not re-joined within this long is forgotten (the server's resumeWindow). */
const STALE_AFTER = 30_000
const MAX_EPOCH_LENGTH = 16

/**
 * The positions of the client's history rooms (at most 256, least recently used dropped), from `rt.position`
 * frames and from every numbered event. They go back to the server in `rt.resume` after a reconnect, and they
 * drop the replay's overlap: an offset at or below the position was delivered already.
 */
export class Positions {
  private readonly rooms = new Map<string, Entry>()

  get (room: string): RoomPosition | undefined {
    const entry = this.rooms.get(room)
    return entry === undefined ? undefined : { epoch: entry.epoch, offset: entry.offset }
  }

  set (room: string, position: RoomPosition): void {
    if (typeof position?.epoch !== 'string' || position.epoch === '' || position.epoch.length > MAX_EPOCH_LENGTH ||
      !Number.isSafeInteger(position.offset) || position.offset < 0) {
      throw new TypeError('a position is { epoch: string (1-16 characters), offset: integer >= 0 }')
    }
    this.put(room, { epoch: position.epoch, offset: position.offset, resumedAt: undefined })
  }

  /** An `rt.position` frame's data: updates or forgets the room; returns the `recovery` event to emit, if any. */
  position (data: unknown): RecoveryEvent | undefined {
    const { room, epoch, offset, recovery } = (data ?? {}) as { room?: unknown, epoch?: unknown, offset?: unknown, recovery?: { recovered?: unknown, missed?: unknown, reason?: unknown } }
    if (typeof room !== 'string') return undefined
    if (typeof epoch === 'string' && typeof offset === 'number') this.put(room, { epoch, offset, resumedAt: undefined })
    else this.rooms.delete(room)
    if (typeof recovery !== 'object' || recovery === null) return undefined
    if (recovery.recovered === true) return { room, recovered: true, missed: typeof recovery.missed === 'number' ? recovery.missed : 0 }
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
    if (offset > entry.offset + 1) onGap({ room, recovered: false, reason: 'gap' })
    entry.offset = offset
    return true
  }

  /** The `rt.resume` frame for a new connection, or undefined with no positions; forgets those resumed long ago. */
  resumeFrame (now: number): string | undefined {
    const rooms: Record<string, RoomPosition> = {}
    let any = false
    for (const [room, entry] of this.rooms) {
      if (entry.resumedAt !== undefined && now - entry.resumedAt > STALE_AFTER) {
        this.rooms.delete(room)
        continue
      }
      entry.resumedAt ??= now
      rooms[room] = { epoch: entry.epoch, offset: entry.offset }
      any = true
    }
    return any ? JSON.stringify({ type: 'rt.resume', data: { rooms } }) : undefined
  }

  /** One room's `rt.resume` (after `setPosition` on an open connection). */
  resumeOne (room: string): string | undefined {
    const entry = this.rooms.get(room)
    return entry === undefined ? undefined : JSON.stringify({ type: 'rt.resume', data: { rooms: { [room]: { epoch: entry.epoch, offset: entry.offset } } } })
  }

  private put (room: string, entry: Entry): void {
    this.rooms.delete(room)
    this.rooms.set(room, entry)
    if (this.rooms.size > MAX_ROOMS) this.rooms.delete(this.rooms.keys().next().value as string)
  }
}
