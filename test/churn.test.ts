import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import { startApp } from './helpers/app.js'
import { connect, waitFor } from './helpers/client.js'
import { settledHeap } from './helpers/gc.js'

test('5,000 connect and disconnect cycles leave the registry empty and the heap where it was', { timeout: 120000 }, async (t) => {
  const h = await startApp({
    jwt: false,
    realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user']) }) }, heartbeat: { interval: 30000 } },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: { join: { schema: Type.String(), handler: (room, conn) => { conn.join(room); return room } } }
      })
    }
  })
  t.after(() => h.close())
  async function cycle (i: number): Promise<void> {
    const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': `u${i % 97}` } })
    await c.request('join', `room-${i % 31}`)
    if (i % 2 === 0) await c.close()
    else c.destroy()
  }
  async function run (from: number, count: number): Promise<void> {
    const concurrency = 25
    for (let i = from; i < from + count; i += concurrency) {
      await Promise.all(Array.from({ length: concurrency }, async (_, k) => { await cycle(i + k) }))
    }
    await waitFor(() => h.app.realtime.connections.size === 0, 10000, 'the registry to empty')
  }
  // Warm up first, so that lazily created structures (JIT, pools, caches) are in the baseline.
  await run(0, 500)
  const before = await settledHeap()
  await run(500, 5000)
  const after = await settledHeap()
  const stats = h.app.realtime.stats()
  assert.deepEqual([stats.connections, stats.users, stats.rooms], [0, 0, 0])
  const growth = after - before
  t.diagnostic(`heap before ${(before / 1048576).toFixed(1)} MiB, after ${(after / 1048576).toFixed(1)} MiB, growth ${(growth / 1024).toFixed(0)} KiB`)
  assert.ok(growth < 3 * 1024 * 1024, `heap grew by ${growth} bytes`)
})
