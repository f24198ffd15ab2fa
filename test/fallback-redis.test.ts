import { after, before, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import type { Redis } from 'ioredis'
import { redisBroker } from '../lib/redis.js'
import { startApp, type TestApp } from './helpers/app.js'
import { waitFor } from './helpers/client.js'
import { HttpProxy } from './helpers/http-proxy.js'
import { REDIS_SKIP, REDIS_URL, redisTest, requireRedis, uniquePrefix } from './helpers/redis.js'
import { StreamClient } from './helpers/stream.js'
import WebSocket from 'ws'
import { createClient } from '../lib/client/index.js'

let redis: Redis
before(async () => { if (REDIS_SKIP === undefined) redis = await requireRedis() })
after(() => { if (REDIS_SKIP === undefined) redis.disconnect() })

/**
 * Two instances on one Redis prefix with a fallback route: `n` is numbered and each instance records the numbers its
 * handler saw for each user; `shout` sends to a room from whichever instance took it.
 */
async function pair (t: TestContext): Promise<{ a: TestApp, b: TestApp, seen: Map<string, number[]> }> {
  const prefix = uniquePrefix()
  const seen = new Map<string, number[]>()
  const apps: TestApp[] = []
  t.after(async () => { await Promise.all(apps.map(async (h) => { await h.close() })) })
  for (let i = 0; i < 2; i++) {
    apps.push(await startApp({
      fastify: { forceCloseConnections: true },
      // 2,000 frames as fast as the batches go: over the default rate, which the stream pays as a socket would.
      realtime: { broker: redisBroker({ url: REDIS_URL, prefix }), fallback: true, limits: { rate: 100_000 } },
      setup: (app) => {
        app.realtimeRoute({
          url: '/rt',
          messages: {
            join: { schema: Type.String(), handler: async (room, conn) => { await conn.join(room); return room } },
            n: {
              schema: Type.Integer(),
              handler: (n, conn) => {
                const list = seen.get(conn.userId as string) ?? []
                seen.set(conn.userId as string, list)
                list.push(n)
                return n
              }
            },
            shout: { schema: Type.Object({ room: Type.String(), n: Type.Integer() }), handler: ({ room, n }) => { app.realtime.to(room).send('shout', n) } }
          }
        })
      }
    }))
  }
  return { a: apps[0] as TestApp, b: apps[1] as TestApp, seen }
}

redisTest('a batch POSTed to the other instance is forwarded to the one holding the session, and answered from there', { timeout: 20_000 }, async (t) => {
  const { a, b, seen } = await pair(t)
  const auth = { authorization: `Bearer ${a.sign({ sub: 'ann' })}` }
  const stream = await StreamClient.open(`${a.httpBase}/rt`, { headers: auth, postBase: b.httpBase })
  t.after(() => { stream.abort() })
  assert.deepEqual(await stream.request('n', 1, { headers: auth }), { type: 'reply', id: 1, data: 1 })
  assert.deepEqual(seen.get('ann'), [1])
  // The same seq again through the other instance: acknowledged, not run.
  assert.deepEqual(await stream.send([JSON.stringify({ type: 'n', data: 1, id: 1 })], { seq: 1, headers: auth }), { status: 200, body: { ack: 1 } })
  // Another user's credentials on this session: refused by the owner, nothing runs.
  const other = await stream.send([JSON.stringify({ type: 'n', data: 2, id: 2 })], { seq: 2, headers: { authorization: `Bearer ${b.sign({ sub: 'eve' })}` } })
  assert.equal(other.status, 403)
  assert.equal(other.body.code, 'FORBIDDEN_SESSION')
  // A session id of the other instance's shape that does not exist there, and one of no instance at all.
  const forged = await stream.send([JSON.stringify({ type: 'n', data: 2 })], { seq: 1, session: `${stream.session.split('.')[0] as string}.${'A'.repeat(24)}`, headers: auth })
  assert.equal(forged.status, 404)
  assert.equal(forged.body.code, 'UNKNOWN_SESSION')
  const nowhere = await stream.send([JSON.stringify({ type: 'n', data: 2 })], { seq: 1, session: `00000000-0000-4000-8000-000000000000.${'A'.repeat(24)}`, headers: auth })
  assert.equal(nowhere.status, 503)
  assert.equal(nowhere.body.code, 'SESSION_UNREACHABLE')
  assert.deepEqual(seen.get('ann'), [1])
  assert.equal(stream.received.length, 1)
})

redisTest('behind a round-robin proxy that drops answers: 1,000 messages each way, none lost, duplicated or reordered', { timeout: 60_000 }, async (t) => {
  const { a, b, seen } = await pair(t)
  let posts = 0
  const proxy = new HttpProxy({
    targets: () => [a.httpBase, b.httpBase],
    // Every 7th answer is lost on the way back: the client retries a batch that was handled.
    dropAnswer: () => ++posts % 7 === 0
  })
  const base = await proxy.listen()
  t.after(async () => { await proxy.close() })
  const auth = { authorization: `Bearer ${a.sign({ sub: 'ann' })}` }
  const listener = await StreamClient.open(`${base}/rt`, { headers: { authorization: `Bearer ${a.sign({ sub: 'bob' })}` } })
  const stream = await StreamClient.open(`${base}/rt`, { headers: auth })
  t.after(() => { stream.abort(); listener.abort() })
  const bobAuth = { headers: { authorization: `Bearer ${a.sign({ sub: 'bob' })}` } }
  await sendAll(listener, [JSON.stringify({ type: 'join', data: 'r', id: 'j' })], bobAuth.headers)
  assert.deepEqual(await listener.nextMessage(), { type: 'reply', id: 'j', data: 'r' })

  // Client to server: 1,000 numbers in batches of 1-20, each batch retried until acknowledged.
  const total = 1000
  let n = 1
  let retried = 0
  while (n <= total) {
    const size = Math.min(1 + ((n * 7) % 20), total - n + 1)
    const frames = []
    for (let i = 0; i < size; i++, n++) frames.push(JSON.stringify({ type: 'n', data: n, id: n }), JSON.stringify({ type: 'shout', data: { room: 'r', n } }))
    retried += await sendAll(stream, frames, auth)
  }
  assert.deepEqual(seen.get('ann'), Array.from({ length: total }, (_, i) => i + 1))
  assert.ok(retried > 0, 'some answers were dropped and their batches retried')
  // Server to client: the replies on the stream, and the room's events on the other stream, in order, once each.
  await waitFor(() => stream.received.length >= total && listener.received.length >= total + 1, 20_000, 'every frame')
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.deepEqual(stream.received.map((m: any) => m.data), Array.from({ length: total }, (_, i) => i + 1))
  assert.deepEqual(listener.received.slice(1).map((m: any) => m.data), Array.from({ length: total }, (_, i) => i + 1))
  assert.ok((proxy.routed.get(a.httpBase) ?? 0) > 50 && (proxy.routed.get(b.httpBase) ?? 0) > 50)
})

redisTest('the typed client on two instances behind a round-robin proxy that refuses upgrades and drops answers: 500 requests and 500 events, each once and in order', { timeout: 60_000 }, async (t) => {
  const { a, b, seen } = await pair(t)
  let posts = 0
  const proxy = new HttpProxy({ targets: () => [a.httpBase, b.httpBase], upgrades: () => 'refuse', dropAnswer: () => ++posts % 5 === 0 })
  const base = (await proxy.listen()).replace('http:', 'ws:')
  t.after(async () => { await proxy.close() })
  const ann = createClient<any>(`${base}/rt`, { WebSocket: WebSocket as never, token: a.sign({ sub: 'ann' }), backoff: { base: 20, cap: 100 } })
  const bob = createClient<any>(`${base}/rt`, { WebSocket: WebSocket as never, token: a.sign({ sub: 'bob' }), backoff: { base: 20, cap: 100 } })
  t.after(() => { ann.close(); bob.close() })
  const shouts: number[] = []
  bob.on('shout', (n: number) => { shouts.push(n) })
  assert.equal(await bob.request('join', 'r'), 'r')
  assert.deepEqual([ann.transport, bob.transport], ['stream', 'stream'])
  const total = 500
  const replies: number[] = []
  for (let n = 1; n <= total; n += 25) {
    const wave = Array.from({ length: Math.min(25, total - n + 1) }, (_, i) => n + i)
    for (const k of wave) ann.send('shout', { room: 'r', n: k })
    replies.push(...await Promise.all(wave.map(async (k) => await ann.request('n', k) as number)))
  }
  assert.deepEqual(replies, Array.from({ length: total }, (_, i) => i + 1))
  assert.deepEqual(seen.get('ann'), Array.from({ length: total }, (_, i) => i + 1))
  await waitFor(() => shouts.length >= total, 20_000, 'every event')
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.deepEqual(shouts, Array.from({ length: total }, (_, i) => i + 1))
  assert.ok(posts >= 20, `${posts} POSTs, every fifth answer lost`)
  assert.ok((proxy.routed.get(a.httpBase) ?? 0) > 10 && (proxy.routed.get(b.httpBase) ?? 0) > 10)
  assert.deepEqual([ann.state, bob.state], ['open', 'open'])
})

/** POSTs one batch (the client's next seq) until it is acknowledged; returns how many retries it took. */
async function sendAll (client: StreamClient, frames: string[], headers: Record<string, string>): Promise<number> {
  const seq = ++client.seq
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const answer = await client.send(frames, { seq, headers })
      if (answer.status === 200) {
        assert.equal(answer.body.ack, seq)
        return attempt
      }
      if (answer.status !== 503) throw new Error(`batch ${seq} refused: ${answer.status} ${JSON.stringify(answer.body)}`)
    } catch (err) {
      if (err instanceof assert.AssertionError || (err as Error).message.startsWith('batch')) throw err
    }
  }
  throw new Error(`batch ${seq} never acknowledged`)
}

