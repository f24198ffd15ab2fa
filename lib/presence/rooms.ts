import type { Connection } from '../connection.js'
import { settleWithin, withDeadline } from '../deadline.js'
import { ErrorCode, RealtimeError } from '../protocol/codes.js'
import { encodeError } from '../protocol/envelope.js'
import { RoomLives, type Life } from '../room-life.js'
import { bump, type Counters } from '../stats.js'
import type { ResolvedPresence } from './options.js'
import { encodeDiff, encodeSnapshot, type PresenceHost, type PresenceSnapshot, type PresenceStore } from './store.js'

/** `conn.join(room, { presence })`: the member's key and data, or `false` to watch the list without being in it. */
export interface PresenceJoinOptions {
  /** The member's key. @default the connection's `userId`, else its `id` */
  key?: string
  /** The member's data (JSON, at most `presence.maxDataBytes` bytes once encoded). @default null */
  data?: unknown
}

/**
 * A presence room's answer in what `conn.join()` resolves with: `member` (the store holds the key), `watching`
 * (`presence: false`), `full` (refused past `maxMembers`: the room is joined, the key is not in the list, and the
 * client also gets a `PRESENCE_FULL` error envelope), `unavailable` (the store did not answer in time: the key is
 * put there once it is reachable again), `left` (the connection left the room or closed before the store answered).
 */
export type PresenceOutcome = 'member' | 'watching' | 'full' | 'unavailable' | 'left'

const WATCHING: Promise<PresenceOutcome> = Promise.resolve('watching')

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
  /** The store holds it (or will, once it is reachable: the repair puts it back); false while refused by `maxMembers`. */
  entered: boolean
  /** Its leave is queued or under way: it stays here until the store confirmed it (then it is removed). */
  leaving: boolean
  timer: NodeJS.Timeout | undefined
}

/** Diffs held for a connection waiting for its snapshot: `[v, epoch, frame]`. */
type Held = Array<[number, string | undefined, string]>

/** Everything presence keeps of one room on this instance, for one life of the room (see lib/room-life.ts). */
interface RoomState {
  keys: Map<string, LocalKey>
  /** Connections waiting for a snapshot (a join, a resnapshot), with the diffs that came meanwhile. */
  syncing: Map<Connection<any, any>, Held>
  /**
   * The version of the snapshot each connection got, until a newer diff passes it: the snapshot is read on another
   * Redis connection than the diffs arrive on, so a diff it already holds can come after it.
   */
  sent: Map<Connection<any, any>, [number, string | undefined]>
  /** The epoch and version of the last diff passed on. */
  epoch: string | undefined
  last: number | undefined
  /** Store calls of the room run one after the other (an enter, its leave, a re-sync never overlap). */
  tail: Promise<void>
  queued: number
}

/** What presence needs of the registry. */
export interface PresenceRegistry {
  members: (room: string) => ReadonlySet<Connection<any, any>> | undefined
  counters: Counters
}

/** How long `shutdown()` waits at most when not told (the default of the `shutdown.timeout` option). */
export const PRESENCE_SHUTDOWN_TIMEOUT = 5000

/**
 * Presence rooms on one instance: the keys its connections hold, the calls to the store on a key's first local
 * connection and after its last (a closed connection's leave waits `leaveDelay`), and the wire: a snapshot after
 * each join, then the store's diffs. A connection waiting for a snapshot (its join, or a resnapshot after a lost
 * diff or a new epoch) has its diffs held until the snapshot is written, and those at or below the snapshot's `v`
 * (or of another epoch) are dropped, so no diff older than the list it got ever reaches it.
 *
 *   join ─▶ enter (first local connection of the key) ─▶ read ─▶ rt.presence ─▶ held diffs with v > snapshot ─▶ live diffs
 *   close ─▶ (last local connection) ─▶ leaveDelay ─▶ leave ─▶ confirmed ─▶ key gone here    (cancelled if it joins again)
 *
 * Each room has one life (lib/room-life.ts) from its first connection or key to the moment no connection, no key
 * and no store call is left; it owns the room's keys, waiting connections, epoch, version and store queue, and
 * every store call runs in it. The store is the truth: a key leaves the local view only once the store confirmed
 * its leave (a failed one is retried by the repair, which runs in the same queue).
 */
