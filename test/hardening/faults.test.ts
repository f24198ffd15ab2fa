// Faults: peers that vanish, reset or stall, a server under load while it closes, a reconnect storm and the
// file-descriptor limit. The harness's invariant is checked after each one that runs against it. (An event-loop
// stall longer than the heartbeat interval is in test/heartbeat.test.ts.)
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type net from 'node:net'
import { Type } from '@sinclair/typebox'
import { CloseCode } from '../../lib/index.js'
import { startApp } from '../helpers/app.js'
import { connect, waitFor, type TestClient } from '../helpers/client.js'
import { frame, Op, RawClient } from '../helpers/raw.js'
import { settledHeap } from '../helpers/gc.js'
import { startHarness, type Harness } from './harness.js'

let harness: Harness
before(async () => { harness = await startHarness() })
after(async () => { await harness.close() })

async function joined (room = 'faults'): Promise<TestClient> {
  const c = await connect(`${harness.h.wsBase}/rt`, { headers: { authorization: `Bearer ${harness.token('faulty')}` } })
  await c.request('join', room)
  return c
}
const tcp = (c: TestClient) => (c.ws as unknown as { _socket: net.Socket })._socket

test('a client that vanishes without a close frame', { timeout: 15000 }, async () => {
  const baseline = harness.snapshot()
  const c = await joined()
  tcp(c).destroy()
  await harness.check(baseline)
})

test('a TCP reset', { timeout: 15000 }, async () => {
  const baseline = harness.snapshot()
  const c = await joined()
  tcp(c).resetAndDestroy()
  await harness.check(baseline)
})

test('a disconnect in the middle of a fragmented message', { timeout: 15000 }, async () => {
  const baseline = harness.snapshot()
  const c = await RawClient.open(harness.h.port, '/rt', { Authorization: `Bearer ${harness.token('raw')}` })
  c.send(frame(Op.TEXT, '{"type":"echo","data":"', { fin: false }))
  c.send(frame(Op.CONTINUATION, 'half a message', { fin: false }))
  await new Promise((resolve) => setTimeout(resolve, 50))
  c.socket.resetAndDestroy()
  await harness.check(baseline)
})

