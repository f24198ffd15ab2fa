// The README and docs/ as a reader meets them: every relative link and #anchor leads somewhere, every page of the
// guide is reachable from its index, the README's images show on the npm page (absolute URLs of files in this
// repository), and every code block is soundly marked. test/package.test.ts compiles and runs the ```ts blocks.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { posix } from 'node:path'
import { codeBlocks, LANGUAGES, pages, PRELUDES } from './helpers/snippets.js'

const root = new URL('../', import.meta.url)
const all = new Map(await pages(root))

/** GitHub's anchor of a heading: lower-case, punctuation dropped but `-` and `_`, each space a `-`. */
function slug (heading: string): string {
  return heading.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

/** The page without its fenced blocks (blank lines instead, so that line numbers stay). */
function prose (text: string): string {
  let fenced = false
  return text.split('\n').map((line) => {
    if (/^ *```/.test(line)) { fenced = !fenced; return '' }
    return fenced ? '' : line
  }).join('\n')
}

/** The anchors of a page's headings; a repeated one gets -1, -2…, as on GitHub. */
function anchors (text: string): Set<string> {
  const seen = new Map<string, number>()
  const out = new Set<string>()
  for (const [, heading] of prose(text).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(heading as string)
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.add(n === 0 ? base : `${base}-${n}`)
  }
  return out
}

interface Link { page: string, line: number, target: string, image: boolean }

/** Every markdown link and image of a page outside code (inline code spans are blanked first). */
function links (page: string, text: string): Link[] {
  const out: Link[] = []
  prose(text).split('\n').forEach((raw, i) => {
    const line = raw.replace(/`[^`]*`/g, (span) => '`'.padEnd(span.length - 1, 'x') + '`')
    for (const m of line.matchAll(/(!?)\[[^\]]*\]\(([^)\s]+)\)/g)) out.push({ page, line: i + 1, target: m[2] as string, image: m[1] === '!' })
    for (const m of line.matchAll(/<img [^>]*src="([^"]+)"/g)) out.push({ page, line: i + 1, target: m[1] as string, image: true })
  })
  return out
}

/** A relative link's file, from the repository root (undefined when it leaves the repository). */
function resolve (page: string, path: string): string | undefined {
  if (path === '') return page
  const file = posix.normalize(posix.join(posix.dirname(page), path))
  return file.startsWith('..') ? undefined : file.replace(/\/$/, '')
}

const external = (target: string): boolean => /^[a-z][a-z+.-]*:/i.test(target)

test('every relative link of the README and docs/ reaches a file, and its #anchor a heading there', { timeout: 10000 }, async () => {
  const broken: string[] = []
  let checked = 0
  for (const [page, text] of all) {
    for (const link of links(page, text)) {
      if (external(link.target)) continue
      checked++
      const [path = '', anchor] = link.target.split('#')
      const file = resolve(page, path)
      const where = `${link.page}:${link.line} → ${link.target}`
      if (file === undefined || !existsSync(new URL(file, root))) { broken.push(`${where}: no such file`); continue }
      if (anchor === undefined) continue
      if (!file.endsWith('.md')) { broken.push(`${where}: an anchor into a file that is not markdown`); continue }
      const target = all.get(file) ?? await readFile(new URL(file, root), 'utf8')
      if (!anchors(target).has(anchor)) broken.push(`${where}: ${file} has no heading #${anchor}`)
    }
  }
  assert.deepEqual(broken, [])
  assert.ok(checked > 80, `${checked} links checked`)
})

