// `npm run bench [-- --quick] [--only=A,C] [--no-redis] [--profile[=kind]] [--sizes=JSON]`: each server in its own
// process, driven by load generators in others, every workload repeated; prints medians with ratios to raw ws from
// the same repeat and writes bench/results/<date>.json and latest.json. bench/README.md says how to read them.
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { relative } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { BudgetSpent, killAll, remaining, setDeadline } from './children.js'
import { echo, fanout, fromSlices, GeneratorPool, heap, setup, storm, turn, type Kind, type Measurement, type Sizes, type Slice, type Target } from './workloads.js'
import { ServerSet } from './servers.js'
import { openFileLimit, redisUnavailable } from './preflight.js'
import { summarize, table, targets, type Failure, type Result, type Workload } from './report.js'
import { CLUSTER_QUICK, CLUSTER_SIZES, clusterFanout } from './cluster.js'
import type { ClusterRound } from './cluster-report.js'

const argv = process.argv.slice(2)
const quick = argv.includes('--quick')
const only = argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).toUpperCase().split(',')
const profileArg = argv.find((a) => a === '--profile' || a.startsWith('--profile='))
const profiled = profileArg === undefined ? undefined : profileArg.split('=')[1] ?? 'realtime'
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

const sizes: Sizes = quick
  ? { repeats: 1, rounds: 2, echoConns: 40, inflight: 16, echoMs: 800, echoGenerators: 2, members: 800, memberGenerators: 2, fires: 3, idle: 300, setupTotal: 300, setupConcurrency: 24, setupGenerators: 2, stormClients: 200, stormEvents: 10, fallbackConns: 20, fallbackInflight: 16, fallbackMs: 800, fallbackMembers: 300, fallbackMemberGenerators: 2, fallbackFires: 3, stepMs: 15_000, connectMs: 20_000 }
  : { repeats: 3, rounds: 4, echoConns: 100, inflight: 16, echoMs: 4000, echoGenerators: 2, members: 10_000, memberGenerators: 4, fires: 11, idle: 2000, setupTotal: 2000, setupConcurrency: 50, setupGenerators: 2, stormClients: 1000, stormEvents: 10, fallbackConns: 40, fallbackInflight: 16, fallbackMs: 4000, fallbackMembers: 1000, fallbackMemberGenerators: 2, fallbackFires: 11, stepMs: 30_000, connectMs: 90_000 }
// `--sizes='{"members":20000}'` overrides any of them, for a closer look at one thing.
const overrides = argv.find((a) => a.startsWith('--sizes='))
if (overrides !== undefined) Object.assign(sizes, JSON.parse(overrides.slice('--sizes='.length)))
// The whole run ends by itself: quick in under a minute and a half, full in under twelve (a hard stop follows the
// budget). G (the fallback, issue 24) added some 35 s a repeat to a full run and 15 s to a quick one on 2 cores.
const budgetMs = quick ? 80_000 : 680_000
const startedAt = Date.now()
setDeadline(startedAt + budgetMs)

