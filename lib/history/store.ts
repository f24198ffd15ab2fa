import type { HistoryPolicy } from './options.js'

/** Where a client stands in a room's stream: the stream's epoch and the last offset it has. */
export interface Position {
  epoch: string
  offset: number
}

/** Why a recovery did not happen; the client reloads the room. */
/** Why a join could not recover, as `rt.position`'s `recovery.reason` says. */
export const RECOVERY_REASONS = ['trimmed', 'expired', 'epoch', 'limit', 'invalid', 'gap', 'unavailable'] as const
export type RecoveryReason = typeof RECOVERY_REASONS[number]

/** An event stored under its offset: `frame` is the envelope as every member receives it. */
export interface Appended extends Position {
  frame: Buffer
}

/** A read of a room's stream: its epoch, its top offset, and the entries after the offset asked for. */
export interface HistoryRead {
  epoch: string
  top: number
  /** The offset of `entries[0]`. */
  first: number
  /** Entries after `since`, in offset order, at most `maxRecover` (none when more were missed). */
  entries: Buffer[]
  /** Why the stream holds nothing although `top > 0` (the memory store knows; Redis says `expired`). */
  emptied?: 'expired' | 'trimmed'
}

/**
 * A history store keeps, per room, an epoch, a gap-free offset counter and the last `size` frames. A store whose
 * calls return plain values (the memory store) lets fan-outs and joins complete synchronously; one returning
 * promises (Redis) is awaited, and its publishes come back through the broker's subscription.
 */
export interface HistoryStore {
  /**
   * Numbers `head` (an envelope ending in `,"offset":`), stores it and returns its position and whole frame. A
   * store shared by instances also publishes it (with `except`) to every instance's subscription.
   */
  append: (room: string, policy: HistoryPolicy, head: string, except?: string) => Appended | Promise<Appended>
  /** The room's epoch and top, with the entries after `since` when at most `maxRecover` are missed. */
  read: (room: string, policy: HistoryPolicy, since: number | undefined) => HistoryRead | Promise<HistoryRead>
  /** Stops timers. */
  close: () => void
}

/** The head of a numbered event: `{"type":…,"data":…,"room":…,"offset":` (the store appends `N}`). */
export function eventHead (type: string, data: unknown, room: string): string {
  const json = JSON.stringify({ type, data: data === undefined ? null : data, room, offset: 0 })
  return json.slice(0, -2)
}
