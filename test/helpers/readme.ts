import { readFile } from 'node:fs/promises'

/** The first ```ts block after `heading` in the README: what a user copies. */
export async function readmeBlock (heading: string): Promise<string> {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
  const at = readme.indexOf(heading)
  if (at === -1) throw new Error(`the README has no "${heading}"`)
  const section = readme.slice(at)
  const start = section.indexOf('```ts\n') + 6
  return section.slice(start, section.indexOf('\n```', start))
}
