// F: fan-out across three fastify-realtime instances over one Redis, against three over a 3-master Redis Cluster on
// sharded pub/sub (issue 16). Both setups are started by the run itself (nothing touches another Redis), connected
// side by side, and measured in alternating rounds, so that each ratio compares figures taken seconds apart.
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, rmSync } from 'node:fs'
import { Redis } from 'ioredis'
import { command, expect, sleep, spawn, stop } from './children.js'
import type { GeneratorPool } from './workloads.js'
import { startRedisServer, hasRedisServerBinary, type RedisServer } from '../test/helpers/redis-server.js'
import { startRedisCluster, type TestRedisCluster } from '../test/helpers/redis-cluster.js'
import { clusterTable, type ClusterRound, type Setup } from './cluster-report.js'

/** F's sizes; `--sizes='{"perRoom":30}'` overrides any of them. */
export interface ClusterSizes {
  /** Rooms, and members in each (spread over the three instances of a setup). */
  rooms: number
  perRoom: number
  /** Rounds; each gives both setups `sliceMs` of publishing, in turn. */
  rounds: number
  sliceMs: number
  /** The publisher's connections to each instance, and requests to publish in flight on each. */
  publishConnections: number
  inflight: number
  /** Generators holding the members (one more publishes). */
  memberGenerators: number
  stepMs: number
  connectMs: number
}

/** A full F: 20,000 members in all (10,000 a setup), about 1.5 minutes. */
export const CLUSTER_SIZES: ClusterSizes = { rooms: 1000, perRoom: 10, rounds: 6, sliceMs: 4000, publishConnections: 2, inflight: 32, memberGenerators: 3, stepMs: 30_000, connectMs: 120_000 }
/** `--quick --only=F`: a smoke test in about half a minute. */
export const CLUSTER_QUICK: ClusterSizes = { ...CLUSTER_SIZES, rooms: 200, perRoom: 5, rounds: 2, sliceMs: 1500, memberGenerators: 2, stepMs: 15_000, connectMs: 30_000 }

/** One setup: its Redis node(s), read for CPU, and its three instances. */
interface Running { setup: Setup, redis: Redis[], instances: Array<{ child: ChildProcess, port: number }> }

/** Redis CPU seconds (user + system, every thread) so far, from INFO CPU, in µs. */
async function redisCpu (redis: Redis): Promise<number> {
  const info = await redis.info('cpu')
  const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN)
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1e6
}

/** The whole machine's busy CPU time so far (every process, ours or not), in µs; NaN off Linux. */
function machineBusy (): number {
  try {
    const fields = (/^cpu\s+(.*)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? '').trim().split(/\s+/).map(Number)
    // user nice system idle iowait irq softirq steal: all but idle and iowait, in clock ticks (100 a second).
    const busy = fields.slice(0, 8).reduce((n, x, i) => i === 3 || i === 4 ? n : n + x, 0)
    return busy * 1e4
  } catch {
    return Number.NaN
  }
}

async function instanceCpu (child: ChildProcess, ms: number): Promise<number> {
  command(child, { cmd: 'cpu' })
  const { cpu } = await expect<{ cpu: NodeJS.CpuUsage }>(child, 'cpu', ms)
  return cpu.user + cpu.system
}

async function startInstances (url: string, sizes: ClusterSizes): Promise<Running['instances']> {
  const prefix = `rt-bench-f-${randomBytes(3).toString('hex')}:`
  return await Promise.all([0, 1, 2].map(async () => {
    const child = spawn('./server.ts', ['realtime-rooms', url, prefix], ['--expose-gc'])
    const { port } = await expect<{ port: number }>(child, 'port', sizes.stepMs)
    return { child, port }
  }))
}

/** What the member generators have received, by setup, and their CPU µs. */
async function counts (members: ChildProcess[], ms: number): Promise<{ single: number, cluster: number, cpu: number }> {
  const all = await Promise.all(members.map(async (g) => {
    command(g, { cmd: 'counts' })
    return await expect<{ counts: Record<string, number>, cpu: number }>(g, 'counts', ms)
  }))
  return all.reduce((sum, c) => ({ single: sum.single + (c.counts.single ?? 0), cluster: sum.cluster + (c.counts.cluster ?? 0), cpu: sum.cpu + c.cpu }), { single: 0, cluster: 0, cpu: 0 })
}

/** One setup's slice of a round: publishing for `sliceMs`, then the drain until the counts stand still. */
async function slice (run: Running, members: ChildProcess[], publisher: ChildProcess, sizes: ClusterSizes, round: number): Promise<ClusterRound> {
  const redisBefore = await Promise.all(run.redis.map(redisCpu))
  const instancesBefore = await Promise.all(run.instances.map(async (i) => await instanceCpu(i.child, sizes.stepMs)))
  const before = await counts(members, sizes.stepMs)
  const machineBefore = machineBusy()
  const started = performance.now()
  command(publisher, { cmd: 'run', mode: 'publish', kind: 'realtime', port: 0, args: [sizes.rooms, sizes.publishConnections, sizes.inflight, sizes.sliceMs, ...run.instances.map((i) => i.port)] })
  const pub = await expect<{ published: number, seconds: number, cpu: number }>(publisher, 'published', sizes.sliceMs + sizes.stepMs)
  const after = await counts(members, sizes.stepMs)
  const seconds = (performance.now() - started) / 1000
  const machine = machineBusy() - machineBefore
  const redisAfter = await Promise.all(run.redis.map(redisCpu))
  const instancesAfter = await Promise.all(run.instances.map(async (i) => await instanceCpu(i.child, sizes.stepMs)))
  // What was published reaches the members a little later: wait until two reads 200 ms apart agree (5 s at most).
  let last = after[run.setup]
  for (const until = Date.now() + 5000; Date.now() < until;) {
    await sleep(200)
    const now = (await counts(members, sizes.stepMs))[run.setup]
    if (now === last) break
    last = now
  }
  return {
    round,
    setup: run.setup,
    seconds,
    deliveries: after[run.setup] - before[run.setup],
    expected: pub.published * sizes.perRoom,
    delivered: last - before[run.setup],
    published: pub.published,
    redisCpu: redisAfter.map((a, i) => a - (redisBefore[i] as number)),
    instancesCpu: instancesAfter.reduce((n, a, i) => n + a - (instancesBefore[i] as number), 0),
    generatorsCpu: after.cpu - before.cpu + pub.cpu,
    machineCpu: machine
  }
}

