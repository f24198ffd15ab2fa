// The README and the guide in docs/ as the tests read them: pages, the ```ts block under a heading.
import { readFile, readdir } from 'node:fs/promises'

const root = new URL('../../', import.meta.url)

/** The first ```ts block after `heading` in `text`: what a user copies. */
export function blockAfter (text: string, heading: string, where: string): string {
  const at = text.indexOf(heading)
  if (at === -1) throw new Error(`${where} has no "${heading}"`)
  const section = text.slice(at)
  const fence = section.indexOf('```ts\n')
  if (fence === -1) throw new Error(`${where} has no \`\`\`ts block after "${heading}"`)
  const start = fence + 6
  return section.slice(start, section.indexOf('\n```', start))
}

/** The first ```ts block after `heading` in the README. */
export async function readmeBlock (heading: string): Promise<string> {
  return blockAfter(await readFile(new URL('README.md', root), 'utf8'), heading, 'the README')
}

/** docs/'s page files, in reading order (docs/README.md, the index, first). */
export async function docsFiles (): Promise<string[]> {
  const pages = (await readdir(new URL('docs/', root))).filter((f) => /^\d\d-[\w-]+\.md$/.test(f)).sort()
  return ['docs/README.md', ...pages.map((f) => `docs/${f}`)]
}

/** A page of docs/ by its name without the number: `docsPage('reference')` reads docs/14-reference.md. */
export async function docsPage (name: string): Promise<string> {
  const file = (await docsFiles()).find((f) => f.replace(/^docs\/\d\d-/, '') === `${name}.md`)
  if (file === undefined) throw new Error(`docs/ has no page named ${name}`)
  return await readFile(new URL(file, root), 'utf8')
}

/** The first ```ts block after `heading` in a page of docs/ (named as for `docsPage`). */
export async function docBlock (name: string, heading: string): Promise<string> {
  return blockAfter(await docsPage(name), heading, `docs/…-${name}.md`)
}
