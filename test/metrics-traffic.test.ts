// Metrics against real traffic: each series is checked against what the clients actually received (issue 22 item 9).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import { Registry } from 'prom-client'
import { Redis } from 'ioredis'
import { RealtimeError, type RealtimeOptions } from '../lib/index.js'
import { realtimeMetrics } from '../lib/metrics.js'
import { encodeEvent, envelopeType } from '../lib/protocol/envelope.js'
import { redisBroker } from '../lib/redis.js'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, waitFor, type TestClient } from './helpers/client.js'
import { REDIS_URL, redisTest, requireRedis, uniquePrefix } from './helpers/redis.js'
import { parseExposition } from './helpers/metrics.js'

const M = 'fastify_realtime_'

/** History rooms start with `h:`, presence rooms with `p:`; any other room is plain. */
const route = {
  url: '/rt',
  messages: {
    join: {
      schema: Type.Object({ room: Type.String(), since: Type.Optional(Type.Unknown()) }),
      handler: async ({ room, since }: { room: string, since?: unknown }, conn: any) => { await conn.join(room, since === undefined ? undefined : { since }); return room }
    },
    leave: { schema: Type.String(), handler: (room: string, conn: any) => { conn.leave(room); return room } },
    echo: { schema: Type.String(), handler: (text: string) => text },
    refuse: { schema: Type.Null(), handler: () => { throw new RealtimeError('NOT_ALLOWED', 'no') } }
  },
  events: { said: Type.Object({ n: Type.Number() }), news: Type.String() }
}

interface Metered { h: TestApp, registry: Registry }

async function meteredApp (realtime: RealtimeOptions = {}): Promise<Metered> {
  const registry = new Registry()
  const h = await startApp({
    jwt: false,
    realtime: {
      auth: { authenticate: (request) => ({ sub: String(request.headers['x-user'] ?? 'anon') }) },
      limits: { rate: 1000, burst: 1000 },
      history: { rooms: /^h:/ },
      presence: { rooms: /^p:/ },
      metrics: realtimeMetrics({ registry }),
      ...realtime
    },
    setup: (app) => { app.realtimeRoute(route) }
  })
  return { h, registry }
}

/** What one client received: frames by their envelope type (`binary` for binary frames), and payload bytes. */
interface Tally {
  c: TestClient
  types: Map<string, number>
  bytes: number
}

async function tallied (h: TestApp, user: string): Promise<Tally> {
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': user } })
  const tally: Tally = { c, types: new Map(), bytes: 0 }
  c.ws.on('message', (data: Buffer, isBinary: boolean) => {
    tally.bytes += data.length
    const type = isBinary ? 'binary' : String(JSON.parse(data.toString()).type)
    tally.types.set(type, (tally.types.get(type) ?? 0) + 1)
  })
  return tally
}

/** Reads messages until one of `type` (for `reply`: the reply to a request just sent) arrives. */
async function until (c: TestClient, type: string): Promise<any> {
  for (;;) {
    const m = await c.nextMessage(5000)
    if (m.type === type || (type === 'reply' && m.type === 'error')) return m
  }
}

/** The scrape as `series → value`. */
async function scrape (registry: Registry): Promise<Map<string, number>> {
  return parseExposition(await registry.metrics())
}

/**
 * Waits until the instance has sent nothing new for a while and its clients received every byte of it, so that
 * the scrape and the tallies describe the same traffic.
 */
async function settled (h: TestApp, tallies: Tally[]): Promise<void> {
  let last = -1
  let stableSince = Date.now()
  await waitFor(() => {
    const out = h.app.realtime.stats().bytesOut
    if (out !== last) {
      last = out
      stableSince = Date.now()
    }
    const received = tallies.reduce((sum, t) => sum + t.bytes, 0)
    return received === out && Date.now() - stableSince >= 150
  }, 8000, 'the clients to receive every byte the instance sent')
}

/** Frames the clients received, by type. */
function receivedTypes (tallies: Tally[]): Map<string, number> {
  const received = new Map<string, number>()
  for (const t of tallies) for (const [type, n] of t.types) received.set(type, (received.get(type) ?? 0) + n)
  return received
}

/**
 * Every `messages_sent_total` series equals the frames of that type the instance's clients received: none is
 * `unknown` among what the plugin sends, and `stats().messagesOut` is their sum.
 */
