// The workloads, each run against one server process and driven by the generator pool. Every figure a server
// contributes (CPU time, heap) is read inside that server and sent over IPC.
import type { ChildProcess } from 'node:child_process'
import { command, expect, sleep, spawn, stop } from './children.js'

export type Kind = 'raw-ws' | 'raw-ws-preframed' | 'fastify-ws' | 'fastify-ws-open' | 'minimal' | 'realtime' | 'socket.io' | 'realtime-redis' | 'realtime-history' | 'realtime-history-redis' | 'realtime-observed' | 'realtime-rooms' | 'realtime-stream' | 'socket.io-polling'

export interface Sizes {
  repeats: number
  /** A and D run in this many rounds, every server in turn in each round, so that load from elsewhere hits all alike. */
  rounds: number
  /** A: connections (split over `echoGenerators`), requests in flight on each, and how long in all (over the rounds). */
  echoConns: number
  inflight: number
  echoMs: number
  echoGenerators: number
  /** B: room members (split over `memberGenerators`), and fan-outs measured after one warm-up. */
  members: number
  memberGenerators: number
  fires: number
  /** C: idle connections. */
  idle: number
  /** D: connections opened and closed (over the rounds), and how many at a time (split over `setupGenerators`). */
  setupTotal: number
  setupConcurrency: number
  setupGenerators: number
  /** E: clients coming back at once, and the events each missed (and recovers, on a history room). */
  stormClients: number
  stormEvents: number
  /**
   * G, over the HTTP-streaming fallback and socket.io's long-polling: the echo's connections, requests in flight on
   * each and time (as A's, in `rounds` rounds, over `echoGenerators`), and the fan-out's members and sends (as B's,
   * over `fallbackMemberGenerators`).
   */
  fallbackConns: number
  fallbackInflight: number
  fallbackMs: number
  fallbackMembers: number
  fallbackMemberGenerators: number
  fallbackFires: number
  /** The longest wait for one answer, and for opening many connections. */
  stepMs: number
  connectMs: number
}

/**
 * One workload's figure for one server in one repeat; `cpu` is the server's CPU µs per unit of work; `perBatch`, in
 * G's echo over the fallback, the messages a POSTed batch carried on average.
 */
export interface Measurement { value: number, cpu?: number, perBatch?: number }

/**
 * A share of a throughput workload: units of work (messages, connections) done in `seconds`, costing `cpu` µs;
 * `batches`, the fallback's POSTs that carried them.
 */
export interface Slice { units: number, seconds: number, cpu: number, batches?: number }

/** Units a second, and CPU µs per unit, over all the slices. */
export function fromSlices (slices: Slice[]): Measurement {
  const units = slices.reduce((n, s) => n + s.units, 0)
  const batches = slices.reduce((n, s) => n + (s.batches ?? 0), 0)
  return { value: units / slices.reduce((n, s) => n + s.seconds, 0), cpu: slices.reduce((n, s) => n + s.cpu, 0) / units, ...(batches > 0 ? { perBatch: units / batches } : {}) }
}

/** A server under test: `slot` names the row (`realtime-redis` runs the `realtime` protocol). */
export interface Target { slot: Kind, kind: Kind, server: Server }

/** The list turned by `by` places: each repeat and round starts with another server. */
export function turn<T> (list: readonly T[], by: number): T[] {
  return list.map((_, i) => list[(i + by) % list.length] as T)
}

/** A server process and its port. */
export interface Server { child: ChildProcess, port: number }

async function cpuOf (s: Server, ms: number): Promise<number> {
  command(s.child, { cmd: 'cpu' })
  const { cpu } = await expect<{ cpu: NodeJS.CpuUsage }>(s.child, 'cpu', ms)
  return cpu.user + cpu.system
}

async function heapOf (s: Server, ms: number): Promise<{ heap: number, connections: number }> {
  command(s.child, { cmd: 'heap' })
  return await expect(s.child, 'heap', ms)
}

const alive = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null

/** Load generators, started once for the whole run; one that failed a step is replaced by a fresh process. */
export class GeneratorPool {
  private readonly generators: Array<{ child: ChildProcess, started: Promise<unknown> }> = []
  constructor (private readonly stepMs: number) {}

