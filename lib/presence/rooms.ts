import type { Connection } from '../connection.js'
import { ErrorCode, RealtimeError } from '../protocol/codes.js'
import { encodeError } from '../protocol/envelope.js'
import type { Counters } from '../stats.js'
import type { ResolvedPresence } from './options.js'
import { encodeDiff, encodeSnapshot, type PresenceHost, type PresenceStore } from './store.js'

/** `conn.join(room, { presence })`: the member's key and data, or `false` to watch the list without being in it. */
export interface PresenceJoinOptions {
  /** The member's key. @default the connection's `userId`, else its `id` */
  key?: string
  /** The member's data (JSON, at most `presence.maxDataBytes` bytes once encoded). @default null */
  data?: unknown
}

/** `conn.presence(room)`. */
export interface ConnectionPresence {
  /** Replaces the member's data (every connection of the key shares it); `update` fires when it changed. */
  update: (data: unknown) => void
}

/** `app.realtime.presence(room)`. */
export interface PresenceHandle {
  /** The room's members across the cluster: key → data. */
  list: () => Promise<Map<string, unknown>>
  /** The number of members across the cluster. */
  count: () => Promise<number>
}

/** A key held on this instance: its connections, its data, and the leave waiting for `leaveDelay`. */
interface LocalKey {
  conns: Set<Connection<any, any>>
  data: string
  /** The store holds it (or will, once it is reachable); false while refused by `maxMembers`. */
  entered: boolean
  timer: NodeJS.Timeout | undefined
}

/** What presence needs of the registry. */
export interface PresenceRegistry {
  members: (room: string) => ReadonlySet<Connection<any, any>> | undefined
  counters: Counters
}

/**
 * Presence rooms on one instance: the keys its connections hold, the calls to the store on a key's first local
 * connection and after its last (a closed connection's leave waits `leaveDelay`), and the wire: a snapshot after
 * each join, then the store's diffs. A joining connection's diffs are held until its snapshot is written, and those
 * at or below the snapshot's `v` are dropped, so no diff older than the list it got ever reaches it.
 *
 *   join ─▶ enter (first local connection of the key) ─▶ read ─▶ rt.presence ─▶ held diffs with v > snapshot ─▶ live diffs
 *   close ─▶ (last local connection) ─▶ leaveDelay ─▶ leave     (cancelled if the key joins again here)
 */
export class RoomPresence implements PresenceHost {
  private readonly rooms = new Map<string, Map<string, LocalKey>>()
  private readonly keys = new WeakMap<Connection<any, any>, Map<string, string>>()
  private readonly syncing = new Map<string, Map<Connection<any, any>, Array<[number, string]>>>()
  private readonly lastVersion = new Map<string, number>()
  /** Store calls of one room run one after the other, so a leave never overtakes the enter before it. */
  private readonly tails = new Map<string, Promise<void>>()
  private closing = false

  constructor (readonly options: ResolvedPresence, readonly store: PresenceStore, private readonly registry: PresenceRegistry,
    readonly log: PresenceHost['log']) {}

  isPresenceRoom (room: string): boolean {
    return this.options.isPresenceRoom(room)
  }

  /** Checks the join's presence options before the room is joined: throws `VALIDATION_FAILED`. */
  member (conn: Connection<any, any>, options: PresenceJoinOptions | false | undefined): { key: string, data: string | undefined } | undefined {
    if (options === false) return undefined
    const key = options?.key ?? conn.userId ?? conn.id
    if (typeof key !== 'string' || key === '' || key.length > 256) {
      throw new RealtimeError(ErrorCode.VALIDATION_FAILED, 'presence key: expected a string of 1-256 characters', [{ path: '/presence/key', message: 'must be a string of 1-256 characters' }])
    }
    return { key, data: options?.data === undefined ? undefined : this.encode(options.data) }
  }

