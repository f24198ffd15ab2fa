// `node bench/profile-fanout.mjs <file.cpuprofile | dir> [deliveries] [function=deliver] [ms=150]`: where a B
// profile's fan-out time goes. A B server's profile is mostly its 10,000 handshakes; this keeps only the samples
// from 5 ms before each call of `function` (the registry's `deliver`) to `ms` after it, and sums their self time by
// who spent it: the write syscall (the kernel's TCP send on loopback, which also runs the receiving side's
// processing, and libuv), Node's streams and net, ws, fastify-realtime's lib/, the garbage collector. Given the
// deliveries the profile saw (members × fan-outs), it also says µs per delivery.
import { readProfile } from './cpuprofile.mjs'

const [given, deliveriesText, root = 'deliver', windowText = '150'] = process.argv.slice(2)
const { file, profile, nodes, parents } = readProfile(given, 'node bench/profile-fanout.mjs <file.cpuprofile | dir> [deliveries] [function] [ms]')
const inside = new Map()
function underRoot (id) {
  if (inside.has(id)) return inside.get(id)
  const parent = parents.get(id)
  const result = nodes.get(id).callFrame.functionName === root || (parent !== undefined && underRoot(parent))
  inside.set(id, result)
  return result
}

const times = []
let t = profile.startTime
for (const delta of profile.timeDeltas) times.push(t += delta)
const windows = []
for (let i = 0; i < profile.samples.length; i++) {
  if (underRoot(profile.samples[i]) && (windows.length === 0 || times[i] > windows.at(-1)[1])) windows.push([times[i] - 5000, times[i] + Number(windowText) * 1000])
}

function owner ({ functionName, url }) {
  if (functionName === '(idle)') return undefined
  if (functionName === 'writeBuffer' || functionName === 'writev') return 'write syscall (kernel, libuv)'
  if (functionName === '(garbage collector)') return 'garbage collector'
  if (url.includes('/node_modules/ws/')) return 'ws'
  if (url.startsWith('node:')) return 'Node (streams, net, events, ticks)'
  if (url.includes('/lib/') && !url.includes('/node_modules/')) return 'fastify-realtime (lib/)'
  return 'other'
}
const spent = new Map()
let busy = 0
let w = 0
for (let i = 0; i < profile.samples.length; i++) {
  while (w < windows.length && times[i] > windows[w][1]) w++
  if (w === windows.length) break
  if (times[i] < windows[w][0]) continue
  const who = owner(nodes.get(profile.samples[i]).callFrame)
  if (who === undefined) continue
  const delta = profile.timeDeltas[i]
  spent.set(who, (spent.get(who) ?? 0) + delta)
  busy += delta
}
const deliveries = deliveriesText === undefined ? undefined : Number(deliveriesText)
const perDelivery = (us) => deliveries === undefined ? '' : ` | ${(us / deliveries).toFixed(2)}`
process.stdout.write(`${file}: ${windows.length} fan-outs, ${(busy / 1000).toFixed(0)} ms busy around them\n\n`)
process.stdout.write(`| who | ms | share of busy${deliveries === undefined ? '' : ' | µs/delivery'} |\n| --- | ---: | ---: |${deliveries === undefined ? '' : ' ---: |'}\n`)
for (const [who, us] of [...spent].sort((a, b) => b[1] - a[1])) {
  process.stdout.write(`| ${who} | ${(us / 1000).toFixed(1)} | ${(100 * us / busy).toFixed(1)} %${perDelivery(us)} |\n`)
}