function checkTypes (series: Map<string, number>, h: TestApp, tallies: Tally[]): void {
  const received = receivedTypes(tallies)
  const counted = new Map<string, number>()
  for (const [name, value] of series) {
    const match = /^fastify_realtime_messages_sent_total\{route="\/rt",type="([^"]*)"\}$/.exec(name)
    if (match !== null) counted.set(match[1] as string, value)
  }
  for (const [type, n] of received) assert.equal(counted.get(type), n, `messages_sent_total{type="${type}"}`)
  for (const [type, n] of counted) assert.equal(n, received.get(type) ?? 0, `messages_sent_total{type="${type}"} (no client received one)`)
  assert.equal(counted.get('unknown'), 0, 'nothing the plugin sends is labelled unknown')
  assert.equal(h.app.realtime.stats().messagesOut, [...received.values()].reduce((a, b) => a + b, 0), 'stats().messagesOut is the frames received')
}

/** `sent_bytes_total` equals `stats().bytesOut` and the payload bytes the instance's clients received. */
function checkBytes (series: Map<string, number>, h: TestApp, tallies: Tally[]): void {
  const bytes = tallies.reduce((sum, t) => sum + t.bytes, 0)
  assert.equal(h.app.realtime.stats().bytesOut, bytes, 'stats().bytesOut is what the clients received')
  assert.equal(series.get(`${M}sent_bytes_total{route="/rt"}`), bytes, 'sent_bytes_total is what the clients received')
}

test('one instance: every frame the clients received is counted under its type, with its bytes; fan-outs once each, plain and history rooms', { timeout: 20000 }, async (t) => {
  const { h, registry } = await meteredApp()
  t.after(() => h.close())
  const alice = await tallied(h, 'alice')
  const bob = await tallied(h, 'bob')
  t.after(() => { alice.c.destroy(); bob.c.destroy() })

  // Replies, an error, a pong, and joins of a plain, a history and a presence room (rt.position, rt.presence, diffs).
  assert.equal((await alice.c.request('echo', 'hi')).data, 'hi')
  assert.equal((await alice.c.request('refuse', null)).error.code, 'NOT_ALLOWED')
  alice.c.sendJson({ type: 'ping', id: 'p1' })
  await until(alice.c, 'pong')
  for (const c of [alice.c, bob.c]) {
    for (const room of ['plain', 'h:1', 'p:1']) {
      c.sendJson({ type: 'join', data: { room }, id: room })
      await until(c, 'reply')
    }
  }

  // Fan-outs: 2 to a plain room, 3 sent and 1 published to a history room, 1 to a user, 1 to everyone.
  const realtime = h.app.realtime
  for (let n = 1; n <= 2; n++) assert.equal(realtime.to('plain').send('news', `plain ${n}`), 2)
  for (let n = 1; n <= 3; n++) assert.equal(realtime.to('h:1').send('said', { n }), 2)
  const { epoch } = await realtime.to('h:1').publish('said', { n: 4 })
  realtime.toUser('alice').send('news', 'to alice')
  assert.equal(realtime.broadcast('news', 'to all'), 2)
  // A direct event and a binary frame.
  const conn = realtime.byUser('bob')[0]
  assert.ok(conn !== undefined)
  assert.ok(conn.send('news', 'direct'))
  assert.ok(conn.sendBinary(Buffer.from([1, 2, 3])))

  // A late joiner replays the history room from its start; bob leaves the history and the presence rooms.
  const carol = await tallied(h, 'carol')
  t.after(() => { carol.c.destroy() })
  carol.c.sendJson({ type: 'join', data: { room: 'h:1', since: { epoch, offset: 0 } }, id: 'c' })
  const position = await until(carol.c, 'rt.position')
  assert.equal(position.data.recovery.recovered, true)
  for (let n = 1; n <= 4; n++) assert.equal((await carol.c.nextMessage()).data.n, n)
  for (const room of ['h:1', 'p:1']) {
    bob.c.sendJson({ type: 'leave', data: room, id: `leave ${room}` })
    await until(bob.c, 'reply')
  }

  const tallies = [alice, bob, carol]
  await settled(h, tallies)
  const received = receivedTypes(tallies)
  // The traffic was what the test means to count: each kind of frame reached the clients.
  assert.equal(received.get('said'), 4 * 2 + 4, 'history events: 4 live to 2 members, 4 replayed')
  assert.equal(received.get('rt.position'), 2 + 1 + 1, 'two joins, the replaying join, bob\'s leave')
  assert.equal(received.get('rt.presence.left'), 1)
  assert.ok((received.get('rt.presence') ?? 0) >= 2 && (received.get('rt.presence.diff') ?? 0) >= 1)
  const series = await scrape(registry)

  await t.test('messages_sent_total: each type (history events live and replayed, presence frames, rt.position) as many as received', () => {
    checkTypes(series, h, tallies)
  })
  await t.test('sent_bytes_total: stats().bytesOut, and the bytes the clients received', () => {
    checkBytes(series, h, tallies)
  })
  await t.test('fanouts_total: once per fan-out, to plain and history rooms alike', () => {
    assert.equal(series.get(`${M}fanouts_total{target="room"}`), 2 + 3 + 1)
    assert.equal(series.get(`${M}fanouts_total{target="user"}`), 1)
    assert.equal(series.get(`${M}fanouts_total{target="all"}`), 1)
  })
  await t.test('broker_publishes_total and broker_lag_seconds: nothing on one instance without a broker', () => {
    assert.equal(series.get(`${M}broker_publishes_total`), 0)
    assert.equal(series.get(`${M}broker_lag_seconds_count`), 0)
  })
})

