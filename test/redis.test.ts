import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { Type } from '@sinclair/typebox'
import type { Redis } from 'ioredis'
import { redisBroker } from '../lib/redis.js'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, waitFor, type TestClient } from './helpers/client.js'
import { REDIS_URL, RedisProxy, requireRedis, uniquePrefix } from './helpers/redis.js'

let redis: Redis
before(async () => { redis = await requireRedis() })
after(() => { redis.disconnect() })

interface Cluster { instances: TestApp[], prefix: string, close: () => Promise<void> }

async function cluster (size: number, url = REDIS_URL, presenceTtl = 2): Promise<Cluster> {
  const prefix = uniquePrefix()
  const instances: TestApp[] = []
  for (let i = 0; i < size; i++) {
    instances.push(await startApp({
      jwt: false,
      realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user'] ?? `anon-${i}`) }) }, broker: redisBroker({ url, prefix, presenceTtl }) },
      setup: (app) => {
        app.realtimeRoute({
          url: '/rt',
          messages: {
            join: { schema: Type.String(), handler: (room, conn) => { conn.join(room); return room } },
            leave: { schema: Type.String(), handler: (room, conn) => { conn.leave(room); return room } },
            say: { schema: Type.String(), handler: (room, conn) => app.realtime.to(room).send('said', { room, from: conn.userId }, { except: conn }) }
          }
        })
      }
    }))
  }
  return { instances, prefix, close: async () => { await Promise.all(instances.map(async (h) => { await h.close() })) } }
}

async function member (h: TestApp, user: string, room?: string): Promise<TestClient> {
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': user } })
  if (room !== undefined) await c.request('join', room)
  return c
}

/** Everything a client received within `ms`, after what it already had. */
async function drain (c: TestClient, ms = 150): Promise<unknown[]> {
  await new Promise((resolve) => setTimeout(resolve, ms))
  const out = []
  while (c.pending > 0) out.push(await c.nextMessage())
  return out
}

test('room, user and broadcast fan-outs reach every member on every instance exactly once; except works across them', { timeout: 20000 }, async (t) => {
  const { instances: [a, b, c], close } = await cluster(3) as Cluster & { instances: [TestApp, TestApp, TestApp] }
  t.after(close)
  const clients: TestClient[] = []
  t.after(() => { for (const x of clients) x.destroy() })
  const a1 = await member(a, 'alice', 'lobby')
  const b1 = await member(b, 'bob', 'lobby')
  const c1 = await member(c, 'carol', 'lobby')
  const c2 = await member(c, 'alice')
  const b2 = await member(b, 'dave', 'other')
  clients.push(a1, b1, c1, c2, b2)

  assert.equal(a.app.realtime.to('lobby').send('news', { n: 1 }), 1, 'delivered to one member locally')
  for (const m of [a1, b1, c1]) assert.deepEqual(await drain(m), [{ type: 'news', data: { n: 1 } }])
  assert.deepEqual(await drain(b2), [])
  assert.deepEqual(await drain(c2), [])

  b.app.realtime.toUser('alice').send('dm', { text: 'hi' })
  for (const m of [a1, c2]) assert.deepEqual(await drain(m), [{ type: 'dm', data: { text: 'hi' } }])
  for (const m of [b1, c1, b2]) assert.deepEqual(await drain(m, 0), [])

  c.app.realtime.broadcast('all', null)
  for (const m of clients) assert.deepEqual(await drain(m), [{ type: 'all', data: null }])

  // except: the sender on instance b is skipped, everyone else in the room gets it, once.
  assert.deepEqual((await b1.request('say', 'lobby')).data, 0)
  for (const m of [a1, c1]) assert.deepEqual(await drain(m), [{ type: 'said', data: { room: 'lobby', from: 'bob' } }])
  assert.deepEqual(await drain(b1, 0), [])
  const [bobConn] = b.app.realtime.byUser('bob')
  a.app.realtime.broadcast('all2', 1, { except: bobConn?.id })
  assert.deepEqual(await drain(b1), [])
  assert.deepEqual(await drain(a1, 0), [{ type: 'all2', data: 1 }])
})