const KINDS: Kind[] = ['raw-ws', 'fastify-ws', 'minimal', 'realtime', 'socket.io']
/** Which servers each workload compares, in the order the workloads run: C first, while the heaps are fresh. */
const PLAN: Record<Workload, Kind[]> = {
  C: KINDS,
  // realtime-observed: the same server with metrics and a tracing subscriber on (its target is a ratio to realtime).
  A: [...KINDS, 'realtime-observed'],
  // fastify-ws-open: Fastify and @fastify/websocket checking nothing, the ceiling of any server that routes its
  // upgrades through Fastify (and so runs the app's hooks on them).
  D: ['raw-ws', 'fastify-ws-open', 'fastify-ws', 'realtime', 'socket.io'],
  // raw-ws-preframed: the fan-out framed once and written to every member, in plain ws code (the floor of B).
  B: ['raw-ws', 'raw-ws-preframed', 'realtime', 'realtime-history', 'socket.io'],
  E: ['raw-ws', 'realtime', 'realtime-history'],
  // G (issue 24): the HTTP-streaming fallback (realtime-stream: the realtime server with `fallback: true`, its
  // clients on the stream and POSTed batches) against the WebSocket and socket.io's HTTP long-polling.
  'G-echo': ['raw-ws', 'realtime', 'realtime-stream', 'socket.io', 'socket.io-polling'],
  'G-fanout': ['raw-ws', 'realtime-stream', 'socket.io-polling']
}
// `--only=G` selects both parts of G; `--only=G-echo` one of them.
const ORDER = (Object.keys(PLAN) as Workload[]).filter((w) => only === undefined || only.includes(w.toUpperCase()) || only.includes(w.split('-')[0] as string))
// F (one Redis against a Redis Cluster, issue 16) starts seven Redis and server processes and 20,000 sockets of its
// own: it runs only when asked for (`--only=F`), never in the default run, whose budget it would not fit.
const clusterSizes = { ...(quick ? CLUSTER_QUICK : CLUSTER_SIZES) }
if (overrides !== undefined) Object.assign(clusterSizes, JSON.parse(overrides.slice('--sizes='.length)))
const runF = only?.includes('F') === true
// P, presence churn (bench/presence.ts: a room's members on two instances on Redis, joins and leaves at a fixed rate,
// against plain room messages at the same rate): part of the default run when a Redis answers; its table joins the report.
const runP = only === undefined || only.includes('P')
let presenceLines: string[] = []
let clusterLines: string[] = []
let clusterRounds: ClusterRound[] = []
const notes: string[] = []
const results: Result[] = []
const failures: Failure[] = []
const loadAverage = { start: os.loadavg()[0] as number, end: 0 }

// The server of B holds every member's socket, plus its own files and listeners.
const fdLimit = openFileLimit()
if (ORDER.includes('B') && fdLimit !== undefined && fdLimit < sizes.members + 256) {
  const fit = Math.floor((fdLimit - 256) / 100) * 100
  notes.push(`the open-file limit (ulimit -n) is ${fdLimit}: B ran with ${fit} members instead of ${sizes.members}; raise it (ulimit -n ${sizes.members + 1024}) for the full size`)
  sizes.members = fit
}
if (ORDER.includes('B')) {
  const skipped = await redisUnavailable(REDIS_URL, argv.includes('--no-redis'))
  if (skipped === undefined) PLAN.B.push('realtime-redis', 'realtime-history-redis')
  else notes.push(skipped)
}
if (loadAverage.start > os.cpus().length) {
  notes.push(`the machine was busy when the run started (load average ${loadAverage.start.toFixed(1)} on ${os.cpus().length} cores): expect wide ranges`)
}

const progress = (line: string): void => { process.stderr.write(`  [${((Date.now() - startedAt) / 1000).toFixed(1).padStart(5)} s] ${line}\n`) }
const pool = new GeneratorPool(sizes.stepMs)
const serverSet = (tag: string): ServerSet => new ServerSet({
  stepMs: sizes.stepMs,
  redisUrl: REDIS_URL,
  profiled,
  profileDir: new URL('./results/profiles/', import.meta.url).pathname,
  tag: `${ORDER.join('')}-${tag}`
})

function record (repeat: number, workload: Workload, slot: Kind, m: Measurement): void {
  results.push({ repeat, workload, kind: slot, ...m })
  progress(`repeat ${repeat + 1}/${sizes.repeats} ${workload} ${slot}: ${m.value.toFixed(1)}${m.cpu === undefined ? '' : ` (server CPU ${m.cpu.toFixed(2)} µs)`}${m.perBatch === undefined ? '' : `, ${m.perBatch.toFixed(1)} messages a batch`}`)
}

/** Records a failure (the time budget is not one: it ends the run) and replaces the server for what follows. */
async function failed (servers: ServerSet, repeat: number, workload: Workload, slot: Kind, err: unknown): Promise<void> {
  if (err instanceof BudgetSpent) throw err
  failures.push({ repeat, workload, kind: slot, error: (err as Error).message })
  progress(`repeat ${repeat + 1}/${sizes.repeats} ${workload} ${slot}: FAILED ${(err as Error).message}`)
  await servers.discard(slot)
}

