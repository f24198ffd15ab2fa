// What the profile scripts (profile-top.mjs, profile-fanout.mjs, flame.mjs) share: which file of a profile directory
// to read, and where a call frame is, relative to the repository.
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))

/**
 * A profile file, or a directory's main-thread profile: Node writes one per thread there (tsx's loader runs in a
 * second one), and the main thread's is the largest. Undefined for a directory without one.
 */
export function profileFile (given) {
  if (!statSync(given).isDirectory()) return given
  return readdirSync(given).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(given, f))
    .sort((a, b) => statSync(b).size - statSync(a).size)[0]
}

/** `path:line` of a call frame, the path relative to the repository for its own files ('' for V8's own entries). */
export function where ({ url, lineNumber }) {
  if (url === '') return ''
  const path = url.startsWith('file://') ? relative(root, fileURLToPath(url)) : url
  return `${path}:${lineNumber + 1}`
}