/**
 * Runs F: starts a Redis and a 3-master cluster of its own, three instances on each, the members of every room on
 * both, a warm-up slice each, then `rounds` rounds of a slice per setup (the order turning every round). Everything
 * it started is stopped before it returns or throws.
 */
export async function clusterFanout (pool: GeneratorPool, sizes: ClusterSizes, progress: (line: string) => void): Promise<{ lines: string[], rounds: ClusterRound[], notes: string[] }> {
  if (!hasRedisServerBinary()) return { lines: [], rounds: [], notes: ['F skipped: redis-server is not on the PATH (it starts a Redis and a Redis Cluster of its own)'] }
  let single: RedisServer | undefined
  let cluster: TestRedisCluster | undefined
  const runs: Running[] = []
  let removeOnExit: (() => void) | undefined
  try {
    [single, cluster] = await Promise.all([startRedisServer(), startRedisCluster({ masters: 3, replicas: 0 })])
    const clusterUrl = `cluster:${cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`
    const redisOf = (port: number): Redis => new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 })
    const [a, b] = await Promise.all([startInstances(single.url, sizes), startInstances(clusterUrl, sizes)])
    runs.push({ setup: 'single', redis: [redisOf(single.port)], instances: a }, { setup: 'cluster', redis: cluster.servers.map((s) => redisOf(s.port)), instances: b })
    // The cluster's node files: removed by stop(), and here too should the run be cut short (a signal, the hard stop).
    const [, dir] = await (runs[1]?.redis[0] as Redis).config('GET', 'dir') as [string, string]
    removeOnExit = () => { rmSync(dir, { recursive: true, force: true }) }
    process.once('exit', removeOnExit)
    progress(`F: a Redis on ${single.port}, a cluster on ${cluster.nodes.map((n) => n.port).join(', ')}, three instances on each`)
    return await pool.use(sizes.memberGenerators + 1, async (generators) => {
      const members = generators.slice(0, sizes.memberGenerators)
      const publisher = generators[sizes.memberGenerators] as ChildProcess
      const per = Math.ceil(sizes.rooms / members.length)
      for (const run of runs) {
        members.forEach((g, i) => {
          const from = i * per
          command(g, { cmd: 'run', mode: 'roomMembers', kind: 'realtime', port: 0, group: run.setup, args: [from, Math.min(sizes.rooms, from + per), sizes.perRoom, ...run.instances.map((x) => x.port)] })
        })
        await Promise.all(members.map(async (g) => await expect(g, 'ready', sizes.connectMs)))
        progress(`F: ${sizes.rooms} rooms × ${sizes.perRoom} members connected to the ${run.setup} setup`)
      }
      for (const run of runs) await slice(run, members, publisher, { ...sizes, sliceMs: Math.min(1000, sizes.sliceMs) }, -1)
      // What each Redis node costs with nothing published (a cluster's nodes ping each other on the cluster bus).
      const idleMs = 2000
      const idleBefore = await Promise.all(runs.map(async (run) => await Promise.all(run.redis.map(redisCpu))))
      await sleep(idleMs)
      const idle = await Promise.all(runs.map(async (run, i) => (await Promise.all(run.redis.map(redisCpu))).map((c, j) => (c - (idleBefore[i]?.[j] as number)) / idleMs / 10)))
      const rounds: ClusterRound[] = []
      for (let round = 0; round < sizes.rounds; round++) {
        for (const run of round % 2 === 0 ? runs : [...runs].reverse()) {
          const r = await slice(run, members, publisher, sizes, round)
          rounds.push(r)
          progress(`F round ${round + 1}/${sizes.rounds} ${run.setup}: ${Math.round(r.deliveries / r.seconds)} deliveries/s, Redis CPU ${r.redisCpu.map((c) => `${(c / r.seconds / 1e4).toFixed(0)} %`).join(' ')}`)
        }
      }
      const { lines, notes } = clusterTable(rounds, sizes, { single: idle[0] ?? [], cluster: idle[1] ?? [] })
      return { lines, rounds, notes }
    })
  } finally {
    for (const run of runs) run.redis.forEach((r) => { r.disconnect() })
    await Promise.all(runs.flatMap((run) => run.instances.map(async (i) => { await stop(i.child) })))
    await Promise.all([single?.stop(), cluster?.stop()])
    if (removeOnExit !== undefined) process.off('exit', removeOnExit)
  }
}
