// npm run simulate -- --seed N --schedules K [--steps L] [--verbose] [--no-shrink] [--shrink-time S]
// npm run simulate -- --replay file.json [--verbose] [--dump out.json (every frame, delivery and publish)]
// Runs K schedules (seeds N, N+1, …) on a throw-away redis-server of its own (SIM_REDIS_URL to use another Redis:
// then only the run's own keys are ever deleted, never FLUSHALL). A failing schedule prints its seed, the broken
// invariants, and a replay file (shrunk: steps removed while it still fails the same way, within --shrink-time).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { hasRedisServerBinary, startRedisServer } from '../helpers/redis-server.js'
import { runSchedule, type RedisTarget } from './run.js'
import { generate, type Schedule } from './schedule.js'
import type { Violation } from './invariants.js'

const args = process.argv.slice(2)
const flag = (name: string): boolean => args.includes(`--${name}`)
const value = (name: string, fallback?: string): string | undefined => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? fallback : args[i + 1]
}
const verbose = flag('verbose')

async function provide (): Promise<{ target: RedisTarget | undefined, stop: () => Promise<void> }> {
  const url = process.env.SIM_REDIS_URL
  if (url !== undefined && url !== '') return { target: { url, flushable: false }, stop: async () => {} }
  if (!hasRedisServerBinary()) {
    process.stderr.write('*** no redis-server on the PATH and no SIM_REDIS_URL: only the memory schedules run ***\n')
    return { target: undefined, stop: async () => {} }
  }
  const server = await startRedisServer()
  return { target: { url: server.url, flushable: true }, stop: async () => { await server.stop() } }
}

const signature = (violations: Violation[]): Set<string> => new Set(violations.map((v) => v.invariant))
const same = (a: Set<string>, b: Set<string>): boolean => [...a].some((x) => b.has(x))

/** Removes chunks of steps, then single steps, while the schedule still breaks one of the same invariants. */
async function shrink (schedule: Schedule, redis: RedisTarget | undefined, wanted: Set<string>, budgetMs: number): Promise<Schedule> {
  const deadline = Date.now() + budgetMs
  let best = schedule
  let chunk = Math.max(1, Math.floor(best.steps.length / 2))
  while (chunk >= 1 && Date.now() < deadline) {
    let removed = false
    for (let at = 0; at < best.steps.length && Date.now() < deadline; at += chunk) {
      const candidate = { ...best, steps: [...best.steps.slice(0, at), ...best.steps.slice(at + chunk)] }
      if (candidate.steps.length === 0) continue
      const result = await runSchedule(candidate, redis)
      if (same(signature(result.violations), wanted)) {
        process.stderr.write(`  shrunk to ${candidate.steps.length} steps\n`)
        best = candidate
        removed = true
        at -= chunk
      }
    }
    if (!removed) chunk = Math.floor(chunk / 2)
  }
  return best
}

function report (schedule: Schedule, violations: Violation[], took: number): void {
  process.stdout.write(`seed ${schedule.seed}: FAILED in ${took} ms (${schedule.mode}, ${schedule.instances} instance(s), ${schedule.steps.length} steps)\n`)
  for (const v of violations) process.stdout.write(`  invariant ${v.invariant}: ${v.what}\n`)
}

const { target, stop } = await provide()
let failed = 0
try {
  const replay = value('replay')
  if (replay !== undefined) {
    const file = JSON.parse(readFileSync(replay, 'utf8')) as { schedule: Schedule }
    const result = await runSchedule(file.schedule, target, { verbose })
    const dump = value('dump')
    if (dump !== undefined) writeFileSync(dump, JSON.stringify({ log: result.log, violations: result.violations, ...result.record }, null, 1))
    if (result.violations.length > 0) { failed++; report(file.schedule, result.violations, result.took) } else process.stdout.write(`replay of seed ${file.schedule.seed}: passed in ${result.took} ms\n`)
  } else {
    const seed = Number(value('seed', '1'))
    const count = Number(value('schedules', '1'))
    const steps = Number(value('steps', '40'))
    for (let i = 0; i < count; i++) {
      const schedule = generate(seed + i, steps, { redis: target !== undefined })
      const result = await runSchedule(schedule, target, { verbose })
      if (result.violations.length === 0) {
        process.stdout.write(`seed ${schedule.seed}: ok in ${result.took} ms (${schedule.mode}, ${schedule.instances} instance(s)${schedule.children ? ', children' : ''})\n`)
        continue
      }
      failed++
      report(schedule, result.violations, result.took)
      const shrunk = flag('no-shrink') ? schedule : await shrink(schedule, target, signature(result.violations), Number(value('shrink-time', '120')) * 1000)
      mkdirSync(new URL('./replays/', import.meta.url), { recursive: true })
      const path = new URL(`./replays/failed-seed-${schedule.seed}.json`, import.meta.url)
      writeFileSync(path, JSON.stringify({ violations: result.violations.map((v) => `${v.invariant}: ${v.what}`), schedule: shrunk }, null, 1) + '\n')
      process.stdout.write(`  replay (${shrunk.steps.length} of ${schedule.steps.length} steps): npm run simulate -- --replay ${path.pathname}\n`)
    }
    process.stdout.write(`${count - failed} of ${count} schedules passed\n`)
  }
} finally {
  await stop()
}
// Instances abandoned by a hung app.close() may hold timers: the verdict is in, so leave.
process.exit(failed > 0 ? 1 : 0)