/** The sizes of G's echo and fan-out, in the shape of A's and B's. */
const fallbackSizes: Sizes = { ...sizes, echoConns: sizes.fallbackConns, inflight: sizes.fallbackInflight, echoMs: sizes.fallbackMs, members: sizes.fallbackMembers, memberGenerators: sizes.fallbackMemberGenerators, fires: sizes.fallbackFires }

/** A (and G's echo), every server connected at once and measured in rounds (see `echo`). */
async function runEcho (servers: ServerSet, slots: Kind[], repeat: number, workload: Workload = 'A'): Promise<void> {
  const ready: Target[] = []
  for (const slot of slots) {
    try { ready.push(await servers.target(slot)) } catch (err) { await failed(servers, repeat, workload, slot, err) }
  }
  try {
    const measured = await echo(pool, ready, workload === 'A' ? sizes : fallbackSizes)
    for (const t of ready) record(repeat, workload, t.slot, measured.get(t.slot) as Measurement)
  } catch (err) {
    for (const t of ready) await failed(servers, repeat, workload, t.slot, err)
  }
}

/**
 * D in rounds: each round sets up a share of the connections on every server in turn. First an unrecorded 1,500
 * set-ups on each (in a quick run, as many as D itself): a server's first thousand or two cost up to twice what
 * later ones do while its JIT compiles the handshake's code (more of it the more code a server has), and D measures
 * what a server that has been up for a while pays.
 */
async function runSetup (servers: ServerSet, slots: Kind[], repeat: number): Promise<void> {
  const slices = new Map<Kind, Slice[]>(slots.map((slot) => [slot, []]))
  for (const slot of slots) {
    try {
      const t = await servers.target(slot)
      await setup(pool, t.server, t.kind, sizes, quick ? sizes.setupTotal : 1500)
    } catch (err) {
      slices.delete(slot)
      await failed(servers, repeat, 'D', slot, err)
    }
  }
  for (let round = 0; round < sizes.rounds; round++) {
    for (const slot of turn([...slices.keys()], round)) {
      try {
        const t = await servers.target(slot)
        slices.get(slot)?.push(await setup(pool, t.server, t.kind, sizes, Math.ceil(sizes.setupTotal / sizes.rounds)))
      } catch (err) {
        slices.delete(slot)
        await failed(servers, repeat, 'D', slot, err)
      }
    }
  }
  for (const [slot, list] of slices) record(repeat, 'D', slot, fromSlices(list))
}

/**
 * One repeat: every server starts at once (start-up is not measured), then each workload runs on every server in
 * turn, so that the two figures of a ratio were taken close together; the order turns with every repeat.
 */
async function runRepeat (repeat: number): Promise<void> {
  const servers = serverSet(`r${repeat + 1}`)
  try {
    await servers.startAll([...new Set(ORDER.flatMap((w) => PLAN[w]))])
    for (const workload of ORDER) {
      const slots = turn(PLAN[workload], repeat)
      if (workload === 'A' || workload === 'G-echo') await runEcho(servers, slots, repeat, workload)
      else if (workload === 'D') await runSetup(servers, slots, repeat)
      else {
        for (const slot of slots) {
          try {
            const t = await servers.target(slot)
            const m = workload === 'B' || workload === 'G-fanout'
              ? await fanout(pool, await servers.get(slot), t.kind, workload === 'B' ? sizes : fallbackSizes)
              : workload === 'E' ? await storm(pool, t.server, t.kind, sizes) : await heap(pool, t.server, t.kind, sizes)
            record(repeat, workload, slot, m)
          } catch (err) {
            await failed(servers, repeat, workload, slot, err)
          }
        }
      }
    }
  } finally {
    await servers.close()
  }
}

