// `node bench/compare.mjs before.json after.json`: two runs of `npm run bench` side by side, row by row.
// Compare ratios to raw ws rather than raw figures when the two runs were made under different load.
import { readFileSync } from 'node:fs'

const files = process.argv.slice(2)
if (files.length !== 2) {
  process.stderr.write('usage: node bench/compare.mjs <before.json> <after.json>   (bench/results/*.json)\n')
  process.exit(2)
}
const [a, b] = files.map((file) => JSON.parse(readFileSync(file, 'utf8')))
const TITLES = { A: 'A echo, msg/s', B: 'B fan-out, ms', C: 'C heap, B/conn', D: 'D set-up, conn/s' }
const HIGHER_IS_BETTER = { A: true, B: false, C: false, D: true }

const num = (x, digits = 2) => typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–'
const value = (x) => typeof x !== 'number' || !Number.isFinite(x) ? '–' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1)

/** The change from `before` to `after`, in %, and whether it is an improvement beyond 5 %. */
function change (workload, before, after) {
  if (!(before > 0) || !(after > 0)) return ''
  const pct = (after - before) / before * 100
  const improved = HIGHER_IS_BETTER[workload] ? pct > 0 : pct < 0
  const verdict = Math.abs(pct) < 5 ? '' : improved ? ' better' : ' worse'
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)} %${verdict}`
}

const describe = (run, file) => `${file}: ${run.date}, ${run.mode}, ${run.sizes?.repeats} repeat(s), load ${num(run.loadAverage?.start, 1)}→${num(run.loadAverage?.end, 1)}`
const differ = Object.keys({ ...a.sizes, ...b.sizes }).filter((k) => a.sizes?.[k] !== b.sizes?.[k])
const lines = [`before = ${describe(a, files[0])}`, `after  = ${describe(b, files[1])}`,
  ...(differ.length > 0 ? [`sizes differ, figures are not comparable: ${differ.map((k) => `${k} ${a.sizes?.[k]} → ${b.sizes?.[k]}`).join(', ')}`] : []), '',
  '| workload | server | before | after | change | ratio before | ratio after | ratio change | CPU before | CPU after |',
  '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
const key = (r) => `${r.workload} ${r.kind}`
const rowsA = new Map(a.rows.map((r) => [key(r), r]))
const rowsB = new Map(b.rows.map((r) => [key(r), r]))
const keys = [...new Set([...rowsA.keys(), ...rowsB.keys()])]
for (const k of keys) {
  const ra = rowsA.get(k)
  const rb = rowsB.get(k)
  const { workload, kind } = ra ?? rb
  lines.push(`| ${TITLES[workload] ?? workload} | ${kind} | ${value(ra?.value)} | ${value(rb?.value)} | ${change(workload, ra?.value, rb?.value)} | ` +
    `${num(ra?.ratio)} | ${num(rb?.ratio)} | ${kind === 'raw-ws' ? '' : change(workload, ra?.ratio, rb?.ratio)} | ${num(ra?.cpu)} | ${num(rb?.cpu)} |`)
}
const targetsA = new Map((a.targets ?? []).map((t) => [t.name, t]))
const targetsB = new Map((b.targets ?? []).map((t) => [t.name, t]))
const names = [...new Set([...targetsA.keys(), ...targetsB.keys()])]
if (names.length > 0) {
  lines.push('', 'Targets (fastify-realtime):')
  for (const n of names) {
    const ta = targetsA.get(n)
    const tb = targetsB.get(n)
    const show = (t) => t === undefined ? '–' : `${num(t.figure)} ${t.met ? 'met' : 'short'}`
    lines.push(`- ${n} (target ${(ta ?? tb).limit}): ${show(ta)} → ${show(tb)}`)
  }
}
process.stdout.write(lines.join('\n') + '\n')
