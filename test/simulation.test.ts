// The fault-schedule simulator (test/simulation/, issue 19) on a fixed set of seeds: each schedule runs 1-3 real
// instances (Redis behind per-instance proxies that cut and stall, or the memory stores), clients that drop, come
// back with and without positions, and leave, key loss, SIGKILLs and graceful closes, then checks the docs'
// promises (invariants a-d, see docs/11-testing.md "Fault-schedule simulator"). `npm run simulate -- --seed 1 --schedules 5000`
// runs thousands; a failing seed here replays with `npm run simulate -- --replay test/simulation/replays/failed-seed-N.json`.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { mkdirSync, writeFileSync } from 'node:fs'
import { hasRedisServerBinary, startRedisServer } from './helpers/redis-server.js'
import { runSchedule, type RedisTarget } from './simulation/run.js'
import { generate } from './simulation/schedule.js'

/** The fixed seeds `npm test` runs (swap freely: any seed is a valid schedule). */
export const SEEDS = [3, 19, 23, 42, 207, 211, 216, 224]
const STEPS = 18

// A throw-away redis-server of its own (FLUSHALL is one of the faults), else the suite's REDIS_URL (then only the
// run's own keys are deleted), else the memory schedules only.
const own = hasRedisServerBinary() ? await startRedisServer() : undefined
const redis: RedisTarget | undefined = own !== undefined
  ? { url: own.url, flushable: true }
  : process.env.REDIS_URL !== undefined && process.env.REDIS_URL !== '' ? { url: process.env.REDIS_URL, flushable: false } : undefined
if (redis === undefined) process.stderr.write('\n*** simulation: no Redis, the Redis schedules run on the memory stores ***\n\n')
after(async () => {
  await own?.stop()
  // An instance whose app.close() hung (invariant d) is abandoned with its timers: do not wait for them.
  setTimeout(() => { process.exit() }, 1000).unref()
})

for (const seed of SEEDS) {
  test(`simulation: seed ${seed}`, { timeout: 60_000 }, async () => {
    const schedule = generate(seed, STEPS, { redis: redis !== undefined })
    const result = await runSchedule(schedule, redis)
    if (result.violations.length > 0) {
      mkdirSync(new URL('./simulation/replays/', import.meta.url), { recursive: true })
      const path = new URL(`./simulation/replays/failed-seed-${seed}.json`, import.meta.url)
      writeFileSync(path, JSON.stringify({ violations: result.violations.map((v) => `${v.invariant}: ${v.what}`), schedule }, null, 1) + '\n')
      process.stderr.write(`seed ${seed}: replay with npm run simulate -- --replay ${path.pathname}\n${result.log.join('\n')}\n`)
    }
    assert.deepEqual(result.violations.map((v) => `${v.invariant}: ${v.what}`), [], `seed ${seed} (${schedule.mode}, ${schedule.instances} instance(s))`)
  })
}
