// `npm run bench [-- --quick]`: every server in its own process, driven by load generators in others, each
// workload repeated; prints medians as ratios to raw ws from the same repeat, and writes bench/results/*.json.
import { fork, type ChildProcess } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { randomBytes } from 'node:crypto'

const quick = process.argv.includes('--quick')
const withRedis = !process.argv.includes('--no-redis')
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const sizes = quick
  ? { repeats: 1, echoConns: 50, inflight: 16, echoMs: 800, members: 600, generators: 2, fires: 2, idle: 200, setupTotal: 200, setupConcurrency: 25 }
  : { repeats: 3, echoConns: 100, inflight: 16, echoMs: 4000, members: 10000, generators: 4, fires: 5, idle: 2000, setupTotal: 2000, setupConcurrency: 50 }
const KINDS = ['raw-ws', 'fastify-ws', 'minimal', 'realtime', 'socket.io'] as const
type Kind = typeof KINDS[number] | 'realtime-redis'
const deadline = Date.now() + (quick ? 60_000 : 600_000)
const children = new Set<ChildProcess>()
process.on('exit', () => { for (const c of children) c.kill('SIGKILL') })

function spawn (file: string, args: string[], execArgv: string[] = []): ChildProcess {
  const child = fork(new URL(file, import.meta.url), args, { execArgv: ['--import', 'tsx', ...execArgv], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(child)
  child.on('exit', () => { children.delete(child) })
  return child
}

/** The next IPC message that has `key`, or a failure after `ms`. */
async function expect<T> (child: ChildProcess, key: string, ms = 60_000): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no "${key}" from ${child.spawnargs.slice(-4).join(' ')} in ${ms} ms`)) }, Math.min(ms, Math.max(1000, deadline - Date.now())))
    const onMessage = (m: Record<string, unknown>): void => { if (key in m) { cleanup(); resolve(m as T) } }
    const onExit = (): void => { cleanup(); reject(new Error(`${child.spawnargs.slice(-4).join(' ')} exited`)) }
    const cleanup = (): void => { clearTimeout(timer); child.off('message', onMessage); child.off('exit', onExit) }
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
}

interface Server { child: ChildProcess, port: number }
async function server (kind: string, args: string[] = []): Promise<Server> {
  const child = spawn('./server.ts', [kind, ...args], ['--expose-gc'])
  const { port } = await expect<{ port: number }>(child, 'port')
  return { child, port }
}
async function measure (s: Server): Promise<{ cpu: NodeJS.CpuUsage, heap: number, connections: number }> {
  s.child.send({ cmd: 'measure' })
  return await expect(s.child, 'cpu')
}
const cpuMicros = (a: NodeJS.CpuUsage, b: NodeJS.CpuUsage): number => (b.user - a.user) + (b.system - a.system)

/** A: echo throughput, and the server's CPU per message. */
async function echo (kind: Kind): Promise<{ rate: number, cpuPerMessage: number }> {
  const s = await server(kind)
  try {
    // Two generator processes, so that the server, not one generator's event loop, is what runs out of CPU.
    const generators = 2
    const before = await measure(s)
    const loads = Array.from({ length: generators }, () => spawn('./load.ts', ['echo', kind, String(s.port), String(sizes.echoConns / generators), String(sizes.inflight), String(sizes.echoMs)]))
    const reports = await Promise.all(loads.map(async (load) => await expect<{ messages: number, seconds: number }>(load, 'messages')))
    const after = await measure(s)
    for (const load of loads) await stop(load)
    const messages = reports.reduce((n, r) => n + r.messages, 0)
    const seconds = Math.max(...reports.map((r) => r.seconds))
    return { rate: messages / seconds, cpuPerMessage: cpuMicros(before.cpu, after.cpu) / messages }
  } finally { await stop(s.child) }
}

/** B: one message to every member of a room, from the send to the last receipt. */
async function fanout (kind: Kind): Promise<{ ms: number, received: number }> {
  const prefix = `rt-bench-${randomBytes(3).toString('hex')}:`
  const servers = kind === 'realtime-redis'
    ? [await server('realtime', [REDIS_URL, prefix]), await server('realtime', [REDIS_URL, prefix])]
    : [await server(kind)]
  const wire = kind === 'realtime-redis' ? 'realtime' : kind
  const generators: ChildProcess[] = []
  try {
    const per = Math.ceil(sizes.members / sizes.generators)
    for (let g = 0; g < sizes.generators; g++) {
      // Members alternate between the instances; the trigger sits on the first.
      const target = servers[g % servers.length] as Server
      generators.push(spawn('./load.ts', ['members', wire, String(target.port), String(per), g === 0 ? '1' : '0']))
    }
    await Promise.all(generators.map(async (g) => await expect(g, 'ready', 120_000)))
    await new Promise((resolve) => setTimeout(resolve, 100))
    const times: number[] = []
    let received = 0
    for (let f = 0; f < sizes.fires; f++) {
      const first = generators[0] as ChildProcess
      first.send({ cmd: 'fire' })
      const { fired } = await expect<{ fired: number }>(first, 'fired')
      // Ask until every member has it (or 10 s went by); the receipt times were taken by the generators themselves.
      const until = Date.now() + 10_000
      let reports: Array<{ last: number, received: number }> = []
      do {
        await new Promise((resolve) => setTimeout(resolve, 25))
        reports = await Promise.all(generators.map(async (g) => { g.send({ cmd: 'report' }); return await expect<{ last: number, received: number }>(g, 'last') }))
        received = reports.reduce((n, r) => n + r.received, 0)
      } while (received < per * sizes.generators && Date.now() < until)
      if (received < per * sizes.generators) throw new Error(`${kind}: only ${received} of ${per * sizes.generators} members got the fan-out`)
      times.push(Math.max(...reports.map((r) => r.last)) - fired)
    }
    return { ms: median(times), received }
  } finally {
    for (const g of generators) await stop(g)
    for (const s of servers) await stop(s.child)
  }
}

/** C: heap per idle connection, after GC. */
async function heap (kind: Kind): Promise<{ bytesPerConnection: number }> {
  const s = await server(kind)
  try {
    const before = await measure(s)
    const load = spawn('./load.ts', ['idle', kind, String(s.port), String(sizes.idle)])
    await expect(load, 'ready', 120_000)
    await new Promise((resolve) => setTimeout(resolve, 100))
    const after = await measure(s)
    await stop(load)
    return { bytesPerConnection: (after.heap - before.heap) / sizes.idle }
  } finally { await stop(s.child) }
}

/** D: connections set up a second (with a JWT checked before the upgrade for fastify-ws and realtime). */
async function setup (kind: Kind): Promise<{ rate: number }> {
  const s = await server(kind)
  try {
    const load = spawn('./load.ts', ['setup', kind, String(s.port), String(sizes.setupTotal), String(sizes.setupConcurrency)])
    const { ok, seconds } = await expect<{ ok: number, seconds: number }>(load, 'ok', 120_000)
    await stop(load)
    return { rate: ok / seconds }
  } finally { await stop(s.child) }
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

interface Row { workload: string, kind: Kind, value: number, ratio: number, cpu?: number }
const results: Array<{ repeat: number, workload: string, kind: Kind, value: number, cpu?: number }> = []
const workloads: Array<[string, Kind[], (k: Kind) => Promise<{ value: number, cpu?: number }>]> = [
  ['A echo msgs/s', [...KINDS], async (k) => { const r = await echo(k); return { value: r.rate, cpu: r.cpuPerMessage } }],
  ['B fan-out ms', ['raw-ws', 'realtime', 'socket.io', ...(withRedis ? ['realtime-redis' as const] : [])], async (k) => ({ value: (await fanout(k)).ms })],
  ['C heap B/conn', ['raw-ws', 'fastify-ws', 'minimal', 'realtime', 'socket.io'], async (k) => ({ value: (await heap(k)).bytesPerConnection })],
  ['D setup conns/s', ['raw-ws', 'fastify-ws', 'realtime', 'socket.io'], async (k) => ({ value: (await setup(k)).rate })]
]

// `--only A,C` runs just those workloads (for profiling one thing).
const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7).split(',')
if (only !== undefined) workloads.splice(0, workloads.length, ...workloads.filter(([name]) => only.includes(name.slice(0, 1))))
const started = Date.now()
for (let repeat = 0; repeat < sizes.repeats; repeat++) {
  for (const [workload, kinds, run] of workloads) {
    for (const kind of kinds) {
      if (Date.now() > deadline) throw new Error('the benchmark ran out of its time budget')
      const r = await run(kind)
      results.push({ repeat, workload, kind, ...r })
      process.stderr.write(`  repeat ${repeat + 1}/${sizes.repeats} ${workload} ${kind}: ${r.value.toFixed(1)}${r.cpu !== undefined ? ` (${r.cpu.toFixed(1)} µs CPU/msg)` : ''}\n`)
    }
  }
}

const rows: Row[] = []
for (const [workload, kinds] of workloads) {
  for (const kind of kinds) {
    const mine = results.filter((r) => r.workload === workload && r.kind === kind)
    const ratios = mine.map((r) => r.value / (results.find((x) => x.workload === workload && x.kind === 'raw-ws' && x.repeat === r.repeat)?.value ?? NaN))
    const cpus = mine.flatMap((r) => r.cpu === undefined ? [] : [r.cpu])
    rows.push({ workload, kind, value: median(mine.map((r) => r.value)), ratio: median(ratios), ...(cpus.length > 0 ? { cpu: median(cpus) } : {}) })
  }
}
const date = new Date().toISOString()
const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`
const lines = [`fastify-realtime benchmark, ${date}, ${machine}, ${quick ? 'quick' : 'full'} (${sizes.repeats} repeats, medians; ratio = value / raw ws in the same repeat)`, '',
  '| workload | server | median | ratio to raw ws | server CPU µs/msg |', '| --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${r.workload} | ${r.kind} | ${r.value.toFixed(r.value < 100 ? 1 : 0)} | ${r.ratio.toFixed(2)} | ${r.cpu === undefined ? '' : r.cpu.toFixed(1)} |`)]
process.stdout.write(lines.join('\n') + `\n\n(${((Date.now() - started) / 1000).toFixed(0)} s)\n`)
const dir = new URL('./results/', import.meta.url)
await mkdir(dir, { recursive: true })
const json = JSON.stringify({ date, machine, quick, sizes, rows, results }, null, 2)
await writeFile(new URL(`${date.replace(/[:.]/g, '-')}.json`, dir), json)
await writeFile(new URL('latest.json', dir), json)
await writeFile(new URL('latest.md', dir), lines.join('\n') + '\n')
process.exit(0)