export class RoomPresence implements PresenceHost {
  private readonly lives = new RoomLives<RoomState>(() => ({ keys: new Map(), syncing: new Map(), sent: new Map(), epoch: undefined, last: undefined, tail: Promise.resolve(), queued: 0 }),
    (life) => { for (const local of life.state.keys.values()) clearTimeout(local.timer) })

  private readonly keys = new WeakMap<Connection<any, any>, Map<string, string>>()
  private closing = false
  /** The deadline of each store call. */
  private readonly callTimeout: number

  constructor (readonly options: ResolvedPresence, readonly store: PresenceStore, private readonly registry: PresenceRegistry,
    readonly log: PresenceHost['log']) {
    this.callTimeout = Math.max(1000, Math.min(Math.floor(options.ttl / 3), 10_000))
  }

  /** Rooms with a life here (0 once every member left and every leave was confirmed). */
  get size (): number {
    return this.lives.size
  }

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

  /**
   * A connection was indexed in a presence room: enters its key if new here, then sends it the snapshot. Resolves
   * with the outcome once the store answered (never rejects).
   */
  join (conn: Connection<any, any>, room: string, member: { key: string, data: string | undefined } | undefined): Promise<PresenceOutcome> {
    const life = this.lives.open(room)
    const outcome = member === undefined ? WATCHING : this.hold(life, conn, member.key, member.data)
    if (this.options.events) this.snapshotTo(life, [conn])
    return outcome
  }

  /**
   * The connection left the room (or closed): the key leaves when it was its last local connection; an open one is
   * told (`rt.presence.left`).
   */
  left (conn: Connection<any, any>, room: string): void {
    const life = this.lives.get(room)
    life?.state.syncing.delete(conn)
    life?.state.sent.delete(conn)
    const keys = this.keys.get(conn)
    const key = keys?.get(room)
    if (key !== undefined) {
      keys?.delete(room)
      const local = life?.state.keys.get(key)
      if (life !== undefined && local !== undefined && local.conns.delete(conn) && local.conns.size === 0) {
        // An explicit leave is immediate; a closed connection's waits, in case the client comes back.
        if (conn.isOpen || this.options.leaveDelay === 0) this.drop(life, key, local)
        // Shutting down: the store keeps the entry for shutdownGrace, for the client to come back on another instance.
        else if (this.closing) this.forget(life, key, local)
        else local.timer = setTimeout(() => { this.drop(life, key, local) }, this.options.leaveDelay)
      }
    }
    if (life !== undefined) this.settle(life)
    // An explicit leave: the client drops its view of the room (it cannot tell a leave of a room without history).
    if (conn.isOpen && this.options.events) conn.sendProtocol(JSON.stringify({ type: 'rt.presence.left', data: { room } }), 'rt.presence.left')
  }

  /** `conn.presence(room).update(data)`. */
  update (conn: Connection<any, any>, room: string, data: unknown): void {
    const key = this.keys.get(conn)?.get(room)
    const life = this.lives.get(room)
    const local = key === undefined ? undefined : life?.state.keys.get(key)
    if (key === undefined || life === undefined || local === undefined) throw new RealtimeError(ErrorCode.NOT_IN_ROOM, `presence: the connection is not a member of "${room}"`, { room })
    const text = this.encode(data)
    if (text === local.data) return
    local.data = text
    this.enqueue(life, async () => { if (local.entered) await this.call(this.store.update(room, key, text), 'update') })
  }

  handle (room: string): PresenceHandle {
    return {
      list: async () => {
        const snapshot = await this.call(this.store.read(room), 'read')
        const out = new Map<string, unknown>()
        for (const [key, data] of snapshot.members) out.set(key, JSON.parse(data))
        return out
      },
      count: async () => await this.call(this.store.count(room), 'count')
    }
  }

