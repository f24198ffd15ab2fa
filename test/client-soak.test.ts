// The typed client through a proxy that throttles, stalls and cuts at random (seeded, bounded): no healthy link is
// dropped, no request retried with its key is handled twice, no history event is missed without a `recovery` event
// that says so, and events arrive in order.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import { Type } from '@sinclair/typebox'
import realtime from '../lib/index.js'
import { createClient, type RealtimeClient } from '../lib/client/index.js'
import { ChaosProxy, seeded } from './helpers/chaos-proxy.js'

const CLIENTS = 3
const CHAOS_MS = 6000
const SEEDS = (process.env.SOAK_SEEDS ?? '21,2104').split(',').map(Number)

function soakRoute (app: FastifyInstance, runs: Map<string, number>) {
  return app.realtimeRoute({
    url: '/soak',
    messages: {
      join: { schema: Type.String(), handler: async (room, conn) => { await conn.join(room); return room } },
      order: {
        schema: Type.Object({ client: Type.Integer(), n: Type.Integer() }),
        handler: async ({ client, n }) => {
          const key = `${client}:${n}`
          runs.set(key, (runs.get(key) ?? 0) + 1)
          await sleep(n % 3 === 0 ? 40 : 0)
          return n
        }
      }
    },
    events: { tick: Type.Object({ n: Type.Integer() }) }
  })
}
type SoakRoute = ReturnType<typeof soakRoute>

type Entry = { kind: 'tick', n: number } | { kind: 'recovery', recovered: boolean, reason?: string }

interface SoakClient {
  client: RealtimeClient<SoakRoute>
  log: Entry[]
  opens: number
  requested: number
  resolved: number[]
  rejected: string[]
}

async function soak (seed: number): Promise<string> {
  const random = seeded(seed)
  const runs = new Map<string, number>()
  const app = Fastify({ logger: false })
  await app.register(realtime, { auth: false, heartbeat: false, history: { rooms: (room) => room === 'soak', size: 5000 }, shutdown: { timeout: 300 } })
  soakRoute(app, runs)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const proxy = new ChaosProxy({ host: '127.0.0.1', port: (app.server.address() as { port: number }).port })
  const port = await proxy.start()
  const clients: SoakClient[] = []
  const state = { publishing: true, requesting: true }
  let seq = 0
  let cutsMade = 0
  let settled = 0
  try {
    const publisher = (async () => {
      while (state.publishing) {
        app.realtime.to('soak').send('tick', { n: ++seq })
        await sleep(20)
      }
    })()

    for (let i = 0; i < CLIENTS; i++) {
      const s: SoakClient = { client: undefined as never, log: [], opens: 0, requested: 0, resolved: [], rejected: [] }
      s.client = createClient<SoakRoute>(`ws://127.0.0.1:${port}/soak`, {
        WebSocket,
        backoff: { base: 50, cap: 400 },
        pingInterval: 400,
        pingTimeout: 1500,
        requestTimeout: 20_000,
        retry: true,
        onReconnect: async (c) => { await c.request('join', 'soak') }
      })
      s.client.on('tick', ({ n }) => { s.log.push({ kind: 'tick', n }) })
      s.client.on('recovery', ({ recovered, reason }) => { s.log.push({ kind: 'recovery', recovered, reason }) })
      s.client.on('open', () => { s.opens++ })
      await s.client.request('join', 'soak')
      clients.push(s)
    }

    // Each client keeps two requests in flight, each with its own key, retried by the client across cuts.
    const requesters = clients.flatMap((s, index) => [0, 1].map(async (lane) => {
      for (let n = lane; state.requesting; n += 2) {
        s.requested++
        try {
          assert.equal(await s.client.request('order', { client: index, n }), n)
          s.resolved.push(n)
        } catch (err) {
          s.rejected.push(`${n}: ${(err as { code?: string }).code ?? String(err)}`)
        }
      }
    }))

    // The schedule: throttles (the link is slow, not dead), stalls shorter than pingTimeout, and a few cuts.
    const until = performance.now() + CHAOS_MS
    while (performance.now() < until) {
      const pick = random()
      if (pick < 0.45) {
        proxy.throttle(8_000 + Math.floor(random() * 40_000))
        await sleep(300 + random() * 700)
        proxy.throttle(undefined)
      } else if (pick < 0.8) {
        proxy.stall(true)
        await sleep(100 + random() * 700)
        proxy.stall(false)
      } else {
        cutsMade++
        proxy.cut()
        await sleep(50 + random() * 600)
        proxy.restore()
      }
      await sleep(100 + random() * 300)
    }
    state.requesting = false
    const settling = performance.now()
    await Promise.race([Promise.all(requesters), sleep(25_000)])
    settled = Math.round(performance.now() - settling)
    state.publishing = false
    await publisher
    await sleep(300)
  } finally {
    state.publishing = state.requesting = false
    for (const s of clients) s.client.close()
    await proxy.stop()
    await app.close()
  }

  for (const [index, s] of clients.entries()) {
    const who = `seed ${seed}, client ${index}`
    // Requests: every one answered (the client retried what a cut interrupted), and each ran once.
    assert.deepEqual(s.rejected, [], `${who}: no request rejected`)
    assert.equal(s.resolved.length, s.requested, `${who}: every request resolved`)
    for (const n of s.resolved) assert.equal(runs.get(`${index}:${n}`), 1, `${who}: request ${n} ran once`)
    // Links: only the proxy's cuts reopened a link; throttled and stalled links stayed up.
    assert.ok(s.opens - 1 <= cutsMade, `${who}: ${s.opens - 1} reconnects for ${cutsMade} cuts`)
    // Events: in order, and every hole announced by a recovery that says it was not recovered.
    let last: number | undefined
    let told = false
    let ticks = 0
    for (const entry of s.log) {
      if (entry.kind === 'recovery') {
        if (!entry.recovered) told = true
        continue
      }
      ticks++
      if (last !== undefined) {
        assert.ok(entry.n > last, `${who}: tick ${entry.n} after ${last}`)
        if (entry.n !== last + 1) assert.ok(told, `${who}: ticks ${last + 1}..${entry.n - 1} missed without a recovery event saying so`)
      }
      last = entry.n
      told = false
    }
    assert.ok(ticks > 100, `${who}: ${ticks} ticks arrived`)
  }
  for (const [key, count] of runs) assert.equal(count, 1, `seed ${seed}: ${key} ran ${count} times`)
  const recoveries = clients.map((s) => s.log.filter((e) => e.kind === 'recovery').map((e) => e.kind === 'recovery' && (e.recovered ? 'ok' : e.reason)).join(' '))
  return `${cutsMade} cuts; reconnects ${clients.map((s) => s.opens - 1).join('/')}; requests ${clients.map((s) => s.requested).join('/')}, ` +
    `settled ${settled} ms after the chaos; ticks ${clients.map((s) => s.log.filter((e) => e.kind === 'tick').length).join('/')} of ${seq}; recoveries: ${recoveries.join(' | ')}`
}

for (const seed of SEEDS) {
  test(`client soak through a throttling, stalling, cutting proxy (seed ${seed})`, { timeout: 60_000 }, async (t) => {
    t.diagnostic(await soak(seed))
  })
}
