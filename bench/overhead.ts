// `node --import tsx bench/overhead.ts [--lib=<dir with index.ts>] [--rounds=5] [--messages=300000]`: what metrics and
// tracing add to the dispatcher, per message, measured in-process without the network: the frames of the echo
// workload go through `handleFrame` (decode, schema check, handler, reply, counters) to a socket that accepts and
// discards, in a fresh process per variant, the variants in turn, rounds apart. `--lib` compares another copy of
// lib/ (an older commit's, say) as the variant `other`.
import diagnostics from 'node:diagnostics_channel'
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { median, nsInChild } from './shared.js'

const VARIANTS = ['off', 'metrics', 'tracing', 'both'] as const
const argv = process.argv.slice(2)
const arg = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

/** One variant, in this process: ns of CPU per message, as JSON on stdout. */
async function measure (variant: string, lib: string, messages: number): Promise<void> {
  const { Type } = await import('@sinclair/typebox')
  const { TypeCompiler } = await import('@sinclair/typebox/compiler')
  const { handleFrame } = await import(`${lib}/dispatch.js`)
  const { Connection } = await import(`${lib}/connection.js`)
  const { Registry } = await import(`${lib}/registry.js`)
  const { memoryBroker } = await import(`${lib}/broker/memory.js`)
  const { resolveOptions } = await import(`${lib}/options.js`)
  const metered = variant === 'metrics' || variant === 'both'
  const meter = metered ? new (await import(`${lib}/meter.js`)).InstanceMeter({ handler: [0.001, 0.01, 0.1, 1], ping: [1], lag: [1] }) : undefined
  if (variant === 'tracing' || variant === 'both') {
    // The least an APM does: a start time, a duration at the end.
    const noop = (): void => {}
    diagnostics.tracingChannel('fastify-realtime:message').subscribe({
      start: (c: any) => { c.startedAt = performance.now() },
      end: (c: any) => { c.took = performance.now() - c.startedAt },
      asyncStart: noop,
      asyncEnd: noop,
      error: noop
    })
  }
  const options = resolveOptions({ limits: { rate: 1e9, burst: 1e9, byteRate: 1e12 } })
  const registry = new Registry(memoryBroker(), undefined, () => {})
  registry.meter = meter
  const schema = Type.Object({ text: Type.String({ maxLength: 200 }), n: Type.Integer(), tags: Type.Array(Type.String()) })
  const routeMeter = meter?.route('/rt', ['echo'])
  const route = {
    url: '/rt',
    path: '/rt',
    meter: routeMeter,
    messages: new Map([['echo', { check: TypeCompiler.Compile(schema), handler: (d: unknown) => d, meter: routeMeter?.type('echo') }]]),
    binary: undefined,
    auth: false
  }
  const socket = { readyState: 1, bufferedAmount: 0, send () {}, _socket: { cork () {}, uncork () {} } }
  const ctx = { app: undefined, registry, limits: options.limits }
  // The connection reads its registry and limits from the context, its metrics from the route.
  const conn = new Connection(socket, { log: undefined }, null, undefined, ctx, route)
  const frames = Array.from({ length: 64 }, (_, i) => Buffer.from(JSON.stringify({ type: 'echo', data: { text: 'a message of about a hundred bytes', n: i, tags: ['x', 'y'] }, id: i })))
  const run = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      handleFrame(ctx, route, conn, frames[i & 63], false)
      if ((i & 1023) === 1023) await yieldToLoop()
    }
  }
  await run(50_000)
  const before = process.cpuUsage()
  await run(messages)
  const cpu = process.cpuUsage(before)
  if (registry.counters.messagesOut < messages) throw new Error('replies were not sent')
  process.stdout.write(JSON.stringify({ ns: (cpu.user + cpu.system) * 1000 / messages }))
}

async function child (variant: string, lib: string, messages: number): Promise<number> {
  return await nsInChild(new URL(import.meta.url).pathname, [`--variant=${variant}`, `--lib=${lib}`, `--messages=${messages}`], variant)
}

const lib = arg('lib') ?? new URL('../lib', import.meta.url).pathname
const messages = Number(arg('messages') ?? 300_000)
const variant = arg('variant')
if (variant !== undefined) {
  await measure(variant, lib, messages)
} else {
  const other = arg('lib') !== undefined
  const variants: string[] = other ? ['off', 'other'] : [...VARIANTS]
  const rounds = Number(arg('rounds') ?? 5)
  const results = new Map<string, number[]>(variants.map((v) => [v, []]))
  for (let round = 0; round < rounds; round++) {
    for (const v of variants.map((_, i) => variants[(i + round) % variants.length] as string)) {
      const ns = await child(v === 'other' ? 'off' : v, v === 'other' ? lib : new URL('../lib', import.meta.url).pathname, messages)
      results.get(v)?.push(ns)
    }
  }
  const base = median(results.get('off') ?? [])
  process.stdout.write('| variant | CPU ns/message (median) | range | vs off |\n| --- | ---: | ---: | ---: |\n')
  for (const [v, list] of results) {
    process.stdout.write(`| ${v} | ${median(list).toFixed(0)} | ${Math.min(...list).toFixed(0)}–${Math.max(...list).toFixed(0)} | ${(median(list) / base).toFixed(2)} |\n`)
  }
}