test('envelopeType reads the type an encoded envelope starts with, escapes included; anything else is no type (unknown)', () => {
  for (const type of ['said', 'a"b', 'back\\slash\\', 'π.ü', '"', '\\"', 'x'.repeat(200)]) {
    const text = encodeEvent(type, { n: 1, type: 'not this one' })
    assert.equal(envelopeType(text), type, JSON.stringify(type))
    assert.equal(envelopeType(Buffer.from(text)), type, `${JSON.stringify(type)} as bytes`)
  }
  for (const frame of ['', 'not json', '{"data":1,"type":"said"}', '{"type":1}', '{"type":"unterminated']) assert.equal(envelopeType(frame), '', frame)
})

test('frames an app encodes itself (sendText, sendFrame) are counted under their declared type, else unknown', { timeout: 10000 }, async (t) => {
  const { h, registry } = await meteredApp()
  t.after(() => h.close())
  const c = await tallied(h, 'dora')
  t.after(() => { c.c.destroy() })
  const conn = h.app.realtime.byUser('dora')[0]
  assert.ok(conn !== undefined)
  assert.ok(conn.sendText(encodeEvent('news', 'text')))
  assert.ok(conn.sendFrame(Buffer.from(encodeEvent('said', { n: 1 }))))
  assert.ok(conn.sendText('{"kind":"no type first"}'))
  await settled(h, [c])
  const series = await scrape(registry)
  const sent = (type: string): number | undefined => series.get(`${M}messages_sent_total{route="/rt",type="${type}"}`)
  assert.deepEqual([sent('news'), sent('said'), sent('unknown')], [1, 1, 1])
  checkBytes(series, h, [c])
})

/** Deletes every key of a test's prefix. */
async function dropKeys (redis: Redis, prefix: string): Promise<void> {
  const keys = await redis.keys(`${prefix}*`)
  if (keys.length > 0) await redis.del(...keys)
}