  /**
   * Runs `step` with `count` generators. Afterwards they close every connection they hold; if the step failed they
   * are stopped instead, so that nothing they still send can be mistaken for an answer in the next step.
   */
  async use<T> (count: number, step: (generators: [ChildProcess, ...ChildProcess[]]) => Promise<T>): Promise<T> {
    for (let i = 0; i < count; i++) {
      const g = this.generators[i]
      if (g !== undefined && alive(g.child)) continue
      const child = spawn('./load.ts', [], ['--expose-gc'])
      this.generators[i] = { child, started: expect(child, 'started', this.stepMs) }
    }
    const taken = this.generators.slice(0, count)
    const generators = taken.map((g) => g.child)
    let result: T
    try {
      await Promise.all(taken.map(async (g) => await g.started))
      result = await step(generators as [ChildProcess, ...ChildProcess[]])
    } catch (err) {
      await Promise.all(generators.map(async (g) => { await stop(g) }))
      throw err
    }
    await Promise.all(generators.map(async (g) => {
      command(g, { cmd: 'reset' })
      await expect(g, 'reset', this.stepMs)
    }))
    return result
  }

  async close (): Promise<void> {
    await Promise.all(this.generators.map(async (g) => { await stop(g.child) }))
  }
}

function run (g: ChildProcess, mode: string, kind: string, port: number, args: number[], group?: string): void {
  command(g, { cmd: 'run', mode, kind, port, args, group })
}

/**
 * A: echo throughput, and the server's CPU µs per message (one request and its reply). Every target gets its
 * connections first; then `rounds` rounds, each giving every target a slice of `echoMs` in turn, the server's CPU
 * time read just before and after its slice.
 */
export async function echo (pool: GeneratorPool, targets: Target[], sizes: Sizes): Promise<Map<Kind, Measurement>> {
  return await pool.use(sizes.echoGenerators, async (generators) => {
    const per = Math.ceil(sizes.echoConns / generators.length)
    for (const t of targets) {
      for (const g of generators) run(g, 'connect', t.kind, t.server.port, [per], t.slot)
      await Promise.all(generators.map(async (g) => await expect(g, 'ready', sizes.connectMs)))
    }
    const slices = new Map<Kind, Slice[]>(targets.map((t) => [t.slot, []]))
    const sliceMs = sizes.echoMs / sizes.rounds
    for (let round = 0; round < sizes.rounds; round++) {
      for (const t of turn(targets, round)) {
        const before = await cpuOf(t.server, sizes.stepMs)
        for (const g of generators) run(g, 'echo', t.kind, t.server.port, [sizes.inflight, sliceMs], t.slot)
        const reports = await Promise.all(generators.map(async (g) => await expect<{ messages: number, seconds: number, batches: number }>(g, 'messages', sliceMs + sizes.stepMs)))
        const after = await cpuOf(t.server, sizes.stepMs)
        slices.get(t.slot)?.push({ units: reports.reduce((n, r) => n + r.messages, 0), seconds: Math.max(...reports.map((r) => r.seconds)), cpu: after - before, batches: reports.reduce((n, r) => n + r.batches, 0) })
      }
    }
    return new Map(targets.map((t) => [t.slot, fromSlices(slices.get(t.slot) ?? [])]))
  })
}

/**
 * B: one message to every member of a room, from the send to the last receipt (the median over `fires`, after a
 * warm-up), and the servers' CPU µs per delivered message. Members alternate between the servers; the sender is on
 * the first.
 */
