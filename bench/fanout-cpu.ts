// `node --import tsx bench/fanout-cpu.ts [--lib=<dir with index.ts>] [--rounds=5] [--members=10000] [--sends=200] [--pad=4096]`:
// what a fan-out costs fastify-realtime itself, per delivery, in-process: `app.realtime.to(room).send()` to a room of
// members whose sockets look idle to ws and discard what they are written (no kernel, no ws framing), in a fresh
// process per variant, the variants in turn. Variants: a plain room and a history room, each with metrics off and
// on; `--lib` adds both rooms, metrics off, with another copy of lib/ (an older commit's) as `other`. `--pad` keeps
// that many bytes of other objects beside each member, as a server's sockets, parsers and buffers are: without it the
// members sit side by side in the cache, which a server with 10,000 real sockets never has.
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { median, nsInChild } from './shared.js'

const VARIANTS = ['plain', 'plain+metrics', 'history', 'history+metrics'] as const
const argv = process.argv.slice(2)
const arg = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

/** A ws socket as the write path sees one: open, nothing queued, a TCP socket that takes everything. */
function fakeSocket (): unknown {
  const tcp = { written: 0, write (b: Buffer) { this.written += b.length; return true }, cork () {}, uncork () {} }
  return { readyState: 1, bufferedAmount: 0, _sender: { _state: 0, _queue: [] }, _socket: tcp, send () {} }
}

/** One variant, in this process: ns of CPU per delivery, as JSON on stdout. */
async function measure (variant: string, lib: string, members: number, sends: number, pad: number): Promise<void> {
  const { Connection } = await import(`${lib}/connection.js`)
  const { Registry } = await import(`${lib}/registry.js`)
  const { memoryBroker } = await import(`${lib}/broker/memory.js`)
  const { resolveOptions } = await import(`${lib}/options.js`)
  const history = variant.startsWith('history')
  const metered = variant.endsWith('+metrics')
  const options = resolveOptions(history ? { history: { rooms: ['room'] } } : {})
  const broker = memoryBroker()
  const registry = new Registry(broker, undefined, () => {})
  if (metered) {
    const { InstanceMeter } = await import(`${lib}/meter.js`)
    registry.meter = new InstanceMeter({ handler: [1], ping: [1], lag: [1] })
  }
  if (history) {
    const { RoomHistory } = await import(`${lib}/history/rooms.js`)
    registry.roomHistory = new RoomHistory(options.history, broker.historyStore(options.history), registry)
  }
  const routeMeter = registry.meter?.route('/rt', ['news'])
  const request = { log: { child: () => ({ info () {}, error () {} }) }, ip: '127.0.0.1' }
  // The connection reads its registry and limits from the context, its metrics from the route.
  const ctx = { registry, limits: options.limits }
  const route = { meter: routeMeter }
  const padding: unknown[] = []
  for (let i = 0; i < members; i++) {
    for (let bytes = 0; bytes < pad; bytes += 64) padding.push({ a: i, b: bytes, c: null, d: null, e: null, f: null })
    const conn = new Connection(fakeSocket(), request, null, undefined, ctx, route)
    registry.add(conn)
    await conn.join('room')
  }
  const fanout = registry.to('room')
  const data = { text: 'a news item of about a hundred bytes, sent to every member', n: 1 }
  const run = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      fanout.send('news', data)
      await yieldToLoop()
    }
  }
  await run(Math.ceil(sends / 4))
  const out = registry.counters.messagesOut
  const before = process.cpuUsage()
  await run(sends)
  const cpu = process.cpuUsage(before)
  const delivered = registry.counters.messagesOut - out
  if (delivered !== members * sends) throw new Error(`${delivered} deliveries, not ${members * sends}`)
  process.stdout.write(JSON.stringify({ ns: (cpu.user + cpu.system) * 1000 / delivered, padded: padding.length }))
}

async function child (variant: string, lib: string, members: number, sends: number, pad: number): Promise<number> {
  return await nsInChild(new URL(import.meta.url).pathname, [`--variant=${variant}`, `--lib=${lib}`, `--members=${members}`, `--sends=${sends}`, `--pad=${pad}`], variant)
}

const here = new URL('../lib', import.meta.url).pathname
const lib = arg('lib') ?? here
const members = Number(arg('members') ?? 10_000)
const sends = Number(arg('sends') ?? 200)
const pad = Number(arg('pad') ?? 4096)
const variant = arg('variant')
if (variant !== undefined) {
  await measure(variant, lib, members, sends, pad)
} else {
  const other = arg('lib') !== undefined
  const variants: string[] = other ? ['plain', 'other', 'history', 'other-history'] : [...VARIANTS]
  const rounds = Number(arg('rounds') ?? 5)
  const results = new Map<string, number[]>(variants.map((v) => [v, []]))
  for (let round = 0; round < rounds; round++) {
    for (const v of variants.map((_, i) => variants[(i + round) % variants.length] as string)) {
      const ns = await child(v.replace(/^other-?/, '') || 'plain', v.startsWith('other') ? lib : here, members, sends, pad)
      results.get(v)?.push(ns)
    }
  }
  const base = median(results.get('plain') ?? [])
  process.stdout.write('| variant | CPU ns/delivery (median) | range | vs plain |\n| --- | ---: | ---: | ---: |\n')
  for (const [v, list] of results) {
    process.stdout.write(`| ${v} | ${median(list).toFixed(0)} | ${Math.min(...list).toFixed(0)}–${Math.max(...list).toFixed(0)} | ${(median(list) / base).toFixed(2)} |\n`)
  }
}