redisTest('batches forwarded to an instance that never answers: 503 after 5 s, and past 1,024 waiting at once, 503 at once', { timeout: 30_000 }, async (t) => {
  const { a, b } = await pair(t)
  // A subscriber on a made-up instance's channel: publishes reach it (1 receiver), and it never answers.
  const ghost = '00000000-0000-4000-8000-00000000beef'
  const listener = redis.duplicate()
  t.after(() => { listener.disconnect() })
  const channels = await redis.pubsub('CHANNELS', '*instance:*') as string[]
  const ours = channels.find((c) => c.includes('instance:')) as string
  await listener.subscribe(ours.slice(0, ours.indexOf('instance:') + 'instance:'.length) + ghost)
  const auth = { authorization: `Bearer ${a.sign({ sub: 'ann' })}` }
  const session = `${ghost}.${'A'.repeat(24)}`
  const post = async (): Promise<{ status: number, code: string }> => {
    const response = await fetch(`${b.httpBase}/rt`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ session, seq: 1, frames: ['{}'] }) })
    return { status: response.status, code: (await response.json() as { code: string }).code }
  }
  const started = performance.now()
  let published = 0
  listener.on('messageBuffer', () => { published++ })
  const waiting = Array.from({ length: 1024 }, post)
  await waitFor(() => published === 1024, 10_000, 'the 1,024 batches forwarded')
  // The 1,025th is refused at once, while the others still wait.
  const extra = performance.now()
  assert.deepEqual(await post(), { status: 503, code: 'SESSION_UNREACHABLE' })
  assert.ok(performance.now() - extra < 1000)
  const answers = await Promise.all(waiting)
  assert.ok(answers.every((x) => x.status === 503 && x.code === 'SESSION_UNREACHABLE'))
  assert.ok(performance.now() - started >= 4900, 'the others waited for their 5 s')
  assert.equal(published, 1024, 'the refused one was never published')
})