  /**
   * A diff from the store: to the room's local members, held for those still waiting for their snapshot. A diff of
   * a new epoch (the store lost the room's hash: versions restarted) resets the room's version, puts this
   * instance's keys back, and sends the members a fresh snapshot; so does a skipped version (a lost diff).
   */
  diff (room: string, v: number, body: string, epoch?: string): void {
    const life = this.lives.get(room)
    if (life === undefined) return
    const s = life.state
    const fresh = epoch !== undefined && s.epoch !== undefined && epoch !== s.epoch
    if (!fresh && s.last !== undefined && v <= s.last) return
    const gap = !fresh && s.last !== undefined && v > s.last + 1 && this.store.contiguous === true
    if (epoch !== undefined) s.epoch = epoch
    s.last = v
    this.registry.counters.presenceDiffs++
    if (fresh) this.resyncRoom(life).catch(() => {})
    if (!this.options.events) return
    const members = this.registry.members(room)
    if (members === undefined) return
    if (fresh || gap) return this.resnapshot(life)
    const text = encodeDiff(room, body)
    for (const conn of members) {
      const held = s.syncing.get(conn)
      if (held !== undefined) {
        held.push([v, epoch, text])
        continue
      }
      const sent = s.sent.get(conn)
      if (sent !== undefined) {
        if (v <= sent[0] && (epoch === undefined || sent[1] === undefined || epoch === sent[1])) continue
        s.sent.delete(conn)
      }
      conn.sendProtocol(text, 'rt.presence.diff')
    }
  }

  /** The store may have lost diffs: every presence room's members get a new snapshot (the client reconciles). */
  resync (): void {
    for (const life of [...this.lives]) this.resnapshot(life)
  }

  /** Keys held here per room (those refused by `maxMembers` and those leaving excepted). */
  * local (): Iterable<[string, Map<string, string>]> {
    for (const life of this.lives) yield [life.room, this.entered(life)]
  }

  async repair (stored: Iterable<string>): Promise<void> {
    const rooms = new Set(stored)
    for (const life of this.lives) rooms.add(life.room)
    const list = [...rooms]
    let failed = 0
    for (let i = 0; i < list.length; i += 100) {
      const done = await Promise.all(list.slice(i, i + 100).map(async (room) => await this.resyncRoom(this.lives.open(room))))
      failed += done.filter((ok) => !ok).length
    }
    if (failed > 0) throw new Error(`presence: ${failed} of ${list.length} rooms could not be re-synced`)
  }

  /**
   * A graceful shutdown begins (before connections are closed): leaves already waiting go now, the store keeps the
   * remaining entries for `shutdownGrace`, and closing connections start no leave of their own. Resolves within
   * `timeout` ms whatever the store does (a stalled Redis): what was not done by then is left to the TTLs and to
   * the other instances' reapers.
   */
  async shutdown (timeout = PRESENCE_SHUTDOWN_TIMEOUT): Promise<void> {
    const until = performance.now() + timeout
    this.closing = true
    for (const life of [...this.lives]) {
      for (const [key, local] of life.state.keys) if (local.timer !== undefined) this.drop(life, key, local)
    }
    await settleWithin(Promise.all([...this.lives].map(async (life) => { await life.state.tail })), Math.max(0, until - performance.now()))
    const done = await settleWithin(this.store.shutdown(this.options.shutdownGrace), Math.max(0, until - performance.now()))
    if (!done) this.log.warn({ timeout }, 'presence: the store did not finish its shutdown in time (its keys expire)')
  }

