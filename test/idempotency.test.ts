// Issue 21, item 7: requests that happen once. A request with an idempotency key runs its handler once per key and
// user; a retry (another connection, another instance sharing Redis, while the first still runs) gets the first
// outcome. Every bound docs/05-delivery-guarantees.md promises (window, per-user keys, bytes, outcome size, a stalled store) is forced.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { Type } from '@sinclair/typebox'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, type TestClient } from './helpers/client.js'
import { RedisProxy, captureLogger, redisTest, REDIS_URL, requireRedis, uniquePrefix } from './helpers/redis.js'
import { redisBroker } from '../lib/redis.js'
import { RealtimeError, type RealtimeOptions } from '../lib/index.js'
import { MemoryIdempotencyStore } from '../lib/idempotency/memory.js'
import { RedisIdempotencyStore } from '../lib/idempotency/redis.js'
import { resolveIdempotency } from '../lib/idempotency/store.js'
import { Redis } from 'ioredis'
import { decide, keyedRequest } from '../lib/idempotency/keyed.js'

const KEY = 'k-0123456789abcdef'
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** An app whose `order` handler counts its runs per data; `slow` takes `ms`; `refuse` throws; `big` returns `n` bytes. */
async function orderApp (t: TestContext, runs: Map<string, number>, realtime: RealtimeOptions = {}): Promise<TestApp> {
  const app = await startApp({
    realtime,
    setup: (instance) => {
      instance.realtimeRoute({
        url: '/rt',
        messages: {
          order: {
            schema: Type.Object({ item: Type.String(), ms: Type.Optional(Type.Number()) }),
            handler: async ({ item, ms }) => {
              runs.set(item, (runs.get(item) ?? 0) + 1)
              if (ms !== undefined) await sleep(ms)
              return { item, run: runs.get(item) }
            }
          },
          refuse: { schema: Type.Object({}), handler: () => { runs.set('refuse', (runs.get('refuse') ?? 0) + 1); throw new RealtimeError('OUT_OF_STOCK', 'none left', { left: 0 }) } },
          big: { schema: Type.Object({ n: Type.Number() }), handler: ({ n }) => { runs.set('big', (runs.get('big') ?? 0) + 1); return 'x'.repeat(n) } }
        }
      })
    }
  })
  t.after(async () => { await app.close() })
  return app
}

async function open (t: TestContext, app: TestApp, sub = 'ada'): Promise<TestClient> {
  const c = await connect(`${app.wsBase}/rt`, { headers: { authorization: `Bearer ${app.sign({ sub })}` } })
  t.after(() => { c.destroy() })
  return c
}

test('a retry with the same key on a new connection is answered from the first outcome; the handler ran once', { timeout: 10000 }, async (t) => {
  const runs = new Map<string, number>()
  const app = await orderApp(t, runs)
  const first = await open(t, app)
  assert.deepEqual(await first.request('order', { item: 'tea' }), { type: 'reply', id: 1, data: { item: 'tea', run: 1 } })
  first.sendJson({ type: 'order', data: { item: 'tea' }, id: 7, key: KEY })
  const keyed = await first.nextMessage()
  assert.deepEqual(keyed, { type: 'reply', id: 7, data: { item: 'tea', run: 2 } })
  first.destroy()
  const second = await open(t, app)
  second.sendJson({ type: 'order', data: { item: 'tea' }, id: 'retry', key: KEY })
  assert.deepEqual(await second.nextMessage(), { type: 'reply', id: 'retry', data: { item: 'tea', run: 2 }, replayed: true })
  assert.equal(runs.get('tea'), 2, 'the keyless request and the keyed one ran; the retry did not')
  // An error outcome is kept too, with its details.
  second.sendJson({ type: 'refuse', data: {}, id: 1, key: `${KEY}-refuse` })
  second.sendJson({ type: 'refuse', data: {}, id: 2, key: `${KEY}-refuse` })
  assert.deepEqual(await second.nextMessage(), { type: 'error', id: 1, error: { code: 'OUT_OF_STOCK', message: 'none left', details: { left: 0 } } })
  assert.deepEqual(await second.nextMessage(), { type: 'error', id: 2, error: { code: 'OUT_OF_STOCK', message: 'none left', details: { left: 0 } }, replayed: true })
  assert.equal(runs.get('refuse'), 1)
})

test('keys are per user; the same key with other data is IDEMPOTENCY_KEY_REUSED, and nothing runs', { timeout: 10000 }, async (t) => {
  const runs = new Map<string, number>()
  const app = await orderApp(t, runs)
  const ada = await open(t, app, 'ada')
  const bob = await open(t, app, 'bob')
  ada.sendJson({ type: 'order', data: { item: 'tea' }, id: 1, key: KEY })
  assert.equal((await ada.nextMessage()).data.run, 1)
  bob.sendJson({ type: 'order', data: { item: 'tea' }, id: 1, key: KEY })
  assert.deepEqual(await bob.nextMessage(), { type: 'reply', id: 1, data: { item: 'tea', run: 2 } }, 'another user\'s key is another request')
  ada.sendJson({ type: 'order', data: { item: 'coffee' }, id: 2, key: KEY })
  const reused = await ada.nextMessage()
  assert.equal(reused.error.code, 'IDEMPOTENCY_KEY_REUSED')
  assert.equal(runs.get('coffee'), undefined)
  // A malformed key is refused before anything runs.
  ada.sendJson({ type: 'order', data: { item: 'milk' }, id: 3, key: 'short' })
  assert.equal((await ada.nextMessage()).error.code, 'BAD_ENVELOPE')
  assert.equal(runs.get('milk'), undefined)
})