test('a reader that stops while the server broadcasts at 10 MiB/s: the policy applies within a second, memory stays bounded', { timeout: 30000 }, async () => {
  const baseline = harness.snapshot()
  const reader = await joined('firehose')
  tcp(reader).pause()
  const closesBefore = harness.h.app.realtime.stats().closes[CloseCode.SLOW_CONSUMER] ?? 0
  const heapBefore = await settledHeap()
  const chunk = 'f'.repeat(16 * 1024)
  let firstRefusal = 0
  let peakHeap = 0
  // 10 MiB/s for at most 5 s: 64 messages of 16 KiB every 100 ms.
  for (let tick = 0; tick < 50 && harness.h.app.realtime.roomMembers('firehose').size > 0; tick++) {
    for (let i = 0; i < 64; i++) {
      const droppedBefore = harness.h.app.realtime.stats().dropped
      harness.h.app.realtime.to('firehose').send('blob', chunk)
      if (firstRefusal === 0 && harness.h.app.realtime.stats().dropped > droppedBefore) firstRefusal = Date.now()
    }
    peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.ok(firstRefusal > 0, 'the backlog limit was reached')
  await waitFor(() => harness.h.app.realtime.roomMembers('firehose').size === 0, 3000, 'the slow reader to be closed')
  const closedAfter = Date.now() - firstRefusal
  assert.ok(closedAfter < 2500, `closed ${closedAfter} ms after its backlog passed the limit (the policy allows 1 s)`)
  assert.equal(harness.h.app.realtime.stats().closes[CloseCode.SLOW_CONSUMER], closesBefore + 1)
  assert.ok(peakHeap - heapBefore < 32 * 1024 * 1024, `heap peaked ${((peakHeap - heapBefore) / 1048576).toFixed(1)} MiB above the start`)
  reader.destroy()
  await harness.check(baseline)
})

test('2,000 reconnects within a second: each served or refused, never a crash', { timeout: 60000 }, async () => {
  const baseline = harness.snapshot()
  const token = harness.token('storm')
  let served = 0
  let refused = 0
  let failed = 0
  /** Why attempts failed without an answer, and how often: the assertion says it (seen once: 15 of 2,000). */
  const failures = new Map<string, number>()
  const started = Date.now()
  const attempts: Array<Promise<void>> = []
  for (let batch = 0; batch < 10; batch++) {
    for (let i = 0; i < 200; i++) {
      attempts.push(connect(`${harness.h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` }, handshakeTimeout: 10000 }).then(
        (c) => { served++; c.destroy() },
        (err: { refusal?: unknown, code?: string, message?: string }) => {
          if (err.refusal !== undefined) refused++
          else {
            failed++
            const why = `${err.code ?? ''} ${err.message ?? ''}`.trim()
            failures.set(why, (failures.get(why) ?? 0) + 1)
          }
        }))
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  await Promise.all(attempts)
  assert.equal(served + refused + failed, 2000)
  assert.equal(failed, 0, `no attempt ended without an answer (${Date.now() - started} ms): ${JSON.stringify([...failures])}`)
  assert.ok(served > 0)
  assert.ok(Date.now() - started < 30000)
  await harness.check(baseline)
})

test('app.close() under load: every client sees 1001, close resolves within the timeout', { timeout: 30000 }, async () => {
  const errors: unknown[] = []
  const onError = (err: unknown): void => { errors.push(err) }
  process.on('unhandledRejection', onError)
  const h = await startApp({
    realtime: { auth: false, shutdown: { timeout: 2000 } },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: { work: { schema: Type.Integer(), handler: async (n) => { await new Promise((resolve) => setTimeout(resolve, 5)); return n } } }
      })
    }
  })
  const clients = await Promise.all(Array.from({ length: 100 }, async () => await connect(`${h.wsBase}/rt`)))
  let running = true
  for (const c of clients) {
    let n = 0
    c.ws.on('message', () => { if (running && c.ws.readyState === c.ws.OPEN) c.sendJson({ type: 'work', id: ++n, data: n }) })
    c.sendJson({ type: 'work', id: 0, data: 0 })
  }
  await new Promise((resolve) => setTimeout(resolve, 300))
  const started = Date.now()
  await h.close()
  running = false
  const took = Date.now() - started
  const codes = await Promise.all(clients.map(async (c) => (await c.closed).code))
  assert.deepEqual([...new Set(codes)], [CloseCode.GOING_AWAY])
  assert.ok(took < 3000, `app.close() took ${took} ms`)
  assert.equal(h.app.realtime.connections.size, 0)
  process.off('unhandledRejection', onError)
  assert.deepEqual(errors, [])
})

test('the file-descriptor limit reached: new connections fail, existing ones go on, and it recovers', { timeout: 60000 }, async (t) => {
  const child = spawn('bash', ['-c', `ulimit -n 160 && exec "${process.execPath}" --import tsx test/hardening/fd-child.ts`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  t.after(() => { child.kill() })
  const messages: any[] = []
  child.on('message', (m) => { messages.push(m) })
  await waitFor(() => messages.some((m) => m.port !== undefined), 20000, 'the child server')
  const port = messages.find((m) => m.port !== undefined).port as number
  const clients: TestClient[] = []
  t.after(() => { for (const c of clients) c.destroy() })
  let failed = 0
  for (let i = 0; i < 220; i++) {
    try {
      clients.push(await connect(`ws://127.0.0.1:${port}/rt`, { handshakeTimeout: 2000 }))
    } catch {
      failed++
    }
  }
  assert.ok(failed > 0, 'the limit was reached')
  assert.ok(clients.length > 50, 'connections were served up to it')
  assert.deepEqual((await (clients[0] as TestClient).request('echo', 'alive')).data, 'alive')
  for (const c of clients.splice(0, 60)) await c.close()
  await new Promise((resolve) => setTimeout(resolve, 300))
  const again = await connect(`ws://127.0.0.1:${port}/rt`)
  clients.push(again)
  assert.equal((await again.request('echo', 'recovered')).data, 'recovered')
  child.send('stats')
  await waitFor(() => messages.some((m) => m.connections !== undefined), 5000, 'the child\'s stats')
  assert.deepEqual(messages.filter((m) => m.fault !== undefined), [], 'no uncaught exception in the server')
  child.disconnect()
})