test('each instance subscribes only to the rooms and users it has members for', { timeout: 20000 }, async (t) => {
  const { instances: [a, b], prefix, close } = await cluster(2) as Cluster & { instances: [TestApp, TestApp] }
  t.after(close)
  const channels = async () => (await redis.pubsub('CHANNELS', `${prefix}*`) as string[]).sort()
  const numsub = async (ch: string) => Number((await redis.pubsub('NUMSUB', `${prefix}${ch}`) as [string, number])[1])
  assert.deepEqual(await channels(), [`${prefix}all`])
  assert.equal(await numsub('all'), 2)
  const x = await member(a, 'xavier', 'r1')
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(await channels(), [`${prefix}all`, `${prefix}room:r1`, `${prefix}user:xavier`])
  assert.equal(await numsub('room:r1'), 1, 'instance b has no member, so it is not subscribed')
  const y = await member(b, 'yolanda', 'r1')
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal(await numsub('room:r1'), 2)
  await x.request('leave', 'r1')
  x.destroy()
  await waitFor(() => a.app.realtime.connections.size === 0)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal(await numsub('room:r1'), 1)
  assert.deepEqual(await channels(), [`${prefix}all`, `${prefix}room:r1`, `${prefix}user:yolanda`])
  await y.close()
  await waitFor(() => b.app.realtime.connections.size === 0)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(await channels(), [`${prefix}all`])
})

test('roomSize and online answer for the whole cluster, and forget an instance killed without closing', { timeout: 30000 }, async (t) => {
  const { instances: [a, b], prefix, close } = await cluster(2, REDIS_URL, 1) as Cluster & { instances: [TestApp, TestApp] }
  t.after(close)
  const a1 = await member(a, 'ann', 'hall')
  const b1 = await member(b, 'ben', 'hall')
  const b2 = await member(b, 'ann', 'hall')
  t.after(() => { for (const x of [a1, b1, b2]) x.destroy() })
  assert.equal(await a.app.realtime.roomSize('hall'), 3)
  assert.equal(await b.app.realtime.roomSize('hall'), 3)
  assert.equal(await a.app.realtime.online('ben'), true)
  assert.equal(await a.app.realtime.online('nobody'), false)

  // A third instance in a child process joins 4 members, then dies without a word.
  const child = fork(new URL('./helpers/redis-instance.ts', import.meta.url), [REDIS_URL, prefix, 'hall', 'zed', '4'], { execArgv: ['--import', 'tsx'], stdio: 'inherit' })
  t.after(() => { child.kill('SIGKILL') })
  await new Promise((resolve) => child.once('message', resolve))
  assert.equal(await a.app.realtime.roomSize('hall'), 7)
  assert.equal(await b.app.realtime.online('zed'), true)
  child.kill('SIGKILL')
  const killedAt = Date.now()
  for (;;) {
    if (await a.app.realtime.roomSize('hall') === 3 && !await a.app.realtime.online('zed')) break
    assert.ok(Date.now() - killedAt < 4000, 'a killed instance\'s members stop counting within the TTL')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  // The live instances keep their own counts fresh past the TTL.
  await new Promise((resolve) => setTimeout(resolve, 1500))
  assert.equal(await b.app.realtime.roomSize('hall'), 3)
})

test('a Redis outage: local delivery goes on, publishes are counted as failed, delivery resumes when it is back', { timeout: 30000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  const logs: string[] = []
  const { instances: [a, b], close } = await cluster(2, url) as Cluster & { instances: [TestApp, TestApp] }
  t.after(async () => { await close(); await proxy.cut() })
  a.app.log.error = ((obj: unknown, msg: string) => { logs.push(msg) }) as never
  const a1 = await member(a, 'amy', 'ops')
  const b1 = await member(b, 'bill', 'ops')
  t.after(() => { a1.destroy(); b1.destroy() })
  a.app.realtime.to('ops').send('before', 1)
  assert.deepEqual(await drain(b1), [{ type: 'before', data: 1 }])
  assert.deepEqual(await drain(a1, 0), [{ type: 'before', data: 1 }])

  await proxy.cut()
  await new Promise((resolve) => setTimeout(resolve, 100))
  for (let i = 0; i < 20; i++) a.app.realtime.to('ops').send('during', i)
  const local = await drain(a1)
  assert.equal(local.length, 20, 'local members are served during the outage')
  assert.ok(a.app.realtime.stats().brokerFailures >= 1, 'failed publishes are counted')
  assert.ok(logs.filter((l) => l.includes('Redis unreachable')).length <= 1, 'logged once per outage, not per message')

  await proxy.restore()
  await waitFor(() => {
    a.app.realtime.to('ops').send('after', 2)
    return b1.pending > 0
  }, 15000, 'cross-instance delivery to resume')
  const received = await drain(b1)
  assert.ok(received.some((m) => (m as { type: string }).type === 'after'))
  assert.ok(received.every((m) => (m as { type: string }).type !== 'during'), 'nothing from the outage arrives late')
})

test('with { client }, the app\'s own Redis connection stays open after app.close()', { timeout: 15000 }, async () => {
  const { Redis: RedisClient } = await import('ioredis')
  const own = new RedisClient(REDIS_URL)
  const h = await startApp({ realtime: { auth: false, broker: redisBroker({ client: own, prefix: uniquePrefix() }) } })
  await h.close()
  assert.equal(own.status, 'ready')
  assert.equal(await own.ping(), 'PONG')
  own.disconnect()
})
