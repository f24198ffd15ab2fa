import { randomBytes } from 'node:crypto'
import type { HistoryPolicy } from './options.js'
import type { Appended, HistoryRead, HistoryStore } from './store.js'

/** 8 characters from 48 random bits: a new one whenever the store loses a room's stream. */
export function newEpoch (): string {
  return randomBytes(6).toString('base64url')
}

/**
 * What a room's `{ epoch, top }` costs before any entry, as counted against `memoryBudget` (the object, its epoch,
 * its map entry; the name counts 2 bytes a character on top).
 */
const META_BYTES = 256

/**
 * One room: a ring of its last `size` frames, offset `o` at `o % size`; entries are offsets `first`…`top`. The
 * ring is made by the first publish: a room that is only joined keeps its epoch and nothing else.
 */
class RoomLog {
  readonly epoch = newEpoch()
  top = 0
  first = 1
  bytes = 0
  ring: Array<Buffer | undefined> | undefined
  lastWrite = 0
  /** Times on the monotonic clock (performance.now()). */
  lastTouch = performance.now()
  ttl: number
  metaTtl: number
  emptied: 'expired' | 'trimmed' | undefined

  constructor (policy: HistoryPolicy, readonly metaBytes: number) {
    this.ttl = policy.ttl
    this.metaTtl = policy.metaTtl
  }

  get count (): number {
    return this.top - this.first + 1
  }

  /** Drops every entry; offsets and epoch stay. Returns the bytes freed. */
  clear (why: 'expired' | 'trimmed'): number {
    const freed = this.bytes
    this.ring?.fill(undefined)
    this.first = this.top + 1
    this.bytes = 0
    this.emptied = why
    return freed
  }
}

/**
 * The in-memory history store of one instance. Entries are dropped `ttl` after the room's last publish, the
 * `{ epoch, top }` after `metaTtl` without use; past `memoryBudget` bytes the least recently written rooms lose
 * their entries (not their epoch). A restart loses everything, so every room gets a new epoch.
 */
export class MemoryHistoryStore implements HistoryStore {
  /** In order of last write (re-inserted on each), so the budget evicts the oldest first. */
  private readonly rooms = new Map<string, RoomLog>()
  /** Bytes of entries. */
  private bytes = 0
  /** Bytes of the rooms' metas (META_BYTES and the name each). */
  private metaBytes = 0
  private readonly sweeper: NodeJS.Timeout

  constructor (private readonly budget: number, sweepInterval = 5000) {
    this.sweeper = setInterval(() => { this.sweep() }, sweepInterval)
    this.sweeper.unref()
  }

  append (room: string, policy: HistoryPolicy, head: string): Appended {
    const log = this.open(room, policy)
    const now = log.lastTouch
    if (log.count > 0 && now - log.lastWrite > policy.ttl) this.bytes -= log.clear('expired')
    const offset = ++log.top
    const frame = Buffer.from(`${head}${offset}}`)
    const ring = log.ring ??= new Array<Buffer | undefined>(policy.size)
    const size = ring.length
    const slot = offset % size
    const old = ring[slot]
    if (old !== undefined) {
      log.bytes -= old.length
      this.bytes -= old.length
    }
    ring[slot] = frame
    log.bytes += frame.length
    this.bytes += frame.length
    if (log.count > size) log.first = offset - size + 1
    log.lastWrite = now
    log.emptied = undefined
    this.rooms.delete(room)
    this.rooms.set(room, log)
    if (this.bytes + this.metaBytes > this.budget) this.evict(log)
    return { epoch: log.epoch, offset, frame }
  }

  read (room: string, policy: HistoryPolicy, since: number | undefined): HistoryRead {
    const log = this.open(room, policy)
    if (log.count > 0 && log.lastTouch - log.lastWrite > policy.ttl) this.bytes -= log.clear('expired')
    const entries: Buffer[] = []
    const from = since === undefined ? log.top + 1 : Math.max(since + 1, log.first)
    const ring = log.ring
    if (ring !== undefined && since !== undefined && since < log.top && log.top - since <= policy.maxRecover) {
      for (let o = from; o <= log.top; o++) entries.push(ring[o % ring.length] as Buffer)
    }
    return { epoch: log.epoch, top: log.top, first: from, entries, emptied: log.emptied }
  }

  /** The bytes held by every room's entries. */
  get size (): number {
    return this.bytes
  }

  /** Rooms whose `{ epoch, top }` is kept, and what those cost besides their entries (counted in the budget too). */
  get metas (): { rooms: number, bytes: number } {
    return { rooms: this.rooms.size, bytes: this.metaBytes }
  }

  close (): void {
    clearInterval(this.sweeper)
  }

  /** The room's log, made with a new epoch when it is new or its meta expired. */
  private open (room: string, policy: HistoryPolicy): RoomLog {
    const now = performance.now()
    let log = this.rooms.get(room)
    if (log !== undefined && now - log.lastTouch > policy.metaTtl) {
      this.drop(room, log)
      log = undefined
    }
    if (log === undefined) {
      log = new RoomLog(policy, META_BYTES + 2 * room.length)
      this.rooms.set(room, log)
      this.metaBytes += log.metaBytes
      if (this.bytes + this.metaBytes > this.budget) this.evict(log, true)
    }
    log.lastTouch = now
    log.ttl = policy.ttl
    log.metaTtl = policy.metaTtl
    return log
  }

  /**
   * Brings the total back within the budget: an append frees the entries of the least recently written rooms; a new
   * meta first lets go of the rooms never published to (top 0: nothing to lose but their epoch), oldest first.
   */
  private evict (keep: RoomLog, metasFirst = false): void {
    if (metasFirst) this.evictMetas(keep)
    for (const log of this.rooms.values()) {
      if (this.bytes + this.metaBytes <= this.budget) return
      if (log !== keep && log.bytes > 0) this.bytes -= log.clear('trimmed')
    }
    this.evictMetas(keep)
  }

  private evictMetas (keep: RoomLog): void {
    for (const [room, log] of this.rooms) {
      if (this.bytes + this.metaBytes <= this.budget) return
      if (log !== keep && log.top === 0) this.drop(room, log)
    }
  }

  private drop (room: string, log: RoomLog): void {
    this.bytes -= log.bytes
    this.metaBytes -= log.metaBytes
    this.rooms.delete(room)
  }

  /** Frees expired entries and forgets rooms unused past their meta TTL. */
  private sweep (): void {
    const now = performance.now()
    for (const [room, log] of this.rooms) {
      if (log.bytes > 0 && now - log.lastWrite > log.ttl) this.bytes -= log.clear('expired')
      if (now - log.lastTouch > log.metaTtl) this.drop(room, log)
    }
  }
}