export async function fanout (pool: GeneratorPool, servers: Server[], wire: string, sizes: Sizes): Promise<Measurement> {
  return await pool.use(sizes.memberGenerators, async (generators) => {
    const per = Math.ceil(sizes.members / generators.length)
    const total = per * generators.length
    generators.forEach((g, i) => { run(g, 'members', wire, (servers[i % servers.length] as Server).port, [per, i === 0 ? 1 : 0]) })
    await Promise.all(generators.map(async (g) => await expect(g, 'ready', sizes.connectMs)))
    await sleep(200)
    const first = generators[0]
    const times: number[] = []
    let cpu = 0
    for (let f = 0; f <= sizes.fires; f++) {
      await Promise.all(generators.map(async (g) => {
        command(g, { cmd: 'arm' })
        await expect(g, 'armed', sizes.stepMs)
      }))
      const before = await Promise.all(servers.map(async (s) => await cpuOf(s, sizes.stepMs)))
      command(first, { cmd: 'fire' })
      const { fired } = await expect<{ fired: number }>(first, 'fired', sizes.stepMs)
      // The generators timed each receipt themselves; ask them until each has it for all its members (or 10 s went by).
      const until = Date.now() + 10_000
      let reports: Array<{ last: number, received: number }>
      do {
        await sleep(20)
        reports = await Promise.all(generators.map(async (g) => {
          command(g, { cmd: 'report' })
          return await expect<{ last: number, received: number }>(g, 'last', sizes.stepMs)
        }))
      } while (reports.some((r) => r.received < per) && Date.now() < until)
      const received = reports.reduce((n, r) => n + r.received, 0)
      if (received !== total) throw new Error(`${wire}: ${received} deliveries to ${total} members (after 10 s at most)`)
      const after = await Promise.all(servers.map(async (s) => await cpuOf(s, sizes.stepMs)))
      if (f === 0) continue
      times.push(Math.max(...reports.map((r) => r.last)) - fired)
      cpu += after.reduce((n, a, i) => n + a - (before[i] as number), 0)
    }
    return { value: median(times), cpu: cpu / (sizes.fires * total) }
  })
}

/** C: the server's heap per idle connection, after forced GC. */
export async function heap (pool: GeneratorPool, s: Server, kind: Kind, sizes: Sizes): Promise<Measurement> {
  return await pool.use(1, async ([g]) => {
    const before = await heapOf(s, sizes.stepMs)
    run(g, 'idle', kind, s.port, [sizes.idle])
    await expect(g, 'ready', sizes.connectMs)
    await sleep(200)
    const after = await heapOf(s, sizes.stepMs)
    const opened = after.connections - before.connections
    if (opened !== sizes.idle) throw new Error(`${kind}: the server counts ${opened} connections, not ${sizes.idle}`)
    return { value: (after.heap - before.heap) / sizes.idle }
  })
}

/** D: a slice of the set-up: `total` connections opened and closed, and the server's CPU µs for them. */
export async function setup (pool: GeneratorPool, s: Server, kind: Kind, sizes: Sizes, total: number): Promise<Slice> {
  return await pool.use(sizes.setupGenerators, async (generators) => {
    const each = Math.ceil(total / generators.length)
    const concurrency = Math.ceil(sizes.setupConcurrency / generators.length)
    const before = await cpuOf(s, sizes.stepMs)
    for (const g of generators) run(g, 'setup', kind, s.port, [each, concurrency])
    const reports = await Promise.all(generators.map(async (g) => await expect<{ ok: number, seconds: number, firstError?: string }>(g, 'ok', sizes.connectMs)))
    const after = await cpuOf(s, sizes.stepMs)
    const ok = reports.reduce((n, r) => n + r.ok, 0)
    const failed = each * generators.length - ok
    if (failed > 0) throw new Error(`${kind}: ${failed} of ${each * generators.length} connections failed (${reports.find((r) => r.firstError !== undefined)?.firstError ?? '?'})`)
    return { units: ok, seconds: Math.max(...reports.map((r) => r.seconds)), cpu: after - before }
  })
}

/**
 * E: a reconnect storm. One connection joins the room and fans out `stormEvents` events; then `stormClients`
 * connections open at once, each (on a history room) sending the position it had before them in `rt.resume`, and
 * joining; the figure is the ms until every join was answered (after its replay, on a history room).
 */
export async function storm (pool: GeneratorPool, s: Server, kind: Kind, sizes: Sizes): Promise<Measurement> {
  return await pool.use(1, async ([g]) => {
    const before = await cpuOf(s, sizes.stepMs)
    run(g, 'storm', kind, s.port, [sizes.stormClients, sizes.stormEvents])
    const { ms, recovered } = await expect<{ ms: number, recovered: number }>(g, 'ms', sizes.connectMs)
    const after = await cpuOf(s, sizes.stepMs)
    if (kind.startsWith('realtime-history') && recovered !== sizes.stormClients) throw new Error(`${kind}: ${recovered} of ${sizes.stormClients} clients recovered`)
    return { value: ms, cpu: (after - before) / sizes.stormClients }
  })
}

export function median (xs: number[]): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}
