import { after, before, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { Type } from '@sinclair/typebox'
import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import { redisBroker, type RedisBrokerOptions } from '../lib/redis.js'
import { decodeMessage, encodeMessage } from '../lib/broker/redis-codec.js'
import { startApp, type TestApp } from './helpers/app.js'
import { drain, eventually, member } from './helpers/members.js'
import { waitFor } from './helpers/client.js'
import { REDIS_SKIP, REDIS_URL, RedisProxy, captureLogger, clientIds, killClients, redisTest, requireRedis, uniquePrefix } from './helpers/redis.js'

let redis: Redis
before(async () => { if (REDIS_SKIP === undefined) redis = await requireRedis() })
after(() => { if (REDIS_SKIP === undefined) redis.disconnect() })

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

interface ClusterOptions {
  size: number
  /** The broker options of instance `i`, past the shared prefix (default: the real Redis, a 2 s presence TTL). */
  broker?: (i: number) => Partial<RedisBrokerOptions>
  logger?: (i: number) => FastifyBaseLogger | undefined
}
type Instances = [TestApp, TestApp, TestApp]

/** `size` instances on one prefix, each with a route: join, leave, and say (to a room, except the sender). */
async function cluster (t: TestContext, options: ClusterOptions): Promise<{ instances: Instances, prefix: string }> {
  const prefix = uniquePrefix()
  const instances: TestApp[] = []
  t.after(async () => { await Promise.all(instances.map(async (h) => { await h.close() })) })
  for (let i = 0; i < options.size; i++) {
    const loggerInstance = options.logger?.(i)
    const broker = redisBroker({ url: REDIS_URL, onlineTtl: 2, ...options.broker?.(i), prefix } as RedisBrokerOptions)
    instances.push(await startApp({
      jwt: false,
      fastify: loggerInstance === undefined ? undefined : { loggerInstance },
      realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user'] ?? `anon-${i}`) }) }, broker },
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
  return { instances: instances as Instances, prefix }
}

const numsub = async (channel: string): Promise<number> => Number((await redis.pubsub('NUMSUB', channel) as [string, number])[1])

/**
 * Waits until `n` instances subscribe to the channel: a SUBSCRIBE is one round trip behind the join, and a fan-out
 * sent before it lands does not reach that instance.
 */
async function subscribed (channel: string, n: number): Promise<void> {
  await eventually(async () => await numsub(channel) === n, `${n} subscribers of ${channel}`)
}

redisTest('the wire message carries the frame as the publisher encoded it; the receiver slices it without a copy', { timeout: 5000 }, () => {
  const frame = Buffer.from(JSON.stringify({ type: 'news', data: { text: 'héllo' } }))
  const message = encodeMessage('instance-1', { target: { kind: 'room', name: 'lobby' }, frame, except: 'conn-7' })
  assert.ok(message.subarray(message.length - frame.length).equals(frame), 'the frame is the tail, byte for byte')
  const decoded = decodeMessage(message)
  assert.deepEqual({ from: decoded?.from, except: decoded?.except }, { from: 'instance-1', except: 'conn-7' })
  assert.ok(decoded?.frame.equals(frame))
  assert.equal(decoded?.frame.buffer, message.buffer, 'a view on the received message, not a copy')
  assert.equal(decodeMessage(encodeMessage('i', { target: { kind: 'all' }, frame }))?.except, undefined)
  for (const garbage of [Buffer.alloc(0), Buffer.from('hello'), Buffer.from([1, 0, 200, 123]), Buffer.from([2, 0, 2, 123, 125])]) {
    assert.equal(decodeMessage(garbage), undefined)
  }
})

redisTest('room, user and broadcast fan-outs reach every member on every instance exactly once; except works across them', { timeout: 20000 }, async (t) => {
  const { instances: [a, b, c], prefix } = await cluster(t, { size: 3 })
  const a1 = await member(t, a, 'alice', 'lobby')
  const b1 = await member(t, b, 'bob', 'lobby')
  const c1 = await member(t, c, 'carol', 'lobby')
  const c2 = await member(t, c, 'alice')
  const b2 = await member(t, b, 'dave', 'other')
  const everyone = [a1, b1, c1, c2, b2]
  await subscribed(`${prefix}room:lobby`, 3)
  await subscribed(`${prefix}user:alice`, 2)

  assert.equal(a.app.realtime.to('lobby').send('news', { n: 1 }), 1, 'delivered to one member locally')
  for (const m of [a1, b1, c1]) assert.deepEqual(await drain(m), [{ type: 'news', data: { n: 1 } }])
  for (const m of [b2, c2]) assert.deepEqual(await drain(m, 0), [])

  b.app.realtime.toUser('alice').send('dm', { text: 'hi' })
  for (const m of [a1, c2]) assert.deepEqual(await drain(m), [{ type: 'dm', data: { text: 'hi' } }])
  for (const m of [b1, c1, b2]) assert.deepEqual(await drain(m, 0), [])

  c.app.realtime.broadcast('all', null)
  for (const m of everyone) assert.deepEqual(await drain(m), [{ type: 'all', data: null }])

  // except: the sender on instance b is skipped, everyone else in the room gets it, once.
  assert.equal((await b1.request('say', 'lobby')).data, 0)
  for (const m of [a1, c1]) assert.deepEqual(await drain(m), [{ type: 'said', data: { room: 'lobby', from: 'bob' } }])
  assert.deepEqual(await drain(b1, 0), [])
  // ...and a connection id from another instance is skipped there.
  const [bobConn] = b.app.realtime.byUser('bob')
  a.app.realtime.broadcast('all2', 1, { except: bobConn?.id })
  assert.deepEqual(await drain(b1), [])
  for (const m of [a1, c1, c2, b2]) assert.deepEqual(await drain(m, 0), [{ type: 'all2', data: 1 }])
})

redisTest('each instance subscribes only to the rooms and users it has members for', { timeout: 20000 }, async (t) => {
  const { instances: [a, b], prefix } = await cluster(t, { size: 2 })
  // Besides them, each instance listens on a channel of its own (the fallback's batches for its sessions).
  const all = async (): Promise<string[]> => (await redis.pubsub('CHANNELS', `${prefix}*`) as string[]).sort()
  const channels = async (): Promise<string[]> => (await all()).filter((c) => !c.startsWith(`${prefix}instance:`))
  assert.equal((await all()).filter((c) => c.startsWith(`${prefix}instance:`)).length, 2)
  const only = async (expected: string[]): Promise<void> => {
    const want = expected.map((c) => prefix + c).sort()
    await eventually(async () => JSON.stringify(await channels()) === JSON.stringify(want), `channels ${want.join(', ')}`)
  }
  await only(['all'])
  assert.equal(await numsub(`${prefix}all`), 2)

  const x1 = await member(t, a, 'xavier', 'r1')
  const x2 = await member(t, a, 'xena', 'r1')
  await only(['all', 'room:r1', 'user:xavier', 'user:xena'])
  assert.equal(await numsub(`${prefix}room:r1`), 1, 'instance b has no member, so it is not subscribed')
  const y = await member(t, b, 'yolanda', 'r1')
  await subscribed(`${prefix}room:r1`, 2)

  await x1.request('leave', 'r1')
  await sleep(100)
  assert.equal(await numsub(`${prefix}room:r1`), 2, 'a still has a member in r1')
  x1.destroy()
  await x2.close()
  await subscribed(`${prefix}room:r1`, 1) // a unsubscribed when its last member left
  await only(['all', 'room:r1', 'user:yolanda'])
  await y.close()
  await only(['all'])
})

redisTest('roomSize and online answer for the whole cluster, and forget an instance killed without closing', { timeout: 30000 }, async (t) => {
  const { instances: [a, b, c], prefix } = await cluster(t, { size: 3, broker: () => ({ onlineTtl: 1 }) })
  await member(t, a, 'ann', 'hall')
  await member(t, b, 'ben', 'hall')
  await member(t, b, 'ann', 'hall')
  await member(t, c, 'cid', 'hall')
  for (const h of [a, b, c]) assert.equal(await h.app.realtime.roomSize('hall'), 4)
  assert.equal(await a.app.realtime.roomSize('nowhere'), 0)
  assert.equal(await a.app.realtime.online('ben'), true)
  assert.equal(await c.app.realtime.online('ann'), true)
  assert.equal(await a.app.realtime.online('nobody'), false)

  // An instance that closes takes its members out at once.
  await c.close()
  assert.equal(await a.app.realtime.roomSize('hall'), 3)
  assert.equal(await a.app.realtime.online('cid'), false)

  // An instance in a child process joins 4 members, then dies without a word.
  const child = fork(new URL('./helpers/redis-instance.ts', import.meta.url), [REDIS_URL, prefix, 'hall', 'zed', '4'], { execArgv: ['--import', 'tsx'], stdio: 'inherit' })
  t.after(() => { child.kill('SIGKILL') })
  await new Promise((resolve) => child.once('message', resolve))
  assert.equal(await a.app.realtime.roomSize('hall'), 7)
  assert.equal(await b.app.realtime.online('zed'), true)
  child.kill('SIGKILL')
  const killedAt = Date.now()
  for (;;) {
    if (await a.app.realtime.roomSize('hall') === 3 && !await a.app.realtime.online('zed')) break
    assert.ok(Date.now() - killedAt < 3000, 'a killed instance\'s members stop counting within the TTL')
    await sleep(100)
  }
  assert.ok(Date.now() - killedAt > 300, 'and not before its entries expired (the test saw the kill, not a close)')
  // The live instances keep their own counts fresh well past the TTL.
  await sleep(2500)
  assert.equal(await b.app.realtime.roomSize('hall'), 3)
  assert.equal(await a.app.realtime.online('ben'), true)
})

redisTest('a Redis outage longer than ioredis\'s retry budget: local delivery goes on, failures are counted and logged once, ' +
  'subscriptions and presence follow what changed meanwhile, delivery resumes', { timeout: 30000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  t.after(async () => { await proxy.cut() })
  // Reconnecting every 10 ms, an outage of a second is 100 attempts: past the 20 after which ioredis, by default,
  // drops the commands it queued while offline. A long presence TTL: only the rewrite on reconnection can restore it.
  const apps = new Redis(url, { lazyConnect: true, retryStrategy: () => 10 })
  t.after(() => { apps.disconnect() })
  const logs = [captureLogger(), captureLogger()]
  const { instances: [a, b], prefix } = await cluster(t, {
    size: 2,
    broker: () => ({ url: undefined, client: apps, onlineTtl: 60 }),
    logger: (i) => logs[i]?.logger
  })
  const errors = (i: number): string[] => logs[i]?.lines.filter((l) => l.level === 'error').map((l) => l.msg) ?? []
  const infos = (i: number): string[] => logs[i]?.lines.filter((l) => l.level === 'info' && l.msg.startsWith('redis broker')).map((l) => l.msg) ?? []
  const a1 = await member(t, a, 'amy', 'ops')
  const b1 = await member(t, b, 'bill', 'ops')
  await subscribed(`${prefix}room:ops`, 2)
  a.app.realtime.to('ops').send('before', 1)
  assert.deepEqual(await drain(b1), [{ type: 'before', data: 1 }])
  assert.deepEqual(await drain(a1, 0), [{ type: 'before', data: 1 }])

  await proxy.cut()
  await waitFor(() => errors(0).length > 0 && errors(1).length > 0, 3000, 'the outage to be noticed')
  for (let i = 0; i < 20; i++) a.app.realtime.to('ops').send('during', i)
  assert.equal((await drain(a1)).length, 20, 'local members are served during the outage')
  assert.equal(a.app.realtime.stats().brokerFailures, 20, 'every publish of the outage is counted')
  // Membership changes while Redis is away: b leaves ops and joins late.
  await b1.request('leave', 'ops')
  const b2 = await member(t, b, 'bea', 'late')
  await assert.rejects(a.app.realtime.roomSize('ops'), 'a cluster-wide question has no answer while Redis is away')
  // Redis lost its data meanwhile (a restart): the presence entries must be written again.
  await redis.del(...await redis.keys(`${prefix}presence:*`))
  await sleep(1000)
  assert.equal(a.app.realtime.stats().brokerFailures, 20)
  assert.deepEqual(errors(0), ['redis broker: Redis unreachable or not answering; local delivery goes on, cross-instance delivery is paused'],
    'one line for the whole outage, however many retries and failed publishes')
  assert.equal(errors(1).length, 1)

  await proxy.restore()
  await waitFor(() => infos(0).length > 0 && infos(1).length > 0, 5000, 'the end of the outage to be logged')
  await subscribed(`${prefix}room:late`, 1) // the room joined during the outage
  await subscribed(`${prefix}room:ops`, 1) // the room b left during the outage: only a remains
  // Presence written again when the connection came back (the periodic refresh is 20 s away).
  await eventually(async () => await a.app.realtime.roomSize('late') === 1 && await a.app.realtime.roomSize('ops') === 1, 'presence to be rewritten')
  a.app.realtime.to('late').send('after', 2)
  assert.deepEqual(await drain(b2), [{ type: 'after', data: 2 }])
  assert.deepEqual(await drain(b1, 0), [], 'nothing from the outage arrives late, nor for the room b left')
  assert.deepEqual(infos(0), ['redis broker: Redis is back; resubscribed, cross-instance delivery resumes'])
  assert.equal(errors(0).length, 1)
})

redisTest('connections killed by name (CLIENT KILL): the publish in flight is counted, subscriptions come back, delivery resumes', { timeout: 20000 }, async (t) => {
  const logs = [captureLogger(), captureLogger()]
  const { instances: [a, b], prefix } = await cluster(t, { size: 2, logger: (i) => logs[i]?.logger })
  const lines = (i: number, level: string): string[] => logs[i]?.lines.filter((l) => l.level === level && l.msg.startsWith('redis broker')).map((l) => l.msg) ?? []
  const a1 = await member(t, a, 'ada', 'k')
  const b1 = await member(t, b, 'bo', 'k')
  await subscribed(`${prefix}room:k`, 2)
  assert.equal((await clientIds(redis, `${prefix}pub`)).length, 2)
  assert.equal(await killClients(redis, `${prefix}sub`), 2)
  assert.equal(await killClients(redis, `${prefix}pub`), 2)
  a.app.realtime.to('k').send('lost', 0)
  assert.deepEqual(await a1.nextMessage(), { type: 'lost', data: 0 }, 'local delivery does not wait on Redis')
  await waitFor(() => a.app.realtime.stats().brokerFailures === 1, 3000, 'the publish on the killed connection to be counted')

  await waitFor(() => lines(0, 'info').length > 0 && lines(1, 'info').length > 0, 5000, 'both instances to reconnect')
  // ioredis resubscribes both instances.
  await subscribed(`${prefix}room:k`, 2)
  await subscribed(`${prefix}all`, 2)
  b.app.realtime.to('k').send('again', 1)
  assert.deepEqual(await drain(a1), [{ type: 'again', data: 1 }])
  assert.deepEqual(await drain(b1, 0), [{ type: 'again', data: 1 }], 'the lost fan-out never arrives')
  for (const i of [0, 1]) assert.equal(lines(i, 'error').length, 1, 'the outage is logged once, though no socket error was seen')
})

redisTest('a Redis that stops answering: publishes past maxPendingBytes fail at once instead of piling up', { timeout: 20000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  t.after(async () => { await proxy.cut() })
  const logs = captureLogger()
  const { instances: [a, b], prefix } = await cluster(t, { size: 2, broker: () => ({ url, maxPendingBytes: 8192 }), logger: (i) => i === 0 ? logs.logger : undefined })
  const a1 = await member(t, a, 'al', 's')
  const b1 = await member(t, b, 'bé', 's')
  await subscribed(`${prefix}room:s`, 2)
  proxy.stall()
  const text = 'x'.repeat(900)
  for (let i = 0; i < 40; i++) a.app.realtime.to('s').send('big', { i, text })
  assert.equal((await drain(a1)).length, 40, 'local members get everything')
  const failures = a.app.realtime.stats().brokerFailures
  assert.ok(failures >= 30 && failures < 40, `about 8 KiB held, the rest counted as failed (${failures})`)
  assert.equal(logs.lines.filter((l) => l.level === 'error').length, 1)

  proxy.resume()
  const held = await drain(b1, 300)
  assert.equal(held.length, 40 - failures, 'what was held crosses once Redis answers')
  await waitFor(() => logs.lines.some((l) => l.msg.startsWith('redis broker: Redis is back')), 3000, 'the stall to end')
  a.app.realtime.to('s').send('after', 1)
  assert.deepEqual(await drain(b1), [{ type: 'after', data: 1 }])
  assert.equal(a.app.realtime.stats().brokerFailures, failures)
})

redisTest('messages on the cluster\'s channels that are not the broker\'s are ignored', { timeout: 10000 }, async (t) => {
  const { instances: [a, b], prefix } = await cluster(t, { size: 2 })
  const a1 = await member(t, a, 'u1', 'g')
  const b1 = await member(t, b, 'u2', 'g')
  await subscribed(`${prefix}room:g`, 2)
  for (const channel of [`${prefix}all`, `${prefix}room:g`]) {
    await redis.publish(channel, 'not ours')
    await redis.publish(channel, Buffer.from([1, 0, 3, 1, 2, 3, 4]))
  }
  assert.deepEqual(await drain(a1), [])
  assert.deepEqual(await drain(b1, 0), [])
  a.app.realtime.to('g').send('fine', true)
  assert.deepEqual(await drain(b1), [{ type: 'fine', data: true }])
})

redisTest('{ client }: the broker duplicates the app\'s connection, and app.close() closes the duplicates only', { timeout: 15000 }, async (t) => {
  const own = new Redis(REDIS_URL)
  t.after(() => { own.disconnect() })
  const { instances: [a, b], prefix } = await cluster(t, { size: 2, broker: () => ({ url: undefined, client: own }) })
  const a1 = await member(t, a, 'p', 'q')
  const b1 = await member(t, b, 'r', 'q')
  await subscribed(`${prefix}room:q`, 2)
  b.app.realtime.to('q').send('via-client', 1)
  assert.deepEqual(await drain(a1), [{ type: 'via-client', data: 1 }])
  assert.deepEqual(await drain(b1, 0), [{ type: 'via-client', data: 1 }])
  assert.equal((await clientIds(redis, `${prefix}pub`)).length, 2)
  assert.equal((await clientIds(redis, `${prefix}sub`)).length, 2)

  await a.close()
  await b.close()
  assert.equal(own.status, 'ready')
  assert.equal(await own.ping(), 'PONG')
  assert.deepEqual([...await clientIds(redis, `${prefix}pub`), ...await clientIds(redis, `${prefix}sub`)], [])
})

redisTest('{ url }: app.close() closes both connections and leaves no keys behind', { timeout: 15000 }, async (t) => {
  const { instances: [a], prefix } = await cluster(t, { size: 1 })
  await member(t, a, 'solo', 'room')
  assert.equal(await a.app.realtime.roomSize('room'), 1)
  assert.deepEqual((await redis.keys(`${prefix}*`)).sort(), [`${prefix}presence:room:room`, `${prefix}presence:user:solo`])
  await a.close()
  assert.deepEqual([...await clientIds(redis, `${prefix}pub`), ...await clientIds(redis, `${prefix}sub`)], [])
  assert.deepEqual(await redis.keys(`${prefix}*`), [], 'a clean close removes its presence entries')
})

redisTest('an unreachable Redis at start fails the registration with a clear error and leaves nothing running', { timeout: 10000 }, async () => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  await proxy.cut()
  await assert.rejects(startApp({ realtime: { auth: false, broker: redisBroker({ url, prefix: uniquePrefix() }) } }),
    /redis broker: cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+ at start .*is it running\?/)
  // It says where it tried, never with the password.
  const secret = url.replace('redis://', 'redis://app:s3cret-pass@')
  const err = await startApp({ realtime: { auth: false, broker: redisBroker({ url: secret, prefix: uniquePrefix() }) } }).then(() => undefined, (e: Error) => e)
  assert.ok(err instanceof Error)
  assert.match(err.message, /redis:\/\/app:\*\*\*@127\.0\.0\.1:\d+/)
  assert.doesNotMatch(err.message, /s3cret-pass/)
})

test('the broker\'s presenceTtl is the deprecated name of onlineTtl: it still works, warns once, and both at once are refused', { timeout: 10000 }, async (t) => {
  const warnings: Error[] = []
  const onWarning = (w: Error): void => { warnings.push(w) }
  process.on('warning', onWarning)
  t.after(() => { process.off('warning', onWarning) })
  const url = 'redis://127.0.0.1:1'
  redisBroker({ url, onlineTtl: 5 })
  redisBroker({ url, presenceTtl: 5 })
  redisBroker({ url, presenceTtl: 6 })
  await new Promise((resolve) => setImmediate(resolve))
  const deprecations = warnings.filter((w) => (w as Error & { code?: string }).code === 'RT_DEP_PRESENCE_TTL')
  assert.equal(deprecations.length, 1)
  assert.match(deprecations[0]?.message ?? '', /onlineTtl/)
  assert.throws(() => redisBroker({ url, onlineTtl: 5, presenceTtl: 5 }), /onlineTtl and its old name presenceTtl/)
})