  /** A connection was indexed in a presence room: enters its key if new here, then sends it the snapshot. */
  join (conn: Connection<any, any>, room: string, member: { key: string, data: string | undefined } | undefined): void {
    if (member !== undefined) this.hold(conn, room, member.key, member.data)
    if (!this.options.events) return
    let held = this.syncing.get(room)
    if (held === undefined) this.syncing.set(room, held = new Map())
    const buffer: Array<[number, string]> = []
    held.set(conn, buffer)
    this.enqueue(room, async () => {
      try {
        const snapshot = await this.store.read(room)
        if (held?.get(conn) !== buffer || !conn.isOpen) return
        conn.sendText(encodeSnapshot(room, snapshot))
        for (const [v, text] of buffer) if (v > snapshot.v) conn.sendText(text)
      } finally {
        if (held?.get(conn) === buffer) held.delete(conn)
        if (held?.size === 0 && this.syncing.get(room) === held) this.syncing.delete(room)
      }
    })
  }

  /** The connection left the room (or closed): the key leaves when it was its last local connection. */
  left (conn: Connection<any, any>, room: string): void {
    const held = this.syncing.get(room)
    if (held?.delete(conn) === true && held.size === 0) this.syncing.delete(room)
    if (this.registry.members(room) === undefined) this.lastVersion.delete(room)
    const keys = this.keys.get(conn)
    const key = keys?.get(room)
    if (key === undefined) return
    keys?.delete(room)
    const local = this.rooms.get(room)?.get(key)
    if (local === undefined || !local.conns.delete(conn) || local.conns.size > 0) return
    // An explicit leave is immediate; a closed connection's waits, in case the client comes back.
    if (conn.isOpen || this.options.leaveDelay === 0) return this.drop(room, key, local)
    // Shutting down: the store keeps the entry for shutdownGrace, for the client to come back on another instance.
    if (this.closing) return this.forget(room, key, local)
    local.timer = setTimeout(() => { this.drop(room, key, local) }, this.options.leaveDelay)
  }

  /** `conn.presence(room).update(data)`. */
  update (conn: Connection<any, any>, room: string, data: unknown): void {
    const key = this.keys.get(conn)?.get(room)
    if (key === undefined) throw new RealtimeError(ErrorCode.VALIDATION_FAILED, `presence: the connection is not a member of "${room}"`)
    const local = this.rooms.get(room)?.get(key) as LocalKey
    const text = this.encode(data)
    if (text === local.data) return
    local.data = text
    this.enqueue(room, async () => { if (local.entered) await this.store.update(room, key, text) })
  }

  handle (room: string): PresenceHandle {
    return {
      list: async () => {
        const snapshot = await this.store.read(room)
        const out = new Map<string, unknown>()
        for (const [key, data] of snapshot.members) out.set(key, JSON.parse(data))
        return out
      },
      count: async () => await this.store.count(room)
    }
  }

  /** A diff from the store: to the room's local members, held for those still waiting for their snapshot. */
  diff (room: string, v: number, body: string): void {
    const last = this.lastVersion.get(room)
    if (last !== undefined && v <= last) return
    this.lastVersion.set(room, v)
    this.registry.counters.presenceDiffs++
    if (!this.options.events) return
    const members = this.registry.members(room)
    if (members === undefined) return
    // A version skipped means a diff was lost on the way (a subscription that broke): the members get a fresh list.
    if (last !== undefined && v > last + 1 && this.store.contiguous === true) return this.resnapshot(room)
    const text = encodeDiff(room, body)
    const held = this.syncing.get(room)
    for (const conn of members) {
      const buffer = held?.get(conn)
      if (buffer !== undefined) buffer.push([v, text])
      else conn.sendText(text)
    }
  }

  /** The store may have lost diffs: every presence room's members get a new snapshot (the client reconciles). */
  resync (): void {
    for (const room of this.syncedRooms()) this.resnapshot(room)
  }

  /** Keys held here per room (those refused by `maxMembers` excepted), for the store to put back. */
  * local (): Iterable<[string, Map<string, string>]> {
    for (const [room, keys] of this.rooms) {
      const members = new Map<string, string>()
      for (const [key, local] of keys) if (local.entered) members.set(key, local.data)
      yield [room, members]
    }
  }

