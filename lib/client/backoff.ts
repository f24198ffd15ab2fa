/** Reconnect delays: exponential with full jitter, so that clients dropped together do not return together. */
export interface BackoffOptions {
  /** The first delay's ceiling in ms. @default 500 */
  base?: number
  /** No delay is longer, in ms. @default 30000 */
  cap?: number
}

/** The delay before reconnect attempt `attempt` (1, 2, …): a random point in [0, min(cap, base · 2^(attempt-1))]. */
export function backoffDelay (attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = options.base ?? 500
  const cap = options.cap ?? 30_000
  const ceiling = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 1) - 1, 30))
  return Math.floor(random() * ceiling)
}
