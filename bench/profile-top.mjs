// `node bench/profile-top.mjs <file.cpuprofile | dir> [count]`: the functions with the most self time in a V8 CPU
// profile (from `npm run bench -- --only=A --profile`), overall and within lib/, as a share of the time the process
// was busy. Given a directory, it reads the largest profile there: the main thread's (the other is tsx's loader's).
import { readFileSync } from 'node:fs'
import { profileFile, where } from './cpuprofile.mjs'

const [given, countText = '15'] = process.argv.slice(2)
if (given === undefined) {
  process.stderr.write('usage: node bench/profile-top.mjs <file.cpuprofile | dir> [count]\n')
  process.exit(2)
}
const file = profileFile(given)
if (file === undefined) {
  process.stderr.write(`no .cpuprofile in ${given}\n`)
  process.exit(2)
}
const count = Number(countText)
const profile = JSON.parse(readFileSync(file, 'utf8'))
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const self = new Map()
profile.samples.forEach((id, i) => { self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)) })

const totals = new Map()
let busy = 0
for (const [id, micros] of self) {
  const { callFrame } = byId.get(id)
  const name = callFrame.functionName === '' ? '(anonymous)' : callFrame.functionName
  if (name === '(idle)' || name === '(program)') continue
  busy += micros
  const k = `${where(callFrame)} ${name}`
  totals.set(k, (totals.get(k) ?? 0) + micros)
}
const sorted = [...totals].sort((x, y) => y[1] - x[1])
const print = (title, list) => {
  process.stdout.write(`${title}\n`)
  for (const [k, micros] of list.slice(0, count)) process.stdout.write(`${(micros / busy * 100).toFixed(1).padStart(5)} %  ${k}\n`)
}
process.stdout.write(`${file}: ${(busy / 1e6).toFixed(2)} s busy (idle and (program) left out)\n`)
print('\nTop self time, everything:', sorted)
const lib = sorted.filter(([k]) => k.startsWith('lib/'))
print(`\nTop self time in lib/ (${(lib.reduce((n, [, m]) => n + m, 0) / busy * 100).toFixed(1)} % of the busy time in all):`, lib)
