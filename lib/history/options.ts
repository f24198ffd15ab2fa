import { RT_ERR_OPTIONS } from '../errors.js'
import { checkKeys } from '../option-keys.js'

/** The numbers that bound one room's history; `history.rooms` may override them per room. */
export interface HistoryPolicy {
  /**
   * Entries kept per room; an event further back cannot be recovered (`trimmed`).
   * @default 100
   */
  size: number
  /**
   * Milliseconds since the room's last publish after which its entries are dropped (`expired`); its epoch and
   * top offset live on for `metaTtl`, so a quiet room still recovers with nothing missed.
   * @default 120000
   */
  ttl: number
  /**
   * Milliseconds a room's `{ epoch, offset }` outlives its last use; after it the room starts a new epoch.
   * @default 86400000
   */
  metaTtl: number
  /**
   * Events replayed in one recovery at most; more missed is `recovered: false, reason: 'limit'`.
   * @default 100
   */
  maxRecover: number
  /**
   * Bytes replayed in one recovery at most (never more than half of `limits.maxBufferedBytes`, so a replay
   * cannot trip the slow-consumer close); more is `reason: 'limit'`.
   * @default 524288
   */
  maxRecoverBytes: number
}

/** What `history.rooms` returns for a room: opted in (with the defaults, or some numbers overridden) or not. */
export type RoomPolicyResult = boolean | Partial<HistoryPolicy> | null | undefined

/** The `history` option: which rooms keep a numbered history their members recover from after a reconnect. */
export interface HistoryOptions extends Partial<HistoryPolicy> {
  /** Rooms that opt in: a list of names, a RegExp, or a predicate that may return a partial policy for the room. */
  rooms: readonly string[] | RegExp | ((room: string) => RoomPolicyResult)
  /**
   * Milliseconds the positions of a client's `rt.resume` wait for the rooms to be joined.
   * @default 30000
   */
  resumeWindow?: number
  /**
   * In-memory store only: bytes of entries kept across all rooms; past it, the entries of the least recently
   * written rooms are dropped (their members then recover with `trimmed`).
   * @default 67108864
   */
  memoryBudget?: number
}

/** `history` with every default applied; `policy(room)` is undefined for rooms that did not opt in. */
export interface ResolvedHistory {
  policy: (room: string) => HistoryPolicy | undefined
  resumeWindow: number
  memoryBudget: number
  /** Half of `limits.maxBufferedBytes`: a replay never brings a connection's backlog past it. */
  replayBudget: number
}

const NUMBERS = ['size', 'ttl', 'metaTtl', 'maxRecover', 'maxRecoverBytes'] as const
/** Past this many rooms the cache of policies starts again: a predicate over unbounded room names must not grow memory. */
const MAX_CACHED = 10_000

function checkNumbers (where: string, policy: Partial<HistoryPolicy>): void {
  for (const key of NUMBERS) {
    const value = policy[key]
    if (value !== undefined && !(typeof value === 'number' && Number.isSafeInteger(value) && value > 0)) {
      throw new RT_ERR_OPTIONS(`${where}.${key}: expected a positive integer, got ${String(value)}`)
    }
  }
}

/** Applies the defaults; throws `RT_ERR_OPTIONS` for what cannot work. */
const HISTORY_KEYS = ['rooms', 'size', 'ttl', 'metaTtl', 'maxRecover', 'maxRecoverBytes', 'resumeWindow', 'memoryBudget']

export function resolveHistory (options: HistoryOptions | undefined, maxBufferedBytes: number): ResolvedHistory | undefined {
  if (options === undefined) return undefined
  if (typeof options !== 'object' || options === null) throw new RT_ERR_OPTIONS('history: expected an object')
  checkKeys(options, HISTORY_KEYS, 'history')
  const { rooms } = options
  if (!(Array.isArray(rooms) || rooms instanceof RegExp || typeof rooms === 'function')) {
    throw new RT_ERR_OPTIONS('history.rooms: expected a list of rooms, a RegExp or a function')
  }
  checkNumbers('history', options)
  const half = Math.floor(maxBufferedBytes / 2)
  const base: HistoryPolicy = {
    size: options.size ?? 100,
    ttl: options.ttl ?? 120_000,
    metaTtl: options.metaTtl ?? 86_400_000,
    maxRecover: options.maxRecover ?? 100,
    maxRecoverBytes: Math.min(options.maxRecoverBytes ?? 524_288, half)
  }
  const finish = (p: HistoryPolicy): HistoryPolicy => {
    p.metaTtl = Math.max(p.metaTtl, p.ttl)
    p.maxRecover = Math.min(p.maxRecover, p.size)
    p.maxRecoverBytes = Math.min(p.maxRecoverBytes, half)
    return Object.freeze(p)
  }
  const shared = finish({ ...base })
  let policy: (room: string) => HistoryPolicy | undefined
  if (Array.isArray(rooms)) {
    const set = new Set<string>(rooms)
    policy = (room) => set.has(room) ? shared : undefined
  } else if (rooms instanceof RegExp) {
    const re = new RegExp(rooms.source, rooms.flags.replace(/[gy]/g, ''))
    policy = (room) => re.test(room) ? shared : undefined
  } else {
    const predicate = rooms as (room: string) => RoomPolicyResult
    const cache = new Map<string, HistoryPolicy | null>()
    policy = (room) => {
      let cached = cache.get(room)
      if (cached === undefined) {
        const result = predicate(room)
        if (result === true) cached = shared
        else if (result === false || result === null || result === undefined) cached = null
        else {
          checkNumbers(`history.rooms("${room}")`, result)
          cached = finish({ ...base, ...result })
        }
        if (cache.size >= MAX_CACHED) cache.clear()
        cache.set(room, cached)
      }
      return cached ?? undefined
    }
  }
  const positive = (name: string, value: number | undefined, fallback: number): number => {
    if (value === undefined) return fallback
    if (!(typeof value === 'number' && value > 0 && Number.isFinite(value))) throw new RT_ERR_OPTIONS(`history.${name}: expected a positive number, got ${String(value)}`)
    return value
  }
  return {
    policy,
    resumeWindow: positive('resumeWindow', options.resumeWindow, 30_000),
    memoryBudget: positive('memoryBudget', options.memoryBudget, 64 * 1024 * 1024),
    replayBudget: half
  }
}