/** Generators that have not run yet would hand their JIT warm-up to the first server measured: a short unrecorded round. */
async function warmUp (): Promise<void> {
  const servers = serverSet('warm-up')
  try {
    const t = await servers.target('raw-ws')
    await echo(pool, [t], { ...sizes, echoMs: 300, rounds: 1 })
    if (ORDER.includes('D')) await setup(pool, t.server, 'raw-ws', sizes, 100)
    // G's HTTP clients (the fallback's, socket.io's polling) have code of their own to warm up.
    if (ORDER.includes('G-echo')) {
      const http = await Promise.all((['realtime-stream', 'socket.io-polling'] as const).map(async (slot) => await servers.target(slot)))
      await echo(pool, http, { ...fallbackSizes, echoMs: 600, rounds: 1 })
    }
  } finally {
    await servers.close()
  }
  progress('warm-up done')
}

let finished = false
/** Prints the table and writes the JSON; also the hard stop's way out, with whatever was measured by then. */
async function finish (): Promise<void> {
  if (finished) return
  finished = true
  killAll()
  loadAverage.end = os.loadavg()[0] as number
  const seconds = (Date.now() - startedAt) / 1000
  const rows = summarize(results)
  const goals = targets(rows, results)
  const date = new Date().toISOString()
  const cpus = os.cpus()
  const machine = `${cpus.length} × ${cpus[0]?.model.trim() ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.platform()}`
  for (const f of failures) notes.push(`failed: repeat ${f.repeat + 1} ${f.workload} ${f.kind}: ${f.error}`)
  const lines = [
    `fastify-realtime benchmark — ${date} — ${quick ? 'quick' : 'full'} run, ${ORDER.length > 0 ? `${sizes.repeats} repeat(s)` : `${[...runP ? ['P'] : [], ...runF ? ['F'] : []].join(' and ')} alone`}, ${seconds.toFixed(0)} s`,
    `${machine}; load average ${loadAverage.start.toFixed(1)} at the start, ${loadAverage.end.toFixed(1)} at the end`,
    // `--only=F` alone has no A–E table.
    ...(rows.length > 0
      ? [
          `Sizes: A ${sizes.echoConns} conns × ${sizes.inflight} in flight, ${sizes.echoMs / 1000} s in ${sizes.rounds} rounds; B ${sizes.members} members, ${sizes.fires} sends; ` +
            `C ${sizes.idle} idle conns; D ${sizes.setupTotal} conns, ${sizes.setupConcurrency} at a time, in ${sizes.rounds} rounds; ` +
            `E ${sizes.stormClients} clients back at once after ${sizes.stormEvents} events; ` +
            `G echo ${sizes.fallbackConns} conns × ${sizes.fallbackInflight} in flight, ${sizes.fallbackMs / 1000} s in ${sizes.rounds} rounds, G fan-out ${sizes.fallbackMembers} members, ${sizes.fallbackFires} sends`,
          'Medians over the repeats; ratios = the figure / raw ws\'s in the same repeat (A, D: higher is better; B, C and CPU: lower is better)',
          '',
          ...table(rows),
          '',
          'Targets (fastify-realtime):',
          ...goals.map((t) => `- ${t.text}`)
        ]
      : []),
    ...(clusterLines.length > 0 ? ['', ...clusterLines] : []),
    ...(presenceLines.length > 0 ? ['', 'P presence churn, ' + (presenceLines[0] ?? '').replace(/^presence bench: /, ''), ...presenceLines.slice(1)] : []),
    ...(notes.length > 0 ? ['', 'Notes:', ...notes.map((n) => `- ${n}`)] : [])
  ]
  process.stdout.write(lines.join('\n') + '\n')
  const dir = new URL('./results/', import.meta.url)
  await mkdir(dir, { recursive: true })
  const json = JSON.stringify({ date, machine, mode: quick ? 'quick' : 'full', seconds, loadAverage, sizes, rows, targets: goals, notes, results, failures, ...(runF ? { cluster: { sizes: clusterSizes, rounds: clusterRounds } } : {}), ...(presenceLines.length > 0 ? { presence: presenceLines } : {}) }, null, 2) + '\n'
  const name = `${date.replace(/[:.]/g, '-')}${quick ? '-quick' : ''}.json`
  await writeFile(new URL(name, dir), json)
  await writeFile(new URL('latest.json', dir), json)
  await writeFile(new URL('latest.md', dir), lines.join('\n') + '\n')
  process.stderr.write(`  wrote bench/results/${name}, latest.json and latest.md\n`)
  if (profiled !== undefined) await flames()
}

