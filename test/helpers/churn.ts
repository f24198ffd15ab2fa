// Churn mixing clean closes, TCP resets and vanished clients: `npm run soak` runs 20,000 cycles, and
// test/churn.test.ts 5,000 in `npm test`. Afterwards the registry is empty, handles are at the baseline and the heap
// after a forced GC is within 5 MB of where it started.
import type net from 'node:net'
import { Type } from '@sinclair/typebox'
import { startApp } from './app.js'
import { connect, waitFor } from './client.js'
import { settledHeap } from './gc.js'

export interface ChurnResult {
  cycles: number
  seconds: number
  heapBefore: number
  heapAfter: number
  handlesBefore: Record<string, number>
  handlesAfter: Record<string, number>
  registry: number[]
  closes: Record<string, number>
}

function handles (): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1
  return counts
}

export async function runChurn (cycles: number): Promise<ChurnResult> {
  const h = await startApp({
    jwt: false,
    realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user']) }) }, heartbeat: { interval: 1000 } },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: { join: { schema: Type.String(), handler: (room, conn) => { conn.join(room); return room } } }
      })
    }
  })
  try {
    async function cycle (i: number): Promise<void> {
      const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': `u${i % 211}` } })
      await c.request('join', `room-${i % 53}`)
      const tcp = (c.ws as unknown as { _socket: net.Socket })._socket
      if (i % 3 === 0) await c.close()
      else if (i % 3 === 1) tcp.resetAndDestroy()
      else tcp.destroy()
    }
    async function run (from: number, count: number): Promise<void> {
      const concurrency = 25
      for (let i = from; i < from + count; i += concurrency) {
        await Promise.all(Array.from({ length: Math.min(concurrency, from + count - i) }, async (_, k) => { await cycle(i + k) }))
      }
      await waitFor(() => h.app.realtime.connections.size === 0, 10000, 'the registry to empty')
    }
    await run(0, 500)
    await new Promise((resolve) => setTimeout(resolve, 100))
    const handlesBefore = handles()
    const heapBefore = await settledHeap()
    const started = Date.now()
    await run(500, cycles)
    const seconds = (Date.now() - started) / 1000
    await waitFor(() => JSON.stringify(handles()) === JSON.stringify(handlesBefore), 3000, 'handles').catch(() => {})
    const heapAfter = await settledHeap()
    const stats = h.app.realtime.stats()
    return {
      cycles,
      seconds,
      heapBefore,
      heapAfter,
      handlesBefore,
      handlesAfter: handles(),
      registry: [stats.connections, stats.users, stats.rooms],
      closes: stats.closes
    }
  } finally {
    await h.close()
  }
}
