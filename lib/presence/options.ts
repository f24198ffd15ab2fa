import { RT_ERR_OPTIONS } from '../errors.js'

/** The `presence` option: which rooms keep a member list, and the windows of its guarantees. */
export interface PresenceOptions {
  /** Rooms that opt in: a list of names, a RegExp, or a predicate. */
  rooms: readonly string[] | RegExp | ((room: string) => boolean)
  /**
   * Milliseconds after which a crashed instance's members are removed; each instance renews its heartbeat every
   * third of it, so leaves arrive within `ttl + ttl / 3` (Redis store).
   * @default 30000
   */
  ttl?: number
  /**
   * Milliseconds a member whose last connection closed stays listed; a reconnect within it (here or on another
   * instance) fires nothing. An explicit `conn.leave(room)` leaves at once.
   * @default 5000
   */
  leaveDelay?: number
  /**
   * Milliseconds the members of an instance shutting down stay listed, so clients that reconnect to another
   * instance within it cause no leave and no join (a rolling deploy is silent). Redis store.
   * @default 5000
   */
  shutdownGrace?: number
  /**
   * Bytes of a member's JSON data at most; more is refused with `VALIDATION_FAILED`.
   * @default 1024
   */
  maxDataBytes?: number
  /**
   * Members of one room at most; a further key's presence entry is refused with `PRESENCE_FULL` (the
   * connection still joins the room and gets its events).
   * @default 1000
   */
  maxMembers?: number
  /**
   * Send `rt.presence` snapshots and `rt.presence.diff` events to the room's members; `false` keeps only the list
   * and the count for the server (`app.realtime.presence(room)`).
   * @default true
   */
  events?: boolean
}

/** `presence` with every default applied. */
export interface ResolvedPresence {
  isPresenceRoom: (room: string) => boolean
  ttl: number
  leaveDelay: number
  shutdownGrace: number
  maxDataBytes: number
  maxMembers: number
  events: boolean
}

export const PRESENCE_KEYS = ['rooms', 'ttl', 'leaveDelay', 'shutdownGrace', 'maxDataBytes', 'maxMembers', 'events'] as const

function number (name: string, value: number | undefined, fallback: number, allowZero = false): number {
  if (value === undefined) return fallback
  if (!(typeof value === 'number' && Number.isFinite(value) && (value > 0 || (allowZero && value === 0)))) {
    throw new RT_ERR_OPTIONS(`presence.${name}: expected a ${allowZero ? 'non-negative' : 'positive'} number, got ${String(value)}`)
  }
  return value
}

/** Applies the defaults; throws `RT_ERR_OPTIONS` for anything that cannot work. */
export function resolvePresence (options: PresenceOptions | undefined): ResolvedPresence | undefined {
  if (options === undefined) return undefined
  if (typeof options !== 'object' || options === null) throw new RT_ERR_OPTIONS('presence: expected an object with rooms')
  const rooms = options.rooms
  let isPresenceRoom: (room: string) => boolean
  if (Array.isArray(rooms)) {
    const set = new Set<string>(rooms)
    isPresenceRoom = (room) => set.has(room)
  } else if (rooms instanceof RegExp) {
    const re = new RegExp(rooms.source, rooms.flags.replace(/[gy]/g, ''))
    isPresenceRoom = (room) => re.test(room)
  } else if (typeof rooms === 'function') {
    isPresenceRoom = (room) => rooms(room) === true
  } else {
    throw new RT_ERR_OPTIONS('presence.rooms: expected a list of rooms, a RegExp or a function')
  }
  if (options.events !== undefined && typeof options.events !== 'boolean') throw new RT_ERR_OPTIONS('presence.events: expected a boolean')
  return {
    isPresenceRoom,
    ttl: number('ttl', options.ttl, 30_000),
    leaveDelay: number('leaveDelay', options.leaveDelay, 5_000, true),
    shutdownGrace: number('shutdownGrace', options.shutdownGrace, 5_000, true),
    maxDataBytes: number('maxDataBytes', options.maxDataBytes, 1024),
    maxMembers: number('maxMembers', options.maxMembers, 1000),
    events: options.events ?? true
  }
}
