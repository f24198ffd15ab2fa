// Edge case 13: a reconnect storm. 1,000 clients in 5 history rooms each lose their connections at once, miss 10
// events per room, and come back together; every one recovers every room, and nobody is closed as a slow consumer.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { redisBroker } from '../lib/redis.js'
import type { RealtimeOptions } from '../lib/index.js'
import { historyApp, call, client } from './helpers/history.js'
import { REDIS_URL, redisTest, uniquePrefix } from './helpers/redis.js'
import { waitFor, type TestClient } from './helpers/client.js'

const CLIENTS = 1000
const ROOMS = ['h:s0', 'h:s1', 'h:s2', 'h:s3', 'h:s4']
const MISSED = 10

/** Runs `task` over `items`, at most `width` at a time. */
async function pool<T, R> (items: T[], width: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await task(items[i] as T)
    }
  }))
  return out
}

async function storm (t: { after: (fn: () => Promise<void>) => void }, realtime: RealtimeOptions): Promise<void> {
  const h = await historyApp({}, { ...realtime, limits: { rate: 1000 } })
  const clients: TestClient[] = []
  t.after(async () => { for (const c of clients) c.destroy(); await h.close() })
  const positions: Record<string, { epoch: string, offset: number }> = {}
  for (const room of ROOMS) positions[room] = await h.app.realtime.history(room).position()
  for (const room of ROOMS) for (let n = 0; n < MISSED; n++) await h.app.realtime.to(room).publish('said', { n })

  const lag = monitorEventLoopDelay({ resolution: 10 })
  lag.enable()
  const started = Date.now()
  // Every client comes back with the positions it had before the outage, sends rt.resume, joins its five rooms.
  const results = await pool(Array.from({ length: CLIENTS }, (_, i) => i), 200, async () => {
    const c = await client(h)
    clients.push(c)
    c.sendJson({ type: 'rt.resume', data: { rooms: positions } })
    return await call(c, 'joinMany', { rooms: ROOMS }, 30000)
  })
  lag.disable()
  for (const { before, reply } of results) {
    assert.equal(reply.type, 'reply')
    const recoveries = before.filter((m) => m.type === 'rt.position').map((m) => m.data.recovery)
    assert.deepEqual(recoveries, ROOMS.map(() => ({ recovered: true, missed: MISSED })))
    for (const room of ROOMS) {
      assert.deepEqual(before.filter((m) => m.room === room).map((m) => m.offset), Array.from({ length: MISSED }, (_, i) => positions[room]!.offset + i + 1))
    }
  }
  await waitFor(() => h.app.realtime.stats().connections === CLIENTS)
  assert.equal(h.app.realtime.stats().closes['4408'], undefined)
  assert.equal(h.app.realtime.stats().dropped, 0)
  process.stderr.write(`# storm: ${CLIENTS} clients x ${ROOMS.length} rooms recovered in ${Date.now() - started} ms, event-loop delay p99 ${(lag.percentile(99) / 1e6).toFixed(0)} ms\n`)
}

test('edge case 13 (reconnect storm, memory store): 1,000 clients x 5 rooms recover at once, no 4408', { timeout: 120000 }, async (t) => {
  await storm(t, {})
})

redisTest('edge case 13 (reconnect storm, Redis): 1,000 clients x 5 rooms recover at once, no 4408', { timeout: 120000 }, async (t) => {
  await storm(t, { broker: redisBroker({ url: REDIS_URL, prefix: uniquePrefix() }) })
})