/** Row P: bench/presence.ts in a child, within the run's budget; its stdout is the report's table. */
async function presenceChurn (): Promise<void> {
  const skipped = await redisUnavailable(REDIS_URL, argv.includes('--no-redis'))
  if (skipped !== undefined) {
    notes.push(`P presence churn skipped: ${skipped.replace(/^B through the Redis broker skipped:? ?/, '')}`)
    return
  }
  const [members, rate, seconds] = quick ? [200, 50, 2] : [1000, 100, 5]
  progress(`P presence churn: ${members} members, ${rate} changes/s for ${seconds} s`)
  try {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', new URL('./presence.ts', import.meta.url).pathname, String(members), String(rate), String(seconds)],
      { env: { ...process.env, REDIS_URL }, timeout: Math.max(1000, Math.min(remaining(), 180_000)) })
    presenceLines = stdout.trim().split('\n')
  } catch (err) {
    if (remaining() <= 0) throw new BudgetSpent('the time budget ran out')
    failures.push({ repeat: 0, workload: 'P', kind: 'realtime-redis', error: (err as Error).message.split('\n')[0] ?? 'failed' })
  }
}

/** A flame graph (SVG) beside the main-thread profile of every server this run profiled. */
async function flames (): Promise<void> {
  // @ts-expect-error: plain ES modules of the bench, without types
  const { writeFlame } = await import('./flame.mjs') as { writeFlame: (file: string) => string }
  // @ts-expect-error: as above
  const { profileFile } = await import('./cpuprofile.mjs') as { profileFile: (given: string) => string | undefined }
  const root = new URL('./results/profiles/', import.meta.url).pathname
  for (const entry of await readdir(root, { withFileTypes: true })) {
    const dir = `${root}${entry.name}`
    if (!entry.isDirectory() || (await stat(dir)).mtimeMs < startedAt) continue
    const file = profileFile(dir)
    if (file !== undefined) process.stderr.write(`  wrote ${relative(process.cwd(), writeFlame(file))}\n`)
  }
}

// Should a wait outlive its own timeout, the hard stop still ends the run in time.
setTimeout(() => {
  notes.push('hard stop: the run outlived its time budget; the table holds what was measured by then')
  finish().finally(() => process.exit(2))
}, budgetMs + 6000).unref()

try {
  process.stderr.write(`bench: ${quick ? 'quick' : 'full'} run, ${ORDER.length > 0 ? `${sizes.repeats} repeat(s)` : `${[...runP ? ['P'] : [], ...runF ? ['F'] : []].join(' and ')} alone`}, workloads ${[...ORDER, ...runP ? ['P'] : [], ...runF ? ['F'] : []].join(', ')}${profiled !== undefined ? `, profiling ${profiled}` : ''}\n`)
  if (ORDER.length > 0) {
    await warmUp()
    for (let repeat = 0; repeat < sizes.repeats; repeat++) await runRepeat(repeat)
  }
  if (runP) await presenceChurn()
  if (runF) {
    try {
      const f = await clusterFanout(pool, clusterSizes, progress)
      clusterLines = f.lines
      clusterRounds = f.rounds
      notes.push(...f.notes)
    } catch (err) {
      if (err instanceof BudgetSpent) throw err
      failures.push({ repeat: 0, workload: 'F', kind: 'realtime-rooms', error: (err as Error).message })
    }
  }
} catch (err) {
  if (!(err instanceof BudgetSpent)) throw err
  notes.push(`stopped at the time budget (${budgetMs / 1000} s, ${(-remaining() / 1000).toFixed(0)} s over): the table holds what was measured by then`)
}
await pool.close()
await finish()
process.exit(failures.length > 0 ? 1 : 0)