test('a retry while the first request still runs (its connection gone) waits for it and gets its outcome', { timeout: 10000 }, async (t) => {
  const runs = new Map<string, number>()
  const app = await orderApp(t, runs)
  const first = await open(t, app)
  first.sendJson({ type: 'order', data: { item: 'slow', ms: 600 }, id: 1, key: KEY })
  await sleep(100)
  first.destroy()
  const second = await open(t, app)
  second.sendJson({ type: 'order', data: { item: 'slow', ms: 600 }, id: 2, key: KEY })
  assert.deepEqual(await second.nextMessage(), { type: 'reply', id: 2, data: { item: 'slow', run: 1 }, replayed: true })
  assert.equal(runs.get('slow'), 1)
})

test('`idempotency: false` ignores keys; a reply over maxOutcomeBytes is not kept and a retry gets ALREADY_HANDLED', { timeout: 10000 }, async (t) => {
  const runs = new Map<string, number>()
  const off = await orderApp(t, runs, { idempotency: false })
  const c = await open(t, off)
  for (const id of [1, 2]) {
    c.sendJson({ type: 'order', data: { item: 'off' }, id, key: KEY })
    assert.equal((await c.nextMessage()).data.run, id)
  }
  const small = await orderApp(t, runs, { idempotency: { maxOutcomeBytes: 100 } })
  const d = await open(t, small)
  d.sendJson({ type: 'big', data: { n: 500 }, id: 1, key: KEY })
  assert.equal((await d.nextMessage()).data.length, 500)
  d.sendJson({ type: 'big', data: { n: 500 }, id: 2, key: KEY })
  assert.deepEqual((await d.nextMessage()).error.code, 'ALREADY_HANDLED')
  assert.equal(runs.get('big'), 1)
  assert.throws(() => resolveIdempotency({ window: 0 }, 30000), /idempotency.window/)
  assert.throws(() => resolveIdempotency({ windw: 1 } as never, 30000), /did you mean "window"/)
})

test('the memory store is bounded: by window, by keys per user, by bytes', { timeout: 10000 }, async () => {
  const options = resolveIdempotency({ window: 200, maxKeys: 3, memoryBudget: 4000 }, 30000)
  assert.ok(options !== undefined)
  assert.equal(options.pendingTtl, 200, 'a pending claim never outlives the window')
  const store = new MemoryIdempotencyStore(options)
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(await store.claim('u', `key-${i}`, 'fp'), { kind: 'run' })
    await store.complete('u', `key-${i}`, 'fp', 'r1')
  }
  assert.equal(store.size, 3, 'maxKeys per scope')
  assert.deepEqual(await store.claim('u', 'key-0', 'fp'), { kind: 'run' }, 'the oldest went first')
  assert.deepEqual(await store.claim('u', 'key-4', 'fp'), { kind: 'done', outcome: 'r1' })
  assert.deepEqual(await store.claim('u', 'key-4', 'other'), { kind: 'conflict' })
  await sleep(250)
  assert.deepEqual(await store.claim('u', 'key-4', 'fp'), { kind: 'run' }, 'forgotten after the window')
  assert.equal(store.size, 1, 'the sweep dropped what expired')
  for (let i = 0; i < 50; i++) {
    await store.claim(`user-${i}`, 'k', 'fp')
    await store.complete(`user-${i}`, 'k', 'fp', `r"${'y'.repeat(200)}"`)
  }
  assert.ok(store.usedBytes <= 4000, `bytes bounded: ${store.usedBytes}`)
  // A pending entry wakes its waiters when its outcome comes, and when it is forgotten.
  const claim = await store.claim('w', 'k', 'fp')
  assert.equal(claim.kind, 'run')
  const waiting = await store.claim('w', 'k', 'fp')
  assert.equal(waiting.kind, 'pending')
  setTimeout(() => { store.complete('w', 'k', 'fp', 'rtrue').catch(() => {}) }, 20)
  await (waiting as { settled: Promise<void> }).settled
  assert.deepEqual(await store.claim('w', 'k', 'fp'), { kind: 'done', outcome: 'rtrue' })
  // A claim whose request still runs is never pushed out for room (bytes or keys): a retry would run it again.
  assert.equal((await store.claim('busy', 'k', 'fp')).kind, 'run')
  for (let i = 0; i < 50; i++) {
    await store.claim(`other-${i}`, 'k', 'fp')
    await store.complete(`other-${i}`, 'k', 'fp', `r"${'z'.repeat(200)}"`)
  }
  for (let i = 0; i < 5; i++) {
    await store.claim('busy', `more-${i}`, 'fp')
    await store.complete('busy', `more-${i}`, 'fp', 'r1')
  }
  assert.equal((await store.claim('busy', 'k', 'fp')).kind, 'pending', 'the running claim is still held')
  store.close()
})

