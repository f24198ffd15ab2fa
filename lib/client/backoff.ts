/** Reconnect delays: exponential with full jitter, so that clients dropped together do not return together. */
export interface BackoffOptions {
  /** The first delay's ceiling in ms. @default 500 */
  base?: number
  /** No delay is longer. @default 30000 */
  cap?: number
}

/** The delay before reconnect attempt `attempt` (1, 2, …): a random point in [0, min(cap, base · 2^(attempt-1))]. */
export function backoffDelay (attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = options.base ?? 500
  const cap = options.cap ?? 30_000
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt - 1, 30))
  return Math.floor(random() * ceiling)
}

/**
 * Whether a close code is worth reconnecting after: the server going away, an abnormal close, an internal error,
 * a restart, try-again-later, a slow-consumer close; a session expiry only with a way to get a new token.
 * A close the client asked for, a policy violation, a message too big, a protocol error, and an application's own
 * codes are final.
 */
export function shouldReconnect (code: number, canRenewToken: boolean): boolean {
  if (code === 4401) return canRenewToken
  return code === 1001 || code === 1005 || code === 1006 || code === 1011 || code === 1012 || code === 1013 || code === 1014 || code === 4408
}
