// Issue 19 on a single Redis: guarantees of the Redis broker that hold under faults (room names of any characters,
// except strings that cannot corrupt frames, counts repaired after a failed write, keys that expire, a bounded close).
import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import fc from 'fast-check'
import { redisBroker } from '../lib/redis.js'
import { RedisHistoryStore } from '../lib/history/redis.js'
import { decodeMessage, decodeNumbered, encodeMessage } from '../lib/broker/redis-codec.js'
import type { HistoryPolicy } from '../lib/history/options.js'
import { RedisProxy, redisTest, REDIS_URL, requireRedis, uniquePrefix } from './helpers/redis.js'
import { checkRoomNames } from './helpers/room-names.js'
import { test } from 'node:test'
import { escapeName, hashTag, unescapeName } from '../lib/redis-tag.js'
import { call, client, historyApp } from './helpers/history.js'
import { Op, RawClient, frame } from './helpers/raw.js'
import type { TestApp } from './helpers/app.js'
import type { TestClient } from './helpers/client.js'

/** Two instances on one Redis (history on `h:` rooms), a listener on B; all closed after the test. */
async function twoInstances (t: TestContext): Promise<{ a: TestApp, b: TestApp, listener: TestClient, apps: TestApp[], prefix: string }> {
  const prefix = uniquePrefix()
  const apps: TestApp[] = []
  const clients: TestClient[] = []
  t.after(async () => {
    for (const c of clients) c.destroy()
    await Promise.all(apps.map(async (h) => { await h.close() }))
  })
  for (let i = 0; i < 2; i++) apps.push(await historyApp({}, { broker: redisBroker({ url: REDIS_URL, prefix }) }))
  const [a, b] = apps as [TestApp, TestApp]
  const listener = await client(b)
  clients.push(listener)
  return { a, b, listener, apps, prefix }
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

redisTest('room names of any characters ("}", "%", "{}", 200 unicode characters): publish with history, recovery, roomSize', { timeout: 30000 }, async (t) => {
  const prefix = uniquePrefix()
  await checkRoomNames(t, () => redisBroker({ url: REDIS_URL, prefix }))
})

redisTest('a prefix with "{" or "}" is refused when the broker is made, naming the option', { timeout: 5000 }, () => {
  for (const prefix of ['{rt}:', 'rt}:', 'a{']) {
    assert.throws(() => redisBroker({ url: REDIS_URL, prefix }), (err: Error) => err instanceof TypeError && err.message.includes('prefix option') && err.message.includes(JSON.stringify(prefix)))
  }
})

const POLICY: HistoryPolicy = { size: 10, ttl: 60_000, metaTtl: 60_000, maxRecover: 10, maxRecoverBytes: 1 << 20 }

redisTest('numbered frames: the append script\'s message decodes to the except and frame it was given, whatever they hold (property)', { timeout: 60000 }, async (t) => {
  const redis = await requireRedis()
  const sub = redis.duplicate()
  t.after(() => { redis.disconnect(); sub.disconnect() })
  const prefix = uniquePrefix()
  const channel = `${prefix}room:p`
  const store = new RedisHistoryStore(redis, prefix, () => channel, async () => {})
  const received: Buffer[] = []
  sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => { received.push(message) })
  await sub.subscribe(channel)
  let offset = 0
  // Strings of any unicode (| and : and the empty string likely), long ones too; the frame ends as the store ends it.
  const text = fc.oneof(fc.string({ unit: 'grapheme' }), fc.constantFrom('', '|', ':', '::|', 'user|42', '42:7:3:x|'), fc.string({ unit: fc.constantFrom('|', ':', '\x02', '\x04', '9'), maxLength: 40 }))
  await fc.assert(fc.asyncProperty(fc.option(text, { nil: undefined }), text, async (except, head) => {
    const before = Date.now()
    const appended = await store.append('p', POLICY, head, except)
    offset++
    assert.equal(appended.offset, offset)
    while (received.length === 0) await sleep(1)
    const decoded = decodeNumbered(received.shift() as Buffer)
    const { publishedAt, ...rest } = decoded ?? {}
    assert.deepEqual(decoded && { ...rest, frame: decoded.frame.toString() }, { epoch: appended.epoch, offset, except: except === '' ? undefined : except, frame: `${head}${offset}}` })
    // The \x02 format carries the publish time (for the broker lag); the counted one, for excepts with | or :, has no room for it.
    if (/[|:]/.test(except ?? '')) assert.equal(publishedAt, undefined)
    else assert.ok(publishedAt !== undefined && publishedAt >= before && publishedAt <= Date.now(), `published at ${publishedAt}`)
  }), { numRuns: 300 })
})