redisTest('Redis: a retry on another instance gets the first outcome; the handler ran once across the two', { timeout: 15000 }, async (t) => {
  const runs = new Map<string, number>()
  const prefix = uniquePrefix()
  const a = await orderApp(t, runs, { broker: redisBroker({ url: REDIS_URL, prefix }) })
  const b = await orderApp(t, runs, { broker: redisBroker({ url: REDIS_URL, prefix }) })
  const onA = await open(t, a)
  onA.sendJson({ type: 'order', data: { item: 'tea', ms: 500 }, id: 1, key: KEY })
  await sleep(100)
  onA.destroy()
  // Still running on A: B polls the key until A writes the outcome.
  const onB = await open(t, b)
  onB.sendJson({ type: 'order', data: { item: 'tea', ms: 500 }, id: 2, key: KEY })
  assert.deepEqual(await onB.nextMessage(), { type: 'reply', id: 2, data: { item: 'tea', run: 1 }, replayed: true })
  onB.sendJson({ type: 'order', data: { item: 'tea', ms: 500 }, id: 3, key: KEY })
  assert.deepEqual(await onB.nextMessage(), { type: 'reply', id: 3, data: { item: 'tea', run: 1 }, replayed: true })
  assert.equal(runs.get('tea'), 1)
  const redis = await requireRedis()
  t.after(() => { redis.disconnect() })
  const keys = await redis.keys(`${prefix}idem:*`)
  assert.equal(keys.length, 1)
  const ttl = await redis.pttl(keys[0] as string)
  assert.ok(ttl > 100_000 && ttl <= 120_000, `the outcome lives for the window: ${ttl}`)
  // The docs' hole, as they say: a key Redis lost is a key never seen, and the retry runs the handler again.
  await redis.del(keys[0] as string)
  onB.sendJson({ type: 'order', data: { item: 'tea', ms: 500 }, id: 4, key: KEY })
  assert.deepEqual(await onB.nextMessage(), { type: 'reply', id: 4, data: { item: 'tea', run: 2 } })
})

redisTest('Redis: a stalled store refuses with STORE_UNAVAILABLE and runs nothing; a claim of a dead instance frees after pendingTtl', { timeout: 30000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  t.after(async () => { await proxy.stop() })
  const runs = new Map<string, number>()
  const app = await orderApp(t, runs, { broker: redisBroker({ url, prefix: uniquePrefix() }) })
  const c = await open(t, app)
  proxy.stall()
  c.sendJson({ type: 'order', data: { item: 'tea' }, id: 1, key: KEY })
  const refused = await c.nextMessage(6000)
  assert.equal(refused.error.code, 'STORE_UNAVAILABLE')
  assert.equal(runs.get('tea'), undefined, 'nothing ran')
  proxy.resume()
  await sleep(200)

  // A claim left pending by an instance that died: a retry is told REQUEST_IN_PROGRESS until its ttl frees it.
  const redis = await requireRedis()
  t.after(() => { redis.disconnect() })
  const options = resolveIdempotency({ window: 1500 }, 30000)
  assert.ok(options !== undefined)
  const store = new RedisIdempotencyStore(redis, uniquePrefix(), options)
  const idem = { store, options, log: app.app.log }
  const request = keyedRequest('/rt', 'ada', KEY, 'order', { item: 'x' })
  assert.deepEqual(await decide(idem, request, () => true), { kind: 'run' })
  const busy = await decide(idem, request, () => false)
  assert.equal(busy.kind === 'refuse' && busy.code, 'REQUEST_IN_PROGRESS')
  await sleep(1600)
  assert.deepEqual(await decide(idem, request, () => true), { kind: 'run' }, 'the dead claim expired')
})

redisTest('Redis cut: every keyed request is refused STORE_UNAVAILABLE at once, and the outage is logged once, not per request', { timeout: 15000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  t.after(async () => { await proxy.stop() })
  const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 50, lazyConnect: true })
  t.after(() => { redis.disconnect() })
  redis.on('error', () => {})
  await redis.connect()
  await proxy.cut()
  const options = resolveIdempotency({}, 30000)
  assert.ok(options !== undefined)
  const { logger, lines } = captureLogger()
  const idem = { store: new RedisIdempotencyStore(redis, uniquePrefix(), options), options, log: logger }
  for (let i = 0; i < 20; i++) {
    const decision = await decide(idem, keyedRequest('/rt', 'ada', `${KEY}-${i}`, 'order', {}), () => true)
    assert.equal(decision.kind === 'refuse' && decision.code, 'STORE_UNAVAILABLE')
  }
  assert.equal(lines.filter((l) => l.level === 'warn').length, 1, 'one warning for the outage')
  assert.equal(lines.filter((l) => l.level === 'debug').length, 19)
})