test('every page of docs/ is reachable from docs/README.md, and the README\'s map links every page', { timeout: 10000 }, () => {
  const guide = [...all.keys()].filter((p) => p.startsWith('docs/'))
  const reached = new Set(['docs/README.md'])
  const queue = ['docs/README.md']
  while (queue.length > 0) {
    const page = queue.shift() as string
    for (const { target } of links(page, all.get(page) as string)) {
      if (external(target)) continue
      const file = resolve(page, target.split('#')[0] as string)
      if (file !== undefined && all.has(file) && file.startsWith('docs/') && !reached.has(file)) { reached.add(file); queue.push(file) }
    }
  }
  assert.deepEqual(guide.filter((p) => !reached.has(p)), [], 'pages no link from docs/README.md leads to')
  const fromReadme = new Set(links('README.md', all.get('README.md') as string).map((l) => resolve('README.md', l.target.split('#')[0] as string)))
  assert.deepEqual(guide.filter((p) => !fromReadme.has(p) && p !== 'docs/README.md'), [], 'pages the README\'s feature map leaves out')
  assert.ok(guide.length >= 15, `${guide.length} pages`)
})

test('the README\'s images are absolute URLs (the npm page shows them) of files in this repository', { timeout: 10000 }, async () => {
  const { repository } = JSON.parse(await readFile(new URL('package.json', root), 'utf8')) as { repository: { url: string } }
  const repo = /github\.com\/([\w.-]+\/[\w.-]+?)(?:\.git)?$/.exec(repository.url)?.[1]
  assert.ok(repo !== undefined, `package.json's repository is on GitHub: ${repository.url}`)
  const images = links('README.md', all.get('README.md') as string).filter((l) => l.image)
  assert.ok(images.length >= 1, 'the README shows the example')
  for (const { line, target } of images) {
    const m = new RegExp(`^https://raw\\.githubusercontent\\.com/${repo.replace('.', '\\.')}/main/(.+)$`).exec(target)
    assert.ok(m !== null, `README.md:${line}: ${target} is not https://raw.githubusercontent.com/${repo}/main/…`)
    assert.ok(existsSync(new URL(m[1] as string, root)), `README.md:${line}: ${m[1] as string} is not in the repository`)
  }
})

test('every code block has a language; every snippet marker is known, sits on a ```ts block, names a prelude that exists', { timeout: 10000 }, () => {
  let ts = 0
  for (const [page, text] of all) {
    const blocks = codeBlocks(page, text) // throws on an unknown marker or a skip without its reason
    for (const block of blocks) {
      const where = `${page}:${block.line}`
      assert.ok(LANGUAGES.has(block.lang), `${where}: a block in "${block.lang}", not one of ${[...LANGUAGES].join(', ')}`)
      if (block.lang === 'ts') ts++
      if (block.marker === undefined) continue
      assert.equal(block.lang, 'ts', `${where}: a snippet marker on a ${block.lang} block`)
      const prelude = block.marker.prelude
      if (prelude !== undefined) assert.ok(existsSync(new URL(`${prelude}.ts`, PRELUDES)), `${where}: no prelude ${prelude}.ts`)
    }
    // A marker not on the line right before a fence would be silently ignored.
    text.split('\n').forEach((line, i) => {
      if (!line.includes('<!-- snippet')) return
      assert.ok(blocks.some((b) => b.line === i + 2), `${page}:${i + 1}: a snippet marker that is not right before a code block`)
    })
  }
  assert.ok(ts >= 15, `${ts} ts blocks`)
})

test('the README is a short front door: what it is, the set-up commands, Install, the quick start and its client, the map', { timeout: 10000 }, () => {
  const readme = all.get('README.md') as string
  assert.deepEqual([...prose(readme).matchAll(/^#{1,6} .+$/gm)].map((m) => m[0]),
    ['# fastify-realtime', '## Install', '## Quick start', '### A client', '## Documentation'])
  const [first] = codeBlocks('README.md', readme)
  assert.equal(first?.lang, 'sh', 'the set-up commands come first')
  assert.match(first.code, /^npm install && npm run example +#.*\nnpm test +#.*$/)
  assert.ok(readme.split('\n').length <= 150, `${readme.split('\n').length} lines: the rest belongs in docs/`)
})