redisTest('numbered frames of the previous format (\\x02, from an instance not yet upgraded) still decode', { timeout: 5000 }, () => {
  assert.deepEqual(decodeNumbered(Buffer.from('\x02Ab_-9:12:conn-1|{"type":"said","offset":12}')),
    { epoch: 'Ab_-9', offset: 12, except: 'conn-1', frame: Buffer.from('{"type":"said","offset":12}') })
  assert.deepEqual(decodeNumbered(Buffer.from('\x02e:3:|{}')), { epoch: 'e', offset: 3, except: undefined, frame: Buffer.from('{}') })
  // This version's \x02 frames end their head with the publish time; the previous version split off three fields only.
  const timed = Buffer.from('\x02e:3:conn-1:1700000000123|{}')
  assert.deepEqual(decodeNumbered(timed), { epoch: 'e', offset: 3, except: 'conn-1', frame: Buffer.from('{}'), publishedAt: 1700000000123 })
  const [epoch, offset, except] = timed.subarray(1, timed.indexOf(0x7c)).toString().split(':')
  assert.deepEqual([epoch, Number(offset), except], ['e', 3, 'conn-1'], 'what an instance not yet upgraded reads of it')
  for (const bad of ['\x02e:3', '\x04e:3:5:ab', '\x04e:x:0:{}', '\x04e:3:-1:{}', '\x05e:1:0:{}']) assert.equal(decodeNumbered(Buffer.from(bad)), undefined, JSON.stringify(bad))
})

redisTest('history rooms across instances: an except with "|" or ":" excludes exactly that connection and corrupts no frame', { timeout: 20000 }, async (t) => {
  const { a, b, listener, apps } = await twoInstances(t)
  await call(listener, 'join', { room: 'h:x' })
  const [member] = [...b.app.realtime.roomMembers('h:x')]
  assert.ok(member !== undefined)
  await a.app.realtime.to('h:x').publish('said', { n: 1 }, { except: 'user|42' })
  assert.deepEqual(await listener.nextMessage(), { type: 'said', data: { n: 1 }, room: 'h:x', offset: 1 })
  // An id with ':' after the member's own is another id: the member gets it; its own id excludes it.
  await a.app.realtime.to('h:x').publish('said', { n: 2 }, { except: `${member.id}:x|y` })
  assert.deepEqual(await listener.nextMessage(), { type: 'said', data: { n: 2 }, room: 'h:x', offset: 2 })
  await a.app.realtime.to('h:x').publish('said', { n: 3 }, { except: member.id })
  a.app.realtime.to('h:x').send('said', { n: 4 }, { except: '' })
  assert.deepEqual(await listener.nextMessage(), { type: 'said', data: { n: 4 }, room: 'h:x', offset: 4 })
  assert.deepEqual(apps.map((h) => h.app.realtime.stats().brokerFailures), [0, 0])
})

redisTest('plain fan-outs: any except and type, longer than 65535 bytes too, cross the codec unchanged (property)', { timeout: 30000 }, () => {
  const text = fc.oneof(fc.string({ unit: 'grapheme' }), fc.constantFrom('', '|', ':', 'user|42'), fc.nat({ max: 70_000 }).map((n) => '}'.repeat(n) + 'é'.repeat(n % 7)))
  fc.assert(fc.property(fc.option(text, { nil: undefined }), fc.option(text, { nil: undefined }), fc.uint8Array({ maxLength: 64 }), (except, type, bytes) => {
    const frame = Buffer.from(bytes)
    const decoded = decodeMessage(encodeMessage('instance-1', { target: { kind: 'room', name: 'r' }, frame, except, type }))
    assert.ok(decoded !== undefined)
    assert.deepEqual({ ...decoded, publishedAt: typeof decoded.publishedAt }, { from: 'instance-1', except, type, frame, publishedAt: 'number' })
  }), { numRuns: 200 })
})