  private async hold (life: Life<RoomState>, conn: Connection<any, any>, key: string, data: string | undefined): Promise<PresenceOutcome> {
    let keys = this.keys.get(conn)
    if (keys === undefined) this.keys.set(conn, keys = new Map())
    keys.set(life.room, key)
    let local = life.state.keys.get(key)
    let outcome: PresenceOutcome = 'member'
    if (local === undefined) {
      local = { conns: new Set([conn]), data: data ?? 'null', entered: false, leaving: false, timer: undefined }
      life.state.keys.set(key, local)
      outcome = await this.enter(life, key, local)
    } else {
      clearTimeout(local.timer)
      local.timer = undefined
      local.conns.add(conn)
      // Back before its leave ran: the leave is skipped (or, when it is under way, followed by an enter).
      local.leaving = false
      if (!local.entered) {
        outcome = await this.enter(life, key, local)
      } else if (data !== undefined && data !== local.data) {
        local.data = data
        const held = local
        this.enqueue(life, async () => { if (held.entered) await this.call(this.store.update(life.room, key, data), 'update') })
      }
    }
    return local.conns.has(conn) ? outcome : 'left'
  }

  /** Enters the key in the store, in the room's queue: resolves with what the store said (never rejects). */
  private async enter (life: Life<RoomState>, key: string, local: LocalKey): Promise<PresenceOutcome> {
    const room = life.room
    let outcome: PresenceOutcome = 'left'
    const ok = await this.enqueue(life, async () => {
      if (local.entered) outcome = 'member'
      if (local.entered || local.leaving || local.conns.size === 0 || life.state.keys.get(key) !== local) return
      let result
      try {
        result = await this.call(this.store.enter(room, key, local.data, this.options.maxMembers), 'enter')
      } catch (err) {
        // The store puts it there once it is reachable again (the repair syncs entered keys).
        local.entered = true
        throw err
      }
      if (result === 'ok') {
        local.entered = true
        outcome = 'member'
        return
      }
      outcome = 'full'
      const text = encodeError(undefined, ErrorCode.PRESENCE_FULL, `presence: "${room}" has ${this.options.maxMembers} members`, { room })
      for (const conn of local.conns) {
        // Counted as the dispatcher counts its errors, once sent; it answers no message of the client's (type unknown).
        if (!conn.sendProtocol(text, 'error')) continue
        bump(this.registry.counters.errors, ErrorCode.PRESENCE_FULL)
        if (conn.meter !== undefined) bump(conn.meter.unknown.errors, ErrorCode.PRESENCE_FULL)
      }
    })
    return ok ? outcome : 'unavailable'
  }

  /** The key's last local connection is gone for good: it leaves the store, and here once the store confirmed it. */
  private drop (life: Life<RoomState>, key: string, local: LocalKey): void {
    clearTimeout(local.timer)
    local.timer = undefined
    local.leaving = true
    const room = life.room
    this.enqueue(life, async () => {
      const keys = life.state.keys
      if (!local.leaving || keys.get(key) !== local) return
      if (local.entered) {
        let last = true
        for (const other of keys.values()) if (other !== local && other.entered) last = false
        await this.call(this.store.leave(room, key, last), 'leave')
      }
      this.confirmed(life, key, local)
    })
  }

  /** The store no longer holds the key: it is gone here too, unless a connection came back meanwhile (enter again). */
  private confirmed (life: Life<RoomState>, key: string, local: LocalKey): void {
    if (life.state.keys.get(key) !== local) return
    if (local.conns.size > 0) {
      local.leaving = false
      local.entered = false
      this.enter(life, key, local)
      return
    }
    life.state.keys.delete(key)
  }

  /** Shutting down: the key is gone here, the store keeps it for `shutdownGrace`. */
  private forget (life: Life<RoomState>, key: string, local: LocalKey): void {
    clearTimeout(local.timer)
    local.timer = undefined
    if (life.state.keys.get(key) === local) life.state.keys.delete(key)
  }