  /**
   * A graceful shutdown begins (before connections are closed): leaves already waiting go now, the store keeps the
   * remaining entries for `shutdownGrace`, and closing connections start no leave of their own.
   */
  async shutdown (): Promise<void> {
    this.closing = true
    for (const [room, keys] of this.rooms) {
      for (const [key, local] of keys) if (local.timer !== undefined) this.drop(room, key, local)
    }
    await Promise.all([...this.tails.values()])
    await this.store.shutdown(this.options.shutdownGrace)
  }

  private hold (conn: Connection<any, any>, room: string, key: string, data: string | undefined): void {
    let keys = this.keys.get(conn)
    if (keys === undefined) this.keys.set(conn, keys = new Map())
    keys.set(room, key)
    let roomKeys = this.rooms.get(room)
    if (roomKeys === undefined) this.rooms.set(room, roomKeys = new Map())
    const local = roomKeys.get(key)
    if (local === undefined) {
      const fresh: LocalKey = { conns: new Set([conn]), data: data ?? 'null', entered: false, timer: undefined }
      roomKeys.set(key, fresh)
      return this.enter(room, key, fresh)
    }
    clearTimeout(local.timer)
    local.timer = undefined
    local.conns.add(conn)
    if (!local.entered) return this.enter(room, key, local)
    if (data !== undefined && data !== local.data) {
      local.data = data
      this.enqueue(room, async () => { if (local.entered) await this.store.update(room, key, data) })
    }
  }

  private enter (room: string, key: string, local: LocalKey): void {
    this.enqueue(room, async () => {
      if (local.entered || local.conns.size === 0) return
      let result
      try {
        result = await this.store.enter(room, key, local.data, this.options.maxMembers)
      } catch (err) {
        // The store puts it there once it is reachable again (see `local`).
        local.entered = true
        throw err
      }
      if (result === 'ok') {
        local.entered = true
        return
      }
      const text = encodeError(undefined, ErrorCode.PRESENCE_FULL, `presence: "${room}" has ${this.options.maxMembers} members`, { room })
      for (const conn of local.conns) conn.sendText(text)
    })
  }

  /** The key's last local connection is gone for good: it leaves the store. */
  private drop (room: string, key: string, local: LocalKey): void {
    this.forget(room, key, local)
    this.enqueue(room, async () => { if (local.entered) await this.store.leave(room, key) })
  }

  private forget (room: string, key: string, local: LocalKey): void {
    clearTimeout(local.timer)
    local.timer = undefined
    const roomKeys = this.rooms.get(room)
    if (roomKeys?.get(key) !== local) return
    roomKeys.delete(key)
    if (roomKeys.size === 0) this.rooms.delete(room)
  }

  private resnapshot (room: string): void {
    const members = this.registry.members(room)
    if (members === undefined || !this.options.events) return
    this.enqueue(room, async () => {
      const snapshot = await this.store.read(room)
      const text = encodeSnapshot(room, snapshot)
      const held = this.syncing.get(room)
      for (const conn of this.registry.members(room) ?? []) if (held?.has(conn) !== true) conn.sendText(text)
    })
  }

  private * syncedRooms (): Iterable<string> {
    for (const room of new Set([...this.rooms.keys(), ...this.lastVersion.keys()])) yield room
  }

  private encode (data: unknown): string {
    let text: string | undefined
    try {
      text = JSON.stringify(data ?? null)
    } catch {}
    if (text === undefined) throw new RealtimeError(ErrorCode.VALIDATION_FAILED, 'presence data: not JSON', [{ path: '/presence/data', message: 'must be JSON' }])
    const bytes = Buffer.byteLength(text)
    if (bytes > this.options.maxDataBytes) {
      throw new RealtimeError(ErrorCode.VALIDATION_FAILED, `presence data: ${bytes} bytes, more than ${this.options.maxDataBytes}`,
        [{ path: '/presence/data', message: `must be at most ${this.options.maxDataBytes} bytes of JSON` }])
    }
    return text
  }

  private enqueue (room: string, task: () => Promise<void>): void {
    const previous = this.tails.get(room) ?? Promise.resolve()
    const next = previous.then(task).catch((err: unknown) => {
      this.log.warn({ err, room }, 'presence: the store failed')
    })
    this.tails.set(room, next)
    next.then(() => { if (this.tails.get(room) === next) this.tails.delete(room) }, () => {})
  }
}
