import { Listeners } from './listeners.js'
import { isOffset } from './positions.js'

/** A member of a presence room as the client's events carry it. */
export interface PresenceMember {
  key: string
  data: unknown
}

/** Events of `client.presence(room)`. */
export interface PresenceEvents {
  /** A key arrived (its first connection anywhere in the cluster). */
  join: PresenceMember
  /** A key is gone (its last connection, after the server's `leaveDelay`). */
  leave: PresenceMember
  /** A key's data changed. */
  update: PresenceMember
  /** A snapshot was applied (after each join of the room, and after a reconnect): `members` is complete. */
  sync: ReadonlyMap<string, unknown>
}

type Listener<K extends keyof PresenceEvents> = (data: PresenceEvents[K]) => void
type Entries = Record<string, { data?: unknown }>

function entries (value: unknown): Array<[string, unknown]> {
  if (value === null || typeof value !== 'object') return []
  return Object.entries(value as Entries).map(([key, entry]) => [key, entry?.data ?? null])
}

const same = (a: unknown, b: unknown): boolean => a === b || JSON.stringify(a) === JSON.stringify(b)

/**
 * One presence room as the client sees it: the members from the last `rt.presence` snapshot with the diffs after
 * it applied. A diff at or below the snapshot's version is one the snapshot already holds and is ignored. A later
 * snapshot (after a reconnect) is compared with what the client had, so the app sees only what changed meanwhile.
 *
 * Versions compare within an epoch (the server's room list was lost and started again when it changes): a
 * snapshot older than the view (same epoch, lower `v`) is ignored, one of a new epoch is always taken, and a diff
 * of another epoch than the view's waits for the snapshot that follows it (it is ignored). Frames without an epoch
 * (an older server) are taken as before.
 */
export class PresenceView {
  private readonly map = new Map<string, unknown>()
  private readonly listeners = new Listeners()
  private version: number | undefined
  private era: string | undefined

  constructor (readonly room: string) {}

  /** Key → data, read-only: the room's members as last synced. */
  get members (): ReadonlyMap<string, unknown> {
    return this.map
  }

  /** The version of the list, undefined before the first snapshot. */
  get v (): number | undefined {
    return this.version
  }

  /** The epoch of the list (versions compare within one), undefined before the first snapshot or from an older server. */
  get epoch (): string | undefined {
    return this.era
  }

  on<K extends keyof PresenceEvents> (type: K, listener: Listener<K>): this {
    this.listeners.add(type, listener)
    return this
  }

  off<K extends keyof PresenceEvents> (type: K, listener: Listener<K>): this {
    this.listeners.remove(type, listener)
    return this
  }

  /** @internal Whether the app listens to the view (then it is kept across a leave of the room). */
  get listened (): boolean {
    return this.listeners.size > 0
  }

  /** @internal The room was left: the list is forgotten (no events: the app left); the next join starts it again. */
  reset (): void {
    this.map.clear()
    this.version = this.era = undefined
  }

  /** @internal An `rt.presence` frame's data. */
  snapshot (v: number, members: unknown, epoch?: string): void {
    const first = this.version === undefined
    // Read before a diff the view already applied: it would take back what the diff brought.
    if (!first && epoch !== undefined && epoch === this.era && v < (this.version as number)) return
    this.version = v
    this.era = epoch
    const next = new Map(entries(members))
    if (first) {
      for (const [key, data] of next) this.map.set(key, data)
    } else {
      for (const [key, data] of [...this.map]) {
        if (!next.has(key)) {
          this.map.delete(key)
          this.emit('leave', { key, data })
        }
      }
      for (const [key, data] of next) this.put(key, data)
    }
    this.emit('sync', this.map)
  }

  /** @internal An `rt.presence.diff` frame's data. */
  diff (v: number, joins: unknown, leaves: unknown, updates: unknown, epoch?: string): void {
    if (this.version === undefined) return
    if (epoch !== undefined && this.era !== undefined && epoch !== this.era) return
    if (v <= this.version) return
    this.version = v
    if (epoch !== undefined) this.era = epoch
    for (const [key, data] of entries(joins)) this.put(key, data)
    if (Array.isArray(leaves)) {
      for (const key of leaves) {
        if (typeof key !== 'string' || !this.map.has(key)) continue
        const data = this.map.get(key)
        this.map.delete(key)
        this.emit('leave', { key, data })
      }
    }
    for (const [key, data] of entries(updates)) this.put(key, data)
  }

  private put (key: string, data: unknown): void {
    if (!this.map.has(key)) {
      this.map.set(key, data)
      return this.emit('join', { key, data })
    }
    if (same(this.map.get(key), data)) return
    this.map.set(key, data)
    this.emit('update', { key, data })
  }

  private emit<K extends keyof PresenceEvents> (type: K, data: PresenceEvents[K]): void {
    this.listeners.emit(type, data)
  }
}

/** The client's presence rooms, made on first use. */
export class PresenceViews {
  private readonly views = new Map<string, PresenceView>()

  get (room: string): PresenceView {
    let view = this.views.get(room)
    if (view === undefined) this.views.set(room, view = new PresenceView(room))
    return view
  }

  /** Rooms with a view. */
  get size (): number {
    return this.views.size
  }

  /**
   * @internal An `rt.presence`, `rt.presence.diff` or `rt.presence.left` frame's data; anything malformed (a `v`
   * that is no integer in [0, 2^53 - 1]) is ignored. A left room's view is dropped, or emptied while listened to.
   */
  receive (type: string, data: unknown): void {
    const d = data as { room?: unknown, v?: unknown, epoch?: unknown, members?: unknown, joins?: unknown, leaves?: unknown, updates?: unknown } | null
    if (type === 'rt.presence.left') {
      const view = typeof d?.room === 'string' ? this.views.get(d.room) : undefined
      view?.reset()
      if (view !== undefined && !view.listened) this.views.delete(view.room)
      return
    }
    if (typeof d?.room !== 'string' || !isOffset(d.v)) return
    const epoch = typeof d.epoch === 'string' ? d.epoch : undefined
    if (type === 'rt.presence') this.get(d.room).snapshot(d.v, d.members, epoch)
    else this.get(d.room).diff(d.v, d.joins, d.leaves, d.updates, epoch)
  }
}
