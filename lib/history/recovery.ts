import type { HistoryPolicy } from './options.js'
import type { HistoryRead, Position, RecoveryReason } from './store.js'

/** What a join of a history room answers (`rt.position`'s `recovery`). */
export type Recovery = { recovered: true, missed: number } | { recovered: false, reason: RecoveryReason }

/** What `conn.join()` resolves with for a history room. */
export interface JoinPosition extends Position {
  /** Present when the join resumed from a position (`since`, or the client's `rt.resume`). */
  recovered?: boolean
  /** Events replayed, when recovered. */
  missed?: number
  /** Why not, when not recovered. */
  reason?: RecoveryReason
}

/**
 * All or nothing (Centrifugo's rule): recovered only when the read proves the whole gap is there (same epoch,
 * first entry `since + 1`, last entry the top) and it fits the limits; otherwise a reason and no replay.
 */
export function decideRecovery (since: Position, read: HistoryRead, policy: HistoryPolicy): Recovery {
  if (since.epoch !== read.epoch) return { recovered: false, reason: 'epoch' }
  if (since.offset > read.top) return { recovered: false, reason: 'invalid' }
  const missed = read.top - since.offset
  if (missed === 0) return { recovered: true, missed: 0 }
  if (missed > policy.size) return { recovered: false, reason: 'trimmed' }
  if (missed > policy.maxRecover) return { recovered: false, reason: 'limit' }
  if (read.entries.length === 0) return { recovered: false, reason: read.emptied ?? 'expired' }
  if (read.first !== since.offset + 1 || read.entries.length !== missed) return { recovered: false, reason: read.emptied ?? 'trimmed' }
  let bytes = 0
  for (const entry of read.entries) bytes += entry.length
  if (bytes > policy.maxRecoverBytes) return { recovered: false, reason: 'limit' }
  return { recovered: true, missed }
}

/** `{"type":"rt.position","data":{room, epoch, offset, recovery?}}`; a leave sends `offset: null` and no epoch. */
export function encodePosition (room: string, epoch: string | undefined, offset: number | null, recovery?: Recovery): string {
  const data = offset === null ? { room, offset } : recovery === undefined ? { room, epoch, offset } : { room, epoch, offset, recovery }
  return JSON.stringify({ type: 'rt.position', data })
}

const MAX_RESUME_ROOMS = 256
const MAX_EPOCH_LENGTH = 16

/**
 * The positions of an `rt.resume` (`{ rooms: { [room]: { epoch, offset } } }`): well-formed entries only, the
 * first 256; anything else is ignored, never an error (the client sends it blindly after every reconnect).
 */
export function parseResume (data: unknown): Map<string, Position> {
  const out = new Map<string, Position>()
  const rooms = (data as { rooms?: unknown } | null | undefined)?.rooms
  if (typeof rooms !== 'object' || rooms === null || Array.isArray(rooms)) return out
  for (const room in rooms) {
    if (!Object.hasOwn(rooms, room)) continue
    if (out.size >= MAX_RESUME_ROOMS) break
    const entry = (rooms as Record<string, unknown>)[room] as { epoch?: unknown, offset?: unknown } | null
    if (typeof entry !== 'object' || entry === null) continue
    const { epoch, offset } = entry
    if (typeof epoch !== 'string' || epoch.length === 0 || epoch.length > MAX_EPOCH_LENGTH) continue
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) continue
    out.set(room, { epoch, offset })
  }
  return out
}

/** A `since` given to `conn.join`: used when well-formed (same rules as `rt.resume`), else ignored. */
export function validPosition (value: unknown): Position | undefined {
  return parseResume({ rooms: { r: value } }).get('r')
}
