import { randomBytes } from 'node:crypto'
import { diffBody, type EnterResult, type PresenceHost, type PresenceSnapshot, type PresenceStore } from './store.js'

const NONE = new Map<string, string>()

interface Room {
  v: number
  members: Map<string, string>
}

/** Versions come from one counter for every room, so a room that emptied and fills again never reuses a `v`. */
let lastVersion = 0
/** Versions never go back within a process: one epoch for all (a restarted server has another). */
const EPOCH = randomBytes(6).toString('base64url')

/**
 * Presence of one instance: per room its members and version. The instance calls `enter` only on a key's first
 * local connection and `leave` after its last, so each call is one join or one leave.
 */
export class MemoryPresenceStore implements PresenceStore {
  private readonly rooms = new Map<string, Room>()
  private host: PresenceHost | undefined

  start (host: PresenceHost): void {
    this.host = host
  }

  async enter (room: string, key: string, data: string, maxMembers: number): Promise<EnterResult> {
    let r = this.rooms.get(room)
    if (r === undefined) this.rooms.set(room, r = { v: 0, members: new Map() })
    const previous = r.members.get(key)
    if (previous === undefined && r.members.size >= maxMembers) return 'full'
    r.members.set(key, data)
    if (previous === undefined) this.emit(room, r, new Map([[key, data]]), [], NONE)
    else if (previous !== data) this.emit(room, r, NONE, [], new Map([[key, data]]))
    return 'ok'
  }

  async update (room: string, key: string, data: string): Promise<void> {
    const r = this.rooms.get(room)
    const previous = r?.members.get(key)
    if (r === undefined || previous === undefined || previous === data) return
    r.members.set(key, data)
    this.emit(room, r, NONE, [], new Map([[key, data]]))
  }

  async leave (room: string, key: string): Promise<void> {
    const r = this.rooms.get(room)
    if (r === undefined || !r.members.delete(key)) return
    this.emit(room, r, NONE, [key], NONE)
    if (r.members.size === 0) this.rooms.delete(room)
  }

  async read (room: string): Promise<PresenceSnapshot> {
    const r = this.rooms.get(room)
    return { v: r?.v ?? lastVersion, epoch: EPOCH, members: new Map(r?.members) }
  }

  async count (room: string): Promise<number> {
    return this.rooms.get(room)?.members.size ?? 0
  }

  async shutdown (): Promise<void> {}

  close (): void {
    this.rooms.clear()
  }

  private emit (room: string, r: Room, joins: ReadonlyMap<string, string>, leaves: string[], updates: ReadonlyMap<string, string>): void {
    r.v = ++lastVersion
    this.host?.diff(room, r.v, diffBody(r.v, joins, leaves, updates, EPOCH), EPOCH)
  }
}
