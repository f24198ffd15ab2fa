import { clampDelay } from './timer.js'

/**
 * When to reconnect, and how soon. Close codes the client acts on: the server's own are `CloseCode` of
 * lib/protocol/codes.ts; the client cannot import server code, so they are repeated here and test/client.test.ts
 * keeps the two tables in step. The rest are the standard codes a peer or a proxy may send.
 */
export const CloseCode = {
  /** Normal closure: by the client's `close()`, or the server meant it. Final. */
  NORMAL: 1000,
  /** The server is shutting down. Reconnect with backoff. */
  GOING_AWAY: 1001,
  /** A frame broke the WebSocket protocol. Final. */
  PROTOCOL_ERROR: 1002,
  /** A close frame without a code. Reconnect with backoff. */
  NO_STATUS: 1005,
  /** No close frame at all: the network, a crash, a dead link. Reconnect with backoff. */
  ABNORMAL: 1006,
  /** A text frame that was not UTF-8. Final. */
  INVALID_PAYLOAD: 1007,
  /** Policy violation (too many rejected messages). Final. */
  POLICY_VIOLATION: 1008,
  /** A message over the server's `limits.maxPayload`. Final. */
  MESSAGE_TOO_BIG: 1009,
  /** The server failed. Reconnect with backoff. */
  INTERNAL_ERROR: 1011,
  /** The server restarts. Reconnect with backoff. */
  SERVICE_RESTART: 1012,
  /** Try again later. Reconnect with backoff. */
  TRY_AGAIN_LATER: 1013,
  /** A proxy's upstream failed. Reconnect with backoff. */
  BAD_GATEWAY: 1014,
  /** The session's token expired. Reconnect only with `getToken`, which supplies a new one. */
  SESSION_EXPIRED: 4401,
  /** The client read too slowly. Reconnect with backoff. */
  SLOW_CONSUMER: 4408
} as const
export type CloseCodeNumber = typeof CloseCode[keyof typeof CloseCode]

const RETRYABLE: ReadonlySet<number> = new Set([
  CloseCode.GOING_AWAY,
  CloseCode.NO_STATUS,
  CloseCode.ABNORMAL,
  CloseCode.INTERNAL_ERROR,
  CloseCode.SERVICE_RESTART,
  CloseCode.TRY_AGAIN_LATER,
  CloseCode.BAD_GATEWAY,
  CloseCode.SLOW_CONSUMER
])

/**
 * Whether a close of an open connection is worth reconnecting after: the server going away, an abnormal close, an
 * internal error, a restart, try-again-later, a slow-consumer close; a session expiry only with a way to get a new
 * token. A close the client asked for, a policy violation, a message too big, a protocol error and an
 * application's own codes are final.
 */
export function shouldReconnect (code: number, canRenewToken: boolean): boolean {
  if (code === CloseCode.SESSION_EXPIRED) return canRenewToken
  return RETRYABLE.has(code)
}

/** May `WebSocket.close()` send this code? Browsers throw for anything but 1000 and 3000–4999. */
export function isSendableCloseCode (code: number): boolean {
  return code === CloseCode.NORMAL || (Number.isInteger(code) && code >= 3000 && code <= 4999)
}

/** Reconnect delays: exponential with full jitter, so that clients dropped together do not return together. */
export interface BackoffOptions {
  /** The first delay's ceiling in ms. @default 500 */
  base?: number
  /** No delay is longer, in ms (nor longer than 2^31 - 1 ms, what setTimeout can hold). @default 30000 */
  cap?: number
  /**
   * How long (ms) a connection must stay open before the attempt count starts again from 1: a server that accepts
   * and closes at once (1011, 4408, 1001…) is backed off from ever longer and reaches `maxAttempts`. 0 resets on
   * every open. @default 5000
   */
  stableAfter?: number
}

/** `backoff` with its defaults; throws RangeError for a `base` or `cap` that is not > 0, a `stableAfter` below 0. */
export function resolveBackoff (options: BackoffOptions = {}): Required<BackoffOptions> {
  const { base = 500, cap = 30_000, stableAfter = 5000 } = options
  if (typeof base !== 'number' || !(base > 0)) throw new RangeError(`backoff.base must be a number > 0 (ms), not ${String(base)}`)
  if (typeof cap !== 'number' || !(cap > 0)) throw new RangeError(`backoff.cap must be a number > 0 (ms), not ${String(cap)}`)
  if (typeof stableAfter !== 'number' || !(stableAfter >= 0)) throw new RangeError(`backoff.stableAfter must be a number >= 0 (ms), not ${String(stableAfter)}`)
  return { base, cap, stableAfter }
}

/**
 * The delay before reconnect attempt `attempt` (1, 2, …): a random point in [0, min(cap, base · 2^(attempt-1))],
 * never over 2^31 - 1 ms.
 */
export function backoffDelay (attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = options.base ?? 500
  const cap = options.cap ?? 30_000
  const ceiling = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 1) - 1, 30))
  return clampDelay(Math.floor(random() * ceiling))
}
