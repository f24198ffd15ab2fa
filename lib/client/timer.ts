/** The longest delay setTimeout honours (a longer one fires at once, in browsers and on Node alike). */
export const MAX_DELAY = 2_147_483_647

/** A delay setTimeout and setInterval keep as given: within [0, 2^31 - 1] ms (NaN is 0). */
export function clampDelay (ms: number): number {
  if (!(ms > 0)) return 0
  return Math.min(ms, MAX_DELAY)
}

/**
 * `setTimeout(fn, ms)` for the client's deadlines, where 0 or Infinity means "no deadline" (no timer at all) and a
 * delay past what setTimeout can hold is clamped instead of firing at once.
 */
export function deadline (ms: number, fn: () => void): ReturnType<typeof setTimeout> | undefined {
  if (!(ms > 0) || ms === Infinity) return undefined
  return setTimeout(fn, clampDelay(ms))
}