redisTest('two instances on Redis: broker publishes and lag for plain and history rooms, presence frames by type, every series against the clients', { timeout: 30000 }, async (t) => {
  const redis = await requireRedis()
  const prefix = uniquePrefix()
  const apps: Metered[] = []
  const clients: Tally[] = []
  // In this order: clients, then apps (which remove their own entries), then whatever keys of the prefix are left.
  t.after(async () => {
    for (const c of clients) c.c.destroy()
    for (const m of apps) await m.h.close()
    await dropKeys(redis, prefix)
    redis.disconnect()
  })
  const a = await meteredApp({ broker: redisBroker({ url: REDIS_URL, prefix }) })
  apps.push(a)
  const b = await meteredApp({ broker: redisBroker({ url: REDIS_URL, prefix }) })
  apps.push(b)
  const onA = await tallied(a.h, 'ann')
  clients.push(onA)
  const onB = await tallied(b.h, 'ben')
  clients.push(onB)
  for (const c of [onA.c, onB.c]) {
    for (const room of ['lobby', 'h:r', 'p:r']) {
      c.sendJson({ type: 'join', data: { room }, id: room })
      await until(c, 'reply')
    }
  }
  // Both instances subscribed to the plain room's channel before anything is published to it.
  for (let tries = 0; ; tries++) {
    const [, subscribers] = await redis.pubsub('NUMSUB', `${prefix}room:lobby`) as [string, number]
    if (Number(subscribers) === 2) break
    assert.ok(tries < 300, 'both instances subscribe to the room within 3 s')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }

  // A third member enters the presence room on A: its diff reaches both (B's through Redis).
  const late = await tallied(a.h, 'cy')
  clients.push(late)
  late.c.sendJson({ type: 'join', data: { room: 'p:r' }, id: 'p:r' })
  await until(late.c, 'reply')

  // A: 3 plain fan-outs, 2 history sends and 1 history publish; B: 2 plain fan-outs.
  for (let n = 1; n <= 3; n++) a.h.app.realtime.to('lobby').send('news', `a ${n}`)
  for (let n = 1; n <= 2; n++) a.h.app.realtime.to('h:r').send('said', { n })
  await a.h.app.realtime.to('h:r').publish('said', { n: 3 })
  for (let n = 1; n <= 2; n++) b.h.app.realtime.to('lobby').send('news', `b ${n}`)
  await waitFor(() => [onA, onB].every((c) => c.types.get('news') === 5 && c.types.get('said') === 3 && c.types.has('rt.presence.diff')), 8000, 'every fan-out and diff on both instances')
  await settled(a.h, [onA, late])
  await settled(b.h, [onB])

  // Each client got the protocol's own frames (each instance counted them under their types: checkTypes).
  for (const c of [onA, onB]) {
    for (const type of ['rt.position', 'rt.presence', 'rt.presence.diff']) assert.ok((c.types.get(type) ?? 0) >= 1, `a ${type} frame was received`)
  }
  const sa = await scrape(a.registry)
  const sb = await scrape(b.registry)

  await t.test('messages_sent_total: on each instance, each type as many as its clients received (live history events from Redis, presence diffs)', () => {
    checkTypes(sa, a.h, [onA, late])
    checkTypes(sb, b.h, [onB])
  })
  await t.test('sent_bytes_total: on each instance, stats().bytesOut and the bytes its clients received', () => {
    checkBytes(sa, a.h, [onA, late])
    checkBytes(sb, b.h, [onB])
  })
  await t.test('fanouts_total: once per fan-out, on the instance that made it', () => {
    assert.equal(sa.get(`${M}fanouts_total{target="room"}`), 6)
    assert.equal(sb.get(`${M}fanouts_total{target="room"}`), 2)
  })
  await t.test('broker_publishes_total: each publish Redis answered, history ones (through the append script) included', () => {
    assert.equal(sa.get(`${M}broker_publishes_total`), 6)
    assert.equal(sb.get(`${M}broker_publishes_total`), 2)
    assert.equal(sa.get(`${M}broker_publish_failures_total`), 0)
    assert.equal(sb.get(`${M}broker_publish_failures_total`), 0)
  })
  await t.test('broker_lag_seconds: every delivery that came through Redis (the other instance\'s fan-outs, every history event)', () => {
    // A history room's own instance gets its events from the subscription too, in offset order.
    assert.equal(sa.get(`${M}broker_lag_seconds_count`), 2 + 3)
    assert.equal(sb.get(`${M}broker_lag_seconds_count`), 3 + 3)
    for (const s of [sa, sb]) assert.ok((s.get(`${M}broker_lag_seconds_sum`) ?? Infinity) < 5, 'well under a second each, on one machine')
  })
})

test('errors_sent_total and stats().errors count the PRESENCE_FULL envelope a member past maxMembers gets, as sent', { timeout: 10000 }, async (t) => {
  const { h, registry } = await meteredApp({ presence: { rooms: /^p:/, maxMembers: 1 } })
  t.after(() => h.close())
  const first = await tallied(h, 'first')
  const second = await tallied(h, 'second')
  t.after(() => { first.c.destroy(); second.c.destroy() })
  for (const c of [first.c, second.c]) {
    c.sendJson({ type: 'join', data: { room: 'p:full' }, id: 'j' })
    await until(c, 'reply')
  }
  // The store's answer comes after the join's reply: the envelope follows it.
  await waitFor(() => second.types.get('error') === 1, 3000, 'the PRESENCE_FULL envelope')
  await settled(h, [first, second])
  assert.equal(first.types.get('error'), undefined)
  const series = await scrape(registry)
  checkTypes(series, h, [first, second])
  assert.equal(series.get(`${M}errors_sent_total{route="/rt",type="unknown",code="PRESENCE_FULL"}`), 1)
  assert.deepEqual(h.app.realtime.stats().errors, { PRESENCE_FULL: 1 })
})