redisTest('a fan-out whose except is longer than 65535 bytes crosses instances (publish never throws)', { timeout: 20000 }, async (t) => {
  const { a, listener, apps, prefix } = await twoInstances(t)
  await call(listener, 'join', { room: 'plain' })
  const redis = await requireRedis()
  t.after(() => { redis.disconnect() })
  while (Number((await redis.pubsub('NUMSUB', `${prefix}room:plain`) as [string, number])[1]) < 1) await sleep(10)
  a.app.realtime.to('plain').send('said', { n: 1 }, { except: 'x'.repeat(70_000) })
  assert.deepEqual(await listener.nextMessage(), { type: 'said', data: { n: 1 } })
  assert.deepEqual(apps.map((h) => h.app.realtime.stats().brokerFailures), [0, 0])
})

redisTest('a count written while Redis is away is counted as failed and repaired once it is back, not a refresh later', { timeout: 30000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  const prefix = uniquePrefix()
  const apps: TestApp[] = []
  const clients: TestClient[] = []
  t.after(async () => {
    for (const c of clients) c.destroy()
    await Promise.all(apps.map(async (h) => { await h.close() }))
    await proxy.cut()
  })
  // A presence TTL of 60 s: its refresh (every 20 s) cannot be what repairs the counts within this test.
  apps.push(await historyApp({}, { broker: redisBroker({ url, prefix, onlineTtl: 60 }) }))
  apps.push(await historyApp({}, { broker: redisBroker({ url: REDIS_URL, prefix, onlineTtl: 60 }) }))
  const [a, b] = apps as [TestApp, TestApp]
  const leaver = await client(a)
  clients.push(leaver)
  await call(leaver, 'join', { room: 'left' })
  assert.equal(await b.app.realtime.roomSize('left'), 1)
  await proxy.cut()
  // Until A's connection has seen the cut, its reads fail.
  for (let i = 0; i < 200 && await a.app.realtime.roomSize('left').then(() => true, () => false); i++) await sleep(10)
  const before = a.app.realtime.stats().brokerCountFailures
  const stayer = await client(a)
  clients.push(stayer)
  await call(stayer, 'join', { room: 'stayed' })
  leaver.destroy()
  for (let i = 0; i < 200 && a.app.realtime.roomMembers('left').size > 0; i++) await sleep(10)
  assert.ok(a.app.realtime.stats().brokerCountFailures >= before + 2, 'the two counts not written are counted')
  await proxy.restore()
  const start = Date.now()
  while (await b.app.realtime.roomSize('stayed') !== 1 || await b.app.realtime.roomSize('left') !== 0) {
    assert.ok(Date.now() - start < 5000, 'the counts are repaired once Redis is back')
    await sleep(20)
  }
})

/** Every key under the prefix but the presence feature's (`pr-*`, `pr:`, lib/presence/redis.ts: not this broker's). */
async function keysOf (redis: Awaited<ReturnType<typeof requireRedis>>, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    for (const key of keys) {
      if (key.startsWith(`${prefix}pr-`) || key.startsWith(`${prefix}pr:`)) continue
      out.set(key, await redis.pttl(key))
    }
  } while (cursor !== '0')
  return out
}

/** Two instances through their own proxies with members in history rooms and plain rooms, each room on both. */
async function busyPair (t: TestContext, prefix: string): Promise<{ apps: TestApp[], proxies: RedisProxy[] }> {
  const proxies = [new RedisProxy(), new RedisProxy()]
  const apps: TestApp[] = []
  const clients: TestClient[] = []
  t.after(async () => {
    for (const c of clients) c.destroy()
    await Promise.all(apps.map(async (h) => { await h.close() }))
    for (const p of proxies) await p.cut()
  })
  for (const proxy of proxies) apps.push(await historyApp({ ttl: 60_000 }, { broker: redisBroker({ url: await proxy.start(), prefix, onlineTtl: 60 }) }))
  for (const h of apps) {
    const c = await client(h)
    clients.push(c)
    for (const room of ['h:a', 'h:b', 'plain', '']) await call(c, 'join', { room })
  }
  for (const room of ['h:a', 'h:b']) await (apps[0] as TestApp).app.realtime.to(room).publish('said', { n: 1 })
  return { apps, proxies }
}

