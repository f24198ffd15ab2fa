// `node bench/flame.mjs <file.cpuprofile | dir>`: a flame graph of a V8 CPU profile as an SVG beside it
// (`<file>.svg`; given a directory, of its largest profile: the main thread's). Each box is a function in a call
// stack, as wide as the time spent in it and below it; lib/ is orange, node_modules blue, Node's own grey. Hover a
// box for its name, place and share. `npm run bench -- --profile` writes one per profiled server by itself.
import { readFileSync, writeFileSync } from 'node:fs'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { profileFile, where } from './cpuprofile.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const WIDTH = 1600
const ROW = 16
/** Boxes narrower than this many pixels are left out (their time still counts in their parent's width). */
const MIN_PX = 0.3

const escape = (text) => text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])

function colour (place) {
  if (place.startsWith('lib/')) return '#f2a65a'
  if (place.includes('node_modules/')) return '#7fb3e0'
  return '#c8c8c8'
}

/** Writes `<file>.svg` and returns its path. Idle and (program) samples are left out, as in profile-top.mjs. */
export function writeFlame (file) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map()
  profile.samples.forEach((id, i) => { self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)) })
  const skipped = (n) => n.callFrame.functionName === '(idle)' || n.callFrame.functionName === '(program)'
  const total = new Map()
  const sum = (n) => {
    let t = skipped(n) ? 0 : self.get(n.id) ?? 0
    for (const c of n.children ?? []) t += sum(byId.get(c))
    total.set(n.id, t)
    return t
  }
  const rootNode = profile.nodes[0]
  const busy = sum(rootNode) || 1
  const boxes = []
  let depth = 0
  const layout = (n, x, d) => {
    const width = total.get(n.id) / busy * WIDTH
    if (width < MIN_PX) return
    depth = Math.max(depth, d)
    if (n !== rootNode) boxes.push({ n, x, d, width })
    let at = x
    for (const c of n.children ?? []) {
      const child = byId.get(c)
      layout(child, at, n === rootNode ? d : d + 1)
      at += total.get(child.id) / busy * WIDTH
    }
  }
  layout(rootNode, 0, 0)
  const height = (depth + 2) * ROW
  const rects = boxes.map(({ n, x, d, width }) => {
    const name = n.callFrame.functionName === '' ? '(anonymous)' : n.callFrame.functionName
    const place = where(n.callFrame)
    const share = (total.get(n.id) / busy * 100).toFixed(2)
    const label = width > 40 ? `<text x="${(x + 3).toFixed(1)}" y="${height - d * ROW - 4}">${escape(name.slice(0, Math.floor(width / 7)))}</text>` : ''
    return `<g><title>${escape(`${name} ${place} ${share} %`)}</title><rect x="${x.toFixed(1)}" y="${height - (d + 1) * ROW}" width="${width.toFixed(1)}" height="${ROW - 1}" fill="${colour(place)}"/>${label}</g>`
  })
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="monospace" font-size="11">` +
    `<text x="4" y="12">${escape(relative(root, file))}: ${(busy / 1e6).toFixed(2)} s busy</text>${rects.join('')}</svg>\n`
  const out = `${file}.svg`
  writeFileSync(out, svg)
  return out
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const given = process.argv[2]
  if (given === undefined) {
    process.stderr.write('usage: node bench/flame.mjs <file.cpuprofile | dir>\n')
    process.exit(2)
  }
  const file = profileFile(given)
  if (file === undefined) {
    process.stderr.write(`no .cpuprofile in ${given}\n`)
    process.exit(2)
  }
  process.stdout.write(`${writeFlame(file)}\n`)
}