  /**
   * Makes the store hold exactly the room's entered keys, in the room's queue (never between an enter and its
   * confirmation); then the leaves it carried out are confirmed. Resolves false when the store failed.
   */
  private async resyncRoom (life: Life<RoomState>): Promise<boolean> {
    const sync = this.store.sync
    if (sync === undefined) return true
    return await this.enqueue(life, async () => {
      const members = this.entered(life)
      const leaving = [...life.state.keys].filter(([, local]) => local.leaving || !local.entered)
      await this.call(sync.call(this.store, life.room, members), 'sync')
      for (const [key, local] of leaving) if (local.leaving) this.confirmed(life, key, local)
    })
  }

  /** Every member connection of the room waits for a new snapshot (its diffs held meanwhile). */
  private resnapshot (life: Life<RoomState>): void {
    const members = this.registry.members(life.room)
    if (members === undefined || members.size === 0 || !this.options.events) return
    this.snapshotTo(life, [...members])
  }

  /**
   * Reads the room and sends the snapshot to `conns`, then the diffs held for them meanwhile that are newer (same
   * epoch, v above the snapshot's). A newer wait of a connection (a later resnapshot) replaces this one.
   */
  private snapshotTo (life: Life<RoomState>, conns: Array<Connection<any, any>>): void {
    const waiting = new Map<Connection<any, any>, Held>()
    for (const conn of conns) {
      const held: Held = []
      life.state.syncing.set(conn, held)
      waiting.set(conn, held)
    }
    const room = life.room
    this.enqueue(life, async () => {
      let snapshot: PresenceSnapshot | undefined
      try {
        snapshot = await this.call(this.store.read(room), 'read')
      } finally {
        const syncing = life.state.syncing
        if (snapshot !== undefined && life.state.epoch === undefined) life.state.epoch = snapshot.epoch
        const text = snapshot === undefined ? undefined : encodeSnapshot(room, snapshot)
        for (const [conn, held] of waiting) {
          if (syncing.get(conn) !== held) continue
          // Without a snapshot (the store failed, which marks it for repair) the connection keeps waiting, its diffs
          // held: the repair's resnapshot answers it. A diff before any snapshot would be one the client must drop.
          if (snapshot === undefined && conn.isOpen && life.live) continue
          syncing.delete(conn)
          if (!conn.isOpen || !life.live) continue
          if (text !== undefined) conn.sendProtocol(text, 'rt.presence')
          let newest = snapshot?.v ?? 0
          for (const [v, epoch, diff] of held) {
            if (snapshot === undefined || (v > snapshot.v && (epoch === undefined || snapshot.epoch === undefined || epoch === snapshot.epoch))) {
              conn.sendProtocol(diff, 'rt.presence.diff')
              newest = Math.max(newest, v)
            }
          }
          if (snapshot !== undefined) life.state.sent.set(conn, [newest, snapshot.epoch])
        }
      }
    })
  }

  private entered (life: Life<RoomState>): Map<string, string> {
    const members = new Map<string, string>()
    for (const [key, local] of life.state.keys) if (local.entered && !local.leaving) members.set(key, local.data)
    return members
  }

  /** Ends the room's life once nothing is left of it here: no connection, no key, no store call, no waiting. */
  private settle (life: Life<RoomState>): void {
    const s = life.state
    if (!life.live || s.keys.size > 0 || s.queued > 0 || s.syncing.size > 0) return
    if ((this.registry.members(life.room)?.size ?? 0) > 0) return
    this.lives.end(life.room, life)
  }

  private async call<T> (promise: Promise<T>, what: string): Promise<T> {
    return await withDeadline(promise, this.callTimeout, `presence ${what}`)
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

  /** Runs `task` after the room's earlier store calls; resolves true when it succeeded (a failure is logged). */
  private async enqueue (life: Life<RoomState>, task: () => Promise<void>): Promise<boolean> {
    const s = life.state
    s.queued++
    let ok = false
    const next = s.tail.then(task).then(() => { ok = true }, (err: unknown) => {
      this.log.warn({ err, room: life.room }, 'presence: the store failed')
    })
    s.tail = next
    await next
    s.queued--
    this.settle(life)
    return ok
  }
}
