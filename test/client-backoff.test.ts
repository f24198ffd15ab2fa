// Issue 21, client: the backoff. A connection counts as a success only once it stayed open `backoff.stableAfter`
// ms, so a server that accepts then closes is backed off and reaches maxAttempts; options that would spin (a base of
// 0) are refused; no delay passes what setTimeout can hold (a longer one fires at once).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { backoffDelay } from '../lib/client/index.js'
import { ScriptedServer } from './helpers/scripted-server.js'
import { nextEvent, opened, sleep, typedClient } from './helpers/typed-client.js'

const MAX_DELAY = 2 ** 31 - 1

for (const code of [1011, 4408, 1001, 4401]) {
  test(`a server that accepts then closes with ${code}: backed off, attempt after attempt, until maxAttempts`, { timeout: 10000 }, async (t) => {
    const server = await ScriptedServer.start({ open: (socket) => { socket.close(code, 'not now') } })
    t.after(async () => { await server.stop() })
    const c = typedClient(server.url, { maxAttempts: 3, getToken: () => 'a-token' })
    t.after(() => { c.close() })
    const attempts: number[] = []
    c.on('reconnecting', ({ attempt }) => { attempts.push(attempt) })
    const offline = await nextEvent(c, 'offline', 5000)
    assert.equal(offline.code, 'CLOSED')
    assert.match(offline.message, /gave up after 3 attempts/)
    assert.deepEqual(attempts, [1, 2, 3])
    assert.equal(server.sockets.length, 4)
  })
}

test('the attempt count starts again once a connection stayed open backoff.stableAfter ms', { timeout: 10000 }, async (t) => {
  // Each connection closes 1011 after 150 ms: more than stableAfter, so every reconnect is attempt 1.
  const server = await ScriptedServer.start({ open: (socket) => { setTimeout(() => { socket.close(1011) }, 150) } })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url, { maxAttempts: 1, backoff: { base: 20, cap: 200, stableAfter: 100 } })
  t.after(() => { c.close() })
  const attempts: number[] = []
  c.on('reconnecting', ({ attempt }) => { attempts.push(attempt) })
  await opened(c)
  while (server.sockets.length < 4) await sleep(20)
  assert.deepEqual(attempts.slice(0, 3), [1, 1, 1])
  assert.notEqual(c.state, 'closed')
})

test('backoff.base and cap must be > 0: 0, negative and NaN are refused at construction', () => {
  for (const backoff of [{ base: 0 }, { base: -1 }, { base: Number.NaN }, { cap: 0 }, { cap: Number.NaN }, { stableAfter: -5 }]) {
    assert.throws(() => typedClient('ws://127.0.0.1:9/chat', { backoff }), (err: Error) => err instanceof RangeError && /backoff\.(base|cap|stableAfter)/.test(err.message), JSON.stringify(backoff))
  }
})

test('no delay past 2^31 - 1 ms: a backoff delay, the ping interval', { timeout: 10000 }, async (t) => {
  assert.equal(backoffDelay(1, { base: 2 ** 50, cap: 2 ** 50 }, () => 0.999), MAX_DELAY)
  assert.equal(backoffDelay(40, { base: 1000, cap: Infinity }, () => 0.999), MAX_DELAY)
  // A huge pingInterval means "rarely", not a ping every millisecond.
  const server = await ScriptedServer.start()
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url, { pingInterval: 2 ** 32, pingTimeout: 2 ** 40, connectTimeout: 2 ** 40 })
  t.after(() => { c.close() })
  await opened(c)
  await sleep(200)
  assert.deepEqual(server.frames.filter(({ frame }) => frame.type === 'ping'), [])
  // A huge backoff: the scheduled delay is clamped, so the next attempt does not come at once either.
  const closing = await ScriptedServer.start({ open: (socket) => { socket.close(1011) } })
  t.after(async () => { await closing.stop() })
  const d = typedClient(closing.url, { backoff: { base: 2 ** 50, cap: 2 ** 50 } })
  t.after(() => { d.close() })
  const { delay } = await nextEvent(d, 'reconnecting')
  assert.ok(delay <= MAX_DELAY, String(delay))
  await sleep(200)
  assert.equal(closing.sockets.length, 1)
})
