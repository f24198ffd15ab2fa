/**
 * A room or user name inside a Redis Cluster hash tag. Redis hashes only what stands between the first `{` of a key
 * and the next `}`, and the whole key when that is empty: a raw name with a `}` (or an empty name) would split a
 * room's keys over slots. The name is escaped (`%` → `%25`, `}` → `%7D`, the empty name → `%`), so the tag ends
 * where the name does, is never empty, and two names never share a tag. Names without `%` or `}` are unchanged.
 */
export function hashTag (name: string): string {
  return `{${escapeName(name)}}`
}

/** The name as it stands inside the tag. */
export function escapeName (name: string): string {
  if (name === '') return '%'
  return /[%}]/.test(name) ? name.replace(/[%}]/g, (c) => c === '%' ? '%25' : '%7D') : name
}

/** The inverse of `escapeName`. */
export function unescapeName (text: string): string {
  if (text === '%') return ''
  return text.includes('%') ? text.replace(/%25|%7D/g, (s) => s === '%25' ? '%' : '}') : text
}
