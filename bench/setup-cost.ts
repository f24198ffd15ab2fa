// Set-up CPU and idle heap per connection, server by server, without the generators' noise of row D:
// `node --import tsx bench/setup-cost.ts [--against=<dir>] [--rounds=5] [--conns=500] [--idle=2000] [--prof]`.
// Each server is a `bench/server.ts` child (`realtime`, and `fastify-ws` and `raw-ws` for scale); with
// `--against=<dir>` (another checkout, `git worktree add /tmp/old <commit>`), that checkout's `realtime` runs too.
// The connections come from this process, 25 in flight; each round measures every server in turn (CPU from
// `process.cpuUsage()` in the server around `--conns` connections opened and closed), then the heap of `--idle`
// idle connections after forced GC. Medians over the rounds. `--prof` writes each server's --cpu-prof into
// bench/results/profiles/<server>/ (read them with bench/profile-top.mjs; the `.0.001` file is the main thread,
// the other tsx's loader thread).
import { fork, type ChildProcess } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { SECRET } from './shared.js'

const argv = process.argv.slice(2)
const flag = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const rounds = Number(flag('rounds') ?? 5)
const conns = Number(flag('conns') ?? 500)
const idle = Number(flag('idle') ?? 2000)
const against = flag('against')
const prof = argv.includes('--prof')
const here = resolve(import.meta.dirname, '..')
const profiles = resolve(here, 'bench/results/profiles')
if (prof) mkdirSync(profiles, { recursive: true })
const token = createSigner({ key: SECRET })({ sub: 'setup-cost' })

interface Server { name: string, child: ChildProcess, port: number }

async function next<T> (child: ChildProcess, key: string): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const onExit = (): void => { reject(new Error(`server exited waiting for ${key}`)) }
    const onMessage = (m: Record<string, unknown>): void => {
      if (!(key in m)) return
      child.off('message', onMessage)
      child.off('exit', onExit)
      resolve(m as T)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

async function start (name: string, dir: string, kind: string): Promise<Server> {
  const child = fork(resolve(dir, 'bench/server.ts'), [kind], {
    execArgv: ['--import', 'tsx', '--expose-gc', ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${profiles}/${name}`] : [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const { port } = await next<{ port: number }>(child, 'port')
  return { name, child, port }
}

async function open (s: Server): Promise<WebSocket> {
  const headers = s.name === 'raw-ws' ? {} : { authorization: `Bearer ${token}` }
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/rt`, { headers, perMessageDeflate: false })
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  ws.on('error', () => {})
  return ws
}

async function cpu (s: Server): Promise<number> {
  s.child.send({ cmd: 'cpu' })
  const { cpu } = await next<{ cpu: NodeJS.CpuUsage }>(s.child, 'cpu')
  return cpu.user + cpu.system
}

async function heap (s: Server): Promise<{ heap: number, connections: number }> {
  s.child.send({ cmd: 'heap' })
  return await next(s.child, 'heap')
}

/** µs of server CPU per connection opened and closed, 25 in flight. */
async function setupCost (s: Server): Promise<number> {
  const before = await cpu(s)
  let started = 0
  await Promise.all(Array.from({ length: 25 }, async () => {
    while (started < conns) {
      started++
      const ws = await open(s)
      await new Promise<void>((resolve) => { ws.once('close', () => { resolve() }); ws.close() })
    }
  }))
  // Let the server finish its side of the last closes.
  await new Promise((resolve) => setTimeout(resolve, 100))
  return (await cpu(s) - before) / conns
}

/** Heap bytes per idle connection. */
async function heapCost (s: Server): Promise<number> {
  const before = await heap(s)
  const sockets: WebSocket[] = []
  for (let i = 0; i < idle; i += 100) sockets.push(...await Promise.all(Array.from({ length: Math.min(100, idle - i) }, async () => await open(s))))
  await new Promise((resolve) => setTimeout(resolve, 200))
  const after = await heap(s)
  if (after.connections - before.connections !== idle) throw new Error(`${s.name}: ${after.connections - before.connections} connections counted`)
  await Promise.all(sockets.map(async (ws) => { await new Promise<void>((resolve) => { ws.once('close', () => { resolve() }); ws.close() }) }))
  await new Promise((resolve) => setTimeout(resolve, 200))
  return (after.heap - before.heap) / idle
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

const servers = [
  await start('raw-ws', here, 'raw-ws'),
  await start('fastify-ws', here, 'fastify-ws'),
  await start('realtime', here, 'realtime'),
  ...(against === undefined ? [] : [await start('realtime-against', resolve(against), 'realtime')])
]
const results = new Map(servers.map((s) => [s.name, { cpu: [] as number[], heap: [] as number[] }]))
// A warm-up round, not counted: the first connections compile the code.
for (const s of servers) await setupCost(s)
for (let round = 0; round < rounds; round++) {
  // Turned every round, so that no server is always first.
  const order = servers.map((_, i) => servers[(i + round) % servers.length] as Server)
  for (const s of order) results.get(s.name)?.cpu.push(await setupCost(s))
  for (const s of order) results.get(s.name)?.heap.push(await heapCost(s))
}
for (const s of servers) {
  const r = results.get(s.name) as { cpu: number[], heap: number[] }
  process.stdout.write(`${s.name.padEnd(18)} set-up ${median(r.cpu).toFixed(1).padStart(6)} µs/conn (${r.cpu.map((x) => x.toFixed(0)).join(' ')})  heap ${median(r.heap).toFixed(0).padStart(6)} B/conn (${r.heap.map((x) => x.toFixed(0)).join(' ')})\n`)
}
for (const s of servers) s.child.disconnect()
