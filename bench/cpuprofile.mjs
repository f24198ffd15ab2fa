// What the profile scripts (profile-top.mjs, profile-fanout.mjs, profile-fallback.mjs, flame.mjs) share: which file
// of a profile directory to read, the profile with its nodes by id and each node's parent, and where a call frame is,
// relative to the repository.
import { readdirSync, readFileSync, statSync } from 'node:fs'
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

/**
 * The profile at `given` (a file, or a directory's main-thread profile) with its nodes by id and each node's parent
 * id; exits with status 2 and `usage` when there is none.
 */
export function readProfile (given, usage) {
  const file = given === undefined ? undefined : profileFile(given)
  if (file === undefined) {
    process.stderr.write(given === undefined ? `usage: ${usage}\n` : `no .cpuprofile in ${given}\n`)
    process.exit(2)
  }
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
  const parents = new Map()
  for (const n of profile.nodes) for (const child of n.children ?? []) parents.set(child, n.id)
  return { file, profile, nodes, parents }
}

/** `path:line` of a call frame, the path relative to the repository for its own files ('' for V8's own entries). */
export function where ({ url, lineNumber }) {
  if (url === '') return ''
  const path = url.startsWith('file://') ? relative(root, fileURLToPath(url)) : url
  return `${path}:${lineNumber + 1}`
}