redisTest('every key the broker writes expires or is removed by its last user: after a clean shutdown, and after instances vanish', { timeout: 30000 }, async (t) => {
  const redis = await requireRedis()
  t.after(() => { redis.disconnect() })
  for (const vanish of [false, true]) {
    const prefix = uniquePrefix()
    const { apps, proxies } = await busyPair(t, prefix)
    const live = await keysOf(redis, prefix)
    assert.ok([...live.keys()].some((k) => k.includes('presence:room:')) && [...live.keys()].some((k) => k.includes('hist:')), [...live.keys()].join())
    if (vanish) {
      // As a SIGKILL: the connections drop, no cleanup runs.
      for (const p of proxies) await p.cut()
    } else {
      for (const h of apps) await h.close()
    }
    const left = await keysOf(redis, prefix)
    for (const [key, pttl] of left) assert.ok(pttl > 0, `${key} has no expiry (PTTL ${pttl}) ${vanish ? 'after the instances vanished' : 'after a clean shutdown'}`)
    if (!vanish) assert.deepEqual([...left.keys()].filter((k) => k.includes('presence:')), [], 'a clean shutdown removes its counts')
  }
})

redisTest('app.close() with history rooms on a Redis that stopped answering finishes within shutdown.timeout + 1 s', { timeout: 30000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  const prefix = uniquePrefix()
  const h = await historyApp({}, { broker: redisBroker({ url, prefix }), shutdown: { timeout: 1000 } })
  let closed = false
  const clients: TestClient[] = []
  t.after(async () => {
    for (const c of clients) c.destroy()
    if (!closed) await h.close()
    proxy.resume()
    await proxy.cut()
  })
  const c = await client(h)
  clients.push(c)
  for (const room of ['h:a', 'h:b', 'plain']) await call(c, 'join', { room })
  // A client that never answers the close handshake: app.close() waits the whole shutdown.timeout for it.
  const mute = await RawClient.open(h.port, '/rt')
  t.after(() => { mute.socket.destroy() })
  mute.socket.write(frame(Op.TEXT, JSON.stringify({ type: 'joinMany', data: { rooms: ['h:a', 'plain', 'mute'] }, id: 1 }), { mask: true }))
  for (let i = 0; i < 200 && h.app.realtime.roomMembers('mute').size === 0; i++) await sleep(10)
  assert.equal(h.app.realtime.roomMembers('mute').size, 1)
  await h.app.realtime.to('h:a').publish('said', { n: 1 })
  proxy.stall()
  // Work in flight when Redis stops answering: appends, a join's read, publishes, count writes.
  h.app.realtime.to('h:a').publish('said', { n: 2 }).catch(() => {})
  h.app.realtime.to('plain').send('said', { n: 3 })
  c.sendJson({ type: 'join', data: { room: 'h:c' }, id: 1 })
  await sleep(100)
  const start = Date.now()
  await h.close()
  closed = true
  const took = Date.now() - start
  assert.ok(took < 1000 + 1000, `app.close() took ${took} ms`)
})

redisTest('roomSize and online on a Redis that stopped answering reject within their bound instead of hanging', { timeout: 30000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  const h = await historyApp({}, { broker: redisBroker({ url, prefix: uniquePrefix() }) })
  t.after(async () => {
    proxy.resume()
    await h.close()
    await proxy.cut()
  })
  assert.equal(await h.app.realtime.roomSize('r'), 0)
  proxy.stall()
  const settled = await Promise.allSettled([h.app.realtime.roomSize('r'), h.app.realtime.online('u')])
  assert.deepEqual(settled.map((s) => s.status === 'rejected' ? (s.reason as Error).name : s.status), ['DeadlineError', 'DeadlineError'])
})

test('hash tags: any name (the empty one included) maps to a non-empty tag with no "}", one-to-one', () => {
  assert.equal(hashTag(''), '{%}')
  assert.equal(hashTag('lobby'), '{lobby}')
  fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 60 }), fc.string({ unit: 'grapheme', maxLength: 60 }), (a, b) => {
    const inner = escapeName(a)
    assert.ok(inner.length > 0 && !inner.includes('}'))
    assert.equal(unescapeName(inner), a)
    if (a !== b) assert.notEqual(hashTag(a), hashTag(b))
  }), { numRuns: 2000 })
})
