// The fenced code blocks of the README and docs/, and how each ```ts block becomes a file to compile.
//
// A block may be preceded by a marker the reader does not see, an HTML comment on the line before its fence:
//   <!-- snippet: file=quickstart.ts -->   saved under that name (other blocks import it); else <page>.L<line>.ts,
//                                          the page's line of its fence: tsc's line k of it is the page's line+k
//   <!-- snippet: prelude=server -->       a fragment: the names test/fixtures/docs-preludes/server.ts exports are
//                                          imported first (the prelude declares `app`, `conn`… for it)
//   <!-- snippet: run -->                  after compiling, run with plain node: it must exit 0 by itself
//   <!-- snippet: skip=<why> -->           not compiled; the reason is required
import { readFile, readdir } from 'node:fs/promises'

export const PRELUDES = new URL('../fixtures/docs-preludes/', import.meta.url)
/** Fence languages a page may use; only `ts` is compiled. A block without a language cannot hide from the compiler. */
export const LANGUAGES = new Set(['ts', 'sh', 'json', 'mermaid', 'text', 'nginx'])

export interface Marker { file?: string, prelude?: string, run: boolean, skip?: string }
export interface Block { page: string, line: number, lang: string, code: string, marker?: Marker }

/** Parses `<!-- snippet: … -->`; throws on anything it does not know, so a misspelt marker is not silently ignored. */
export function parseMarker (comment: string): Marker {
  const m = /^<!-- snippet: (.*) -->$/.exec(comment.trim())
  if (m === null) throw new Error(`not a snippet marker: ${comment}`)
  const body = m[1] as string
  const skip = /^skip=(.*)$/.exec(body)
  if (skip !== null) {
    if ((skip[1] as string).trim().length < 10) throw new Error(`a skip must say why: ${comment}`)
    return { run: false, skip: (skip[1] as string).trim() }
  }
  const marker: Marker = { run: false }
  for (const part of body.split(/\s+/).filter((p) => p !== '')) {
    const [key, value] = part.split('=') as [string, string | undefined]
    if (key === 'run' && value === undefined) marker.run = true
    else if (key === 'file' && value !== undefined && /^[\w-]+\.ts$/.test(value)) marker.file = value
    else if (key === 'prelude' && value !== undefined && /^[\w-]+$/.test(value)) marker.prelude = value
    else throw new Error(`unknown snippet marker "${part}" in: ${comment}`)
  }
  return marker
}

/** Every fenced block of a page, with its language, first line (1-based, the fence's) and marker. */
export function codeBlocks (page: string, text: string): Block[] {
  const lines = text.split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^( *)```(\S*)\s*$/.exec(lines[i] as string)
    if (open === null) continue
    const indent = (open[1] as string).length
    const end = lines.findIndex((l, j) => j > i && l.trim() === '```')
    if (end === -1) throw new Error(`${page}:${i + 1}: a code block is never closed`)
    const code = lines.slice(i + 1, end).map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length))).join('\n')
    const before = (lines[i - 1] ?? '').trim()
    const block: Block = { page, line: i + 1, lang: open[2] as string, code }
    if (before.startsWith('<!-- snippet')) block.marker = parseMarker(before)
    blocks.push(block)
    i = end
  }
  return blocks
}

/** The names a prelude exports (`export const x`, `export declare function y`, `export { a, b as c } from …`). */
export function preludeExports (source: string): string[] {
  const names = [...source.matchAll(/^export (?:declare )?(?:async )?(?:const|let|var|function|class) (\w+)/gm)].map((m) => m[1] as string)
  for (const [, list] of source.matchAll(/^export \{([^}]*)\}/gm)) {
    for (const item of (list as string).split(',')) names.push(item.trim().split(/\s+as\s+/).pop() as string)
  }
  return names.filter((n) => n !== '')
}

/** The README and docs/*.md, as [path from the repository root, text]. */
export async function pages (root: URL): Promise<Array<[string, string]>> {
  const docs = (await readdir(new URL('docs/', root))).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)
  return await Promise.all(['README.md', ...docs].map(async (p) => [p, await readFile(new URL(p, root), 'utf8')] as [string, string]))
}

export interface SnippetFile { name: string, source: string, block: Block }

/** The file each ```ts block of the pages becomes (skipped ones left out), with its prelude's names imported first. */
export async function snippetFiles (root: URL): Promise<SnippetFile[]> {
  const files: SnippetFile[] = []
  for (const [page, text] of await pages(root)) {
    for (const block of codeBlocks(page, text)) {
      if (block.lang !== 'ts' || block.marker?.skip !== undefined) continue
      const name = block.marker?.file ?? `${page.replace(/^docs\//, '').replace(/\.md$/, '')}.L${block.line}.ts`
      let source = block.code
      if (block.marker?.prelude !== undefined) {
        const prelude = await readFile(new URL(`${block.marker.prelude}.ts`, PRELUDES), 'utf8')
        // On the block's first line, so that line k of the file is line k of the block (tsc's line numbers).
        source = `import { ${preludeExports(prelude).join(', ')} } from './${block.marker.prelude}.js'; ${source}`
      }
      // Every snippet is a module (top-level await, its own scope), whether or not it imports anything.
      files.push({ name, source: `${source}\nexport {}\n`, block })
    }
  }
  return files
}
