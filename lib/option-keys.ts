// Unknown option keys are typos that would otherwise be ignored in silence: each one fails, naming the closest
// valid key.
import { RT_ERR_OPTIONS } from './errors.js'

/** Edit distance, for "did you mean". */
function distance (a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] as number
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] as number
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + (a[i - 1]?.toLowerCase() === b[j - 1]?.toLowerCase() ? 0 : 1))
      diagonal = above
    }
  }
  return row[b.length] as number
}

/** The valid key closest to `key`, when one is close enough to be what was meant. */
export function closest (key: string, valid: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of valid) {
    const d = candidate.toLowerCase().startsWith(key.toLowerCase()) || key.toLowerCase().startsWith(candidate.toLowerCase())
      ? Math.abs(candidate.length - key.length) / 2
      : distance(key, candidate)
    if (d < bestDistance) { best = candidate; bestDistance = d }
  }
  return bestDistance <= Math.max(2, key.length / 3) ? best : undefined
}

/** Throws `RT_ERR_OPTIONS` for a key `object` should not have, naming the closest valid one. */
export function checkKeys (object: unknown, valid: readonly string[], where: string, error: (message: string) => Error = (m) => new RT_ERR_OPTIONS(m)): void {
  if (object === null || typeof object !== 'object') return
  for (const key of Object.keys(object)) {
    if (valid.includes(key)) continue
    const guess = closest(key, valid)
    throw error(`${where === '' ? '' : `${where}.`}${key}: unknown option${guess === undefined ? '' : ` (did you mean "${guess}"?)`}; valid: ${valid.join(', ')}`)
  }
}
