import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { Type } from '@sinclair/typebox'
import { Registry } from 'prom-client'
import fastifyMetrics from 'fastify-metrics'
import Fastify from 'fastify'
import realtime, { CloseCode, RealtimeError, type RealtimeOptions } from '../lib/index.js'
import { realtimeMetrics } from '../lib/metrics.js'
import { redisBroker } from '../lib/redis.js'
import { decodeMessage, encodeMessage } from '../lib/broker/redis-codec.js'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, refusalOf, waitFor, type TestClient } from './helpers/client.js'
import { REDIS_URL, redisTest, uniquePrefix } from './helpers/redis.js'
import { call, client as historyClient, historyApp, publish } from './helpers/history.js'
import { presenceApp, presenceClient } from './helpers/presence.js'
import { parseExposition } from './helpers/metrics.js'

const route = {
  url: '/rt',
  messages: {
    echo: { schema: Type.String(), handler: (text: string) => text },
    slow: { schema: Type.Integer(), handler: async (ms: number) => { await sleep(ms); return ms } },
    boom: { schema: Type.Null(), handler: () => { throw new Error('handler bug') } },
    refuse: { schema: Type.Null(), handler: () => { throw new RealtimeError('NOT_ALLOWED', 'no') } },
    join: { schema: Type.String(), handler: (room: string, conn: any) => { conn.join(room); return room } },
    late: { schema: Type.Integer(), handler: async (ms: number) => { await sleep(ms); throw new RealtimeError('LATE', 'too late') } }
  },
  events: { blob: Type.Object({ text: Type.String() }), news: Type.String() }
}

/** An app with metrics in its own registry, served at GET /metrics as docs/08-observability.md shows. */
async function meteredApp (realtime: RealtimeOptions = {}): Promise<{ h: TestApp, registry: Registry }> {
  const registry = new Registry()
  const h = await startApp({
    jwt: false,
    realtime: {
      auth: { authenticate: (request) => request.headers['x-user'] === undefined ? undefined : { sub: String(request.headers['x-user']) } },
      limits: { rate: 1000, burst: 1000 },
      metrics: realtimeMetrics({ registry }),
      ...realtime
    },
    setup: (app) => {
      app.realtimeRoute(route)
      app.get('/metrics', async (_request, reply) => await reply.type(registry.contentType).send(await registry.metrics()))
    }
  })
  return { h, registry }
}

/** The scrape as `series → value`, the series spelled as in the exposition (`name{label="v",…}`). */
async function scrape (url: string): Promise<Map<string, number>> {
  const response = await fetch(url)
  assert.equal(response.status, 200)
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  return parseExposition(await response.text())
}

function expectSeries (series: Map<string, number>, expected: Record<string, number>): void {
  for (const [name, value] of Object.entries(expected)) assert.equal(series.get(name), value, name)
}

const M = 'fastify_realtime_'

test('a scripted session: every metric has the value the session gave it', { timeout: 20000 }, async (t) => {
  const { h } = await meteredApp({ limits: { rate: 1000, burst: 1000, maxBufferedBytes: 128 * 1024 } })
  t.after(() => h.close())
  const url = `${h.wsBase}/rt`

  // Refused handshakes: two without a session, one from a foreign origin.
  assert.equal((await refusalOf(connect(url))).body.code, 'MISSING_TOKEN')
  assert.equal((await refusalOf(connect(url))).body.code, 'MISSING_TOKEN')
  assert.equal((await refusalOf(connect(url, { headers: { 'x-user': 'eve', origin: 'https://evil.example' } }))).body.code, 'FORBIDDEN_ORIGIN')

  const alice = await connect(url, { headers: { 'x-user': 'alice' } })
  t.after(() => { alice.destroy() })
  let bytesIn = 0
  const send = (c: TestClient, frame: unknown): void => {
    const text = typeof frame === 'string' ? frame : JSON.stringify(frame)
    bytesIn += Buffer.byteLength(text)
    c.ws.send(text)
  }
  const answer = async (c: TestClient, frame: unknown): Promise<any> => { send(c, frame); return await c.nextMessage() }

  for (let i = 1; i <= 3; i++) assert.equal((await answer(alice, { type: 'echo', data: `hi ${i}`, id: i })).type, 'reply')
  assert.equal((await answer(alice, { type: 'slow', data: 30, id: 4 })).data, 30)
  assert.equal((await answer(alice, { type: 'slow', data: 30, id: 5 })).data, 30)
  assert.equal((await answer(alice, { type: 'echo', data: 42, id: 6 })).error.code, 'VALIDATION_FAILED')
  assert.equal((await answer(alice, { type: 'boom', data: null, id: 7 })).error.code, 'INTERNAL')
  assert.equal((await answer(alice, { type: 'refuse', data: null, id: 8 })).error.code, 'NOT_ALLOWED')
  assert.equal((await answer(alice, { type: 'made.up.by.client', id: 9 })).error.code, 'UNKNOWN_TYPE')
  assert.equal((await answer(alice, 'not json')).error.code, 'BAD_JSON')
  assert.equal((await answer(alice, { type: 'ping', id: 10 })).type, 'pong')
  assert.equal((await answer(alice, { type: 'join', data: 'lobby', id: 11 })).data, 'lobby')
  // A fan-out of a declared event, and one of a type the route does not declare.
  assert.equal(h.app.realtime.to('lobby').send('news', 'hello'), 1)
  assert.equal((await alice.nextMessage()).type, 'news')
  assert.equal(h.app.realtime.broadcast('undeclared.event', 1), 1)
  assert.equal((await alice.nextMessage()).type, 'undeclared.event')

  // A slow consumer: bob stops reading; the server keeps sending until the policy closes him with 4408.
  const bob = await connect(url, { headers: { 'x-user': 'bob' } })
  t.after(() => { bob.destroy() })
  ;(bob.ws as unknown as { _socket: { pause: () => void } })._socket.pause()
  const conn = h.app.realtime.byUser('bob')[0]
  assert.ok(conn)
  let blobs = 0
  const chunk = 'y'.repeat(16 * 1024)
  for (let tick = 0; tick < 300 && conn.isOpen; tick++) {
    for (let i = 0; i < 6 && conn.isOpen; i++) if (conn.send('blob' as never, { text: chunk } as never)) blobs++
    await sleep(10)
  }
  await waitFor(() => h.app.realtime.connections.size === 1, 5000, 'the slow consumer to be gone')
  const stats = h.app.realtime.stats()
  assert.equal(stats.closes[CloseCode.SLOW_CONSUMER], 1)

  const series = await scrape(`${h.httpBase}/metrics`)
  const r = 'route="/rt"'
  expectSeries(series, {
    [`${M}connections{${r},transport="websocket"}`]: 1,
    [`${M}connections{${r},transport="stream"}`]: 0,
    [`${M}users`]: 1,
    [`${M}rooms`]: 1,
    [`${M}handshakes_total{${r},transport="websocket",outcome="101"}`]: 2,
    [`${M}handshakes_total{${r},transport="websocket",outcome="MISSING_TOKEN"}`]: 2,
    [`${M}handshakes_total{${r},transport="websocket",outcome="FORBIDDEN_ORIGIN"}`]: 1,
    [`${M}messages_received_total{${r},type="echo"}`]: 4,
    [`${M}messages_received_total{${r},type="slow"}`]: 2,
    [`${M}messages_received_total{${r},type="boom"}`]: 1,
    [`${M}messages_received_total{${r},type="refuse"}`]: 1,
    [`${M}messages_received_total{${r},type="join"}`]: 1,
    [`${M}messages_received_total{${r},type="ping"}`]: 1,
    // The made-up type and the frame that was not JSON: a client's string never becomes a label.
    [`${M}messages_received_total{${r},type="unknown"}`]: 2,
    [`${M}messages_sent_total{${r},type="reply"}`]: 6,
    [`${M}messages_sent_total{${r},type="error"}`]: 5,
    [`${M}messages_sent_total{${r},type="pong"}`]: 1,
    [`${M}messages_sent_total{${r},type="news"}`]: 1,
    [`${M}messages_sent_total{${r},type="unknown"}`]: 1,
    [`${M}messages_sent_total{${r},type="blob"}`]: blobs,
    [`${M}received_bytes_total{${r}}`]: bytesIn,
    [`${M}sent_bytes_total{${r}}`]: stats.bytesOut,
    [`${M}errors_sent_total{${r},type="echo",code="VALIDATION_FAILED"}`]: 1,
    [`${M}errors_sent_total{${r},type="boom",code="INTERNAL"}`]: 1,
    [`${M}errors_sent_total{${r},type="refuse",code="NOT_ALLOWED"}`]: 1,
    [`${M}errors_sent_total{${r},type="unknown",code="UNKNOWN_TYPE"}`]: 1,
    [`${M}errors_sent_total{${r},type="unknown",code="BAD_JSON"}`]: 1,
    [`${M}handler_duration_seconds_count{${r},type="echo"}`]: 3,
    [`${M}handler_duration_seconds_count{${r},type="slow"}`]: 2,
    [`${M}handler_duration_seconds_count{${r},type="boom"}`]: 1,
    [`${M}handler_duration_seconds_count{${r},type="refuse"}`]: 1,
    // The async handler slept 30 ms: above the 25 ms bucket, well within a second.
    [`${M}handler_duration_seconds_bucket{${r},type="slow",le="0.025"}`]: 0,
    [`${M}handler_duration_seconds_bucket{${r},type="slow",le="1"}`]: 2,
    [`${M}handler_duration_seconds_bucket{${r},type="slow",le="+Inf"}`]: 2,
    [`${M}closes_total{code="4408"}`]: 1,
    [`${M}server_closes_total{code="4408"}`]: 1,
    [`${M}slow_consumer_closes_total`]: 1,
    [`${M}slow_consumer_drops_total`]: stats.dropped,
    [`${M}heartbeat_terminations_total`]: 0,
    [`${M}fanouts_total{target="room"}`]: 1,
    [`${M}fanouts_total{target="all"}`]: 1,
    [`${M}broker_publishes_total`]: 0,
    [`${M}broker_publish_failures_total`]: 0,
    [`${M}broker_lag_seconds_count`]: 0
  })
  assert.ok(blobs > 0 && stats.dropped >= 1, `${blobs} blobs sent, ${stats.dropped} dropped`)
  // Two 30 ms sleeps; a timer may fire up to a millisecond early against performance.now().
  const slowSum = series.get(`${M}handler_duration_seconds_sum{${r},type="slow"}`) ?? 0
  assert.ok(slowSum >= 0.056, `the slow handlers took ${slowSum} s`)
  assert.ok(stats.bytesOut > 16 * 1024 * blobs, 'bytes out count every frame')
  // Labels exist only for declared and reserved types and `unknown`.
  const types = new Set([...series.keys()].filter((k) => k.startsWith(`${M}messages_received_total`)).map((k) => /type="([^"]*)"/.exec(k)?.[1]))
  assert.deepEqual([...types].sort(), ['auth.refresh', 'binary', 'blob', 'boom', 'echo', 'error', 'join', 'late', 'news', 'ping', 'pong', 'refuse', 'reply',
    'rt.position', 'rt.presence', 'rt.presence.diff', 'rt.presence.left', 'rt.resume', 'slow', 'unknown'])
})

test('heartbeat: the ping round trip of peers that answer; a peer that does not is terminated and counted', { timeout: 10000 }, async (t) => {
  const { h } = await meteredApp({ heartbeat: { interval: 100 } })
  t.after(() => h.close())
  const answers = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { answers.destroy() })
  const silent = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'bob' }, autoPong: false })
  t.after(() => { silent.destroy() })
  assert.equal((await silent.closed).code, 1006)
  const series = await scrape(`${h.httpBase}/metrics`)
  assert.equal(series.get(`${M}heartbeat_terminations_total`), 1)
  assert.ok((series.get(`${M}ping_rtt_seconds_count`) ?? 0) >= 1, 'the answering peer\'s pongs were timed')
  assert.ok((series.get(`${M}ping_rtt_seconds_bucket{le="+Inf"}`) ?? 0) >= 1)
  assert.equal(series.get(`${M}closes_total{code="1006"}`), 1)
  assert.equal(series.get(`${M}server_closes_total{code="1006"}`), undefined, 'a termination is not a close the server chose a code for')
})

test('close codes a client chooses are labels from a fixed set: 100 made-up codes are one series, "other"', { timeout: 20000 }, async (t) => {
  const { h } = await meteredApp()
  t.after(() => h.close())
  for (let code = 3000; code < 3100; code++) {
    const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'mallory' } })
    c.ws.close(code)
    await c.closed
  }
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  c.ws.close(1000)
  await c.closed
  await waitFor(() => h.app.realtime.stats().connections === 0, 3000, 'every close counted')
  const series = await scrape(`${h.httpBase}/metrics`)
  const closes = [...series.keys()].filter((name) => name.startsWith(`${M}closes_total`))
  assert.deepEqual(closes.sort(), [`${M}closes_total{code="1000"}`, `${M}closes_total{code="other"}`])
  assert.equal(series.get(`${M}closes_total{code="other"}`), 100)
  assert.deepEqual(h.app.realtime.stats().closes, { 1000: 1, other: 100 })
})

test('app.close() removes the collectors from the registry; a second app can register in it', { timeout: 10000 }, async () => {
  const { h, registry } = await meteredApp()
  assert.ok(registry.getSingleMetric(`${M}connections`) !== undefined)
  await h.close()
  assert.deepEqual(registry.getMetricsAsArray(), [])
  const again = await startApp({ jwt: false, realtime: { auth: false, metrics: realtimeMetrics({ registry }) } })
  assert.ok(registry.getSingleMetric(`${M}connections`) !== undefined)
  await again.close()
})

test('metrics: without a registry, or not from realtimeMetrics(), registration fails clearly', async () => {
  assert.throws(() => realtimeMetrics({} as never), /pass \{ registry \}/)
  await assert.rejects(startApp({ jwt: false, realtime: { auth: false, metrics: {} as never } }), /metrics: expected realtimeMetrics/)
})

test('fastify-metrics 12: app.metrics.client works, and its /metrics serves the realtime metrics beside its own', { timeout: 10000 }, async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  // A CommonJS module with `exports.default`: from ESM, the plugin is its `default`.
  await app.register(fastifyMetrics.default, { endpoint: '/metrics', clearRegisterOnInit: true })
  await app.register(realtime, { auth: false, metrics: realtimeMetrics({ client: app.metrics.client }) })
  app.realtimeRoute(route)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as { port: number }).port
  const c = await connect(`ws://127.0.0.1:${port}/rt`)
  t.after(() => { c.destroy() })
  assert.equal((await c.request('echo', 'x')).data, 'x')
  const series = await scrape(`http://127.0.0.1:${port}/metrics`)
  assert.equal(series.get(`${M}connections{route="/rt",transport="websocket"}`), 1)
  assert.equal(series.get(`${M}messages_received_total{route="/rt",type="echo"}`), 1)
  assert.ok([...series.keys()].some((k) => k.startsWith('process_cpu_user_seconds_total')), 'fastify-metrics\' own metrics are there too')
})

test('the Redis wire header carries the publish time and type; a header without them (older instances) still decodes', () => {
  const frame = Buffer.from('{"type":"news","data":1}')
  const before = Date.now()
  const decoded = decodeMessage(encodeMessage('i', { target: { kind: 'all' }, frame, type: 'news' }))
  assert.equal(decoded?.type, 'news')
  assert.ok((decoded?.publishedAt ?? 0) >= before && (decoded?.publishedAt ?? Infinity) <= Date.now())
  const header = Buffer.from(JSON.stringify({ f: 'old', x: 'c1' }))
  const old = Buffer.concat([Buffer.from([1, 0, header.length]), header, frame])
  assert.deepEqual({ ...decodeMessage(old), frame: undefined }, { from: 'old', except: 'c1', frame: undefined, type: undefined, publishedAt: undefined })
})

redisTest('with Redis: publishes confirmed on one instance, the publish-to-delivery lag and the deliveries on the other', { timeout: 20000 }, async (t) => {
  const prefix = uniquePrefix()
  const a = await meteredApp({ broker: redisBroker({ url: REDIS_URL, prefix }) })
  t.after(() => a.h.close())
  const b = await meteredApp({ broker: redisBroker({ url: REDIS_URL, prefix }) })
  t.after(() => b.h.close())
  const member = await connect(`${b.h.wsBase}/rt`, { headers: { 'x-user': 'bob' } })
  t.after(() => { member.destroy() })
  assert.equal((await member.request('join', 'lobby')).data, 'lobby')
  // The subscription lands one round trip after the join: send until the member hears it.
  let sent = 0
  const heard = member.nextMessage(5000)
  const timer = setInterval(() => { a.h.app.realtime.to('lobby').send('news', 'from a'); sent++ }, 50)
  try { assert.equal((await heard).data, 'from a') } finally { clearInterval(timer) }
  await sleep(100)
  const sa = await scrape(`${a.h.httpBase}/metrics`)
  const sb = await scrape(`${b.h.httpBase}/metrics`)
  assert.equal(sa.get(`${M}fanouts_total{target="room"}`), sent)
  assert.equal(sa.get(`${M}broker_publishes_total`), sent)
  assert.equal(sa.get(`${M}broker_publish_failures_total`), 0)
  const delivered = sb.get(`${M}messages_sent_total{route="/rt",type="news"}`) ?? 0
  assert.ok(delivered >= 1 && delivered <= sent)
  assert.equal(sb.get(`${M}broker_lag_seconds_count`), delivered)
  assert.ok((sb.get(`${M}broker_lag_seconds_sum`) ?? Infinity) < delivered * 1, 'lag on one machine is well under a second')
})

test('no metrics option: nothing is counted for metrics (connections carry no meter)', { timeout: 10000 }, async (t) => {
  const h = await startApp({ jwt: false, realtime: { auth: false }, setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`)
  t.after(() => { c.destroy() })
  assert.equal((await c.request('echo', 'x')).data, 'x')
  const conn = [...h.app.realtime.connections.values()][0]
  assert.equal(conn?.meter, undefined)
  assert.equal((h.app.realtime as unknown as { meter: unknown }).meter, undefined)
})

test('the example serves /metrics in the Prometheus text format', { timeout: 10000 }, async (t) => {
  const { buildExample } = await import('../example/app.js')
  const { app } = await buildExample({ logger: false })
  t.after(() => app.close())
  const response = await app.inject('/metrics')
  assert.equal(response.statusCode, 200)
  assert.match(response.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/)
  assert.match(response.body, /^# TYPE fastify_realtime_connections gauge$/m)
  assert.match(response.body, /^fastify_realtime_connections\{route="\/chat",transport="websocket"\} 0$/m)
})

test('recoveries: joins of history rooms that resumed, by outcome and reason', { timeout: 10000 }, async (t) => {
  const registry = new Registry()
  const h = await historyApp({}, { metrics: realtimeMetrics({ registry }) })
  t.after(() => h.close())
  const first = await historyClient(h)
  t.after(() => { first.destroy() })
  const { epoch } = (await call(first, 'join', { room: 'h:r' })).reply.data as { epoch: string }
  publish(h, 'h:r', 1, 3)
  for (const [since, room] of [[{ epoch, offset: 1 }, 'h:r'], [{ epoch: 'another', offset: 1 }, 'h:r'], [{ epoch, offset: 99 }, 'h:r']] as const) {
    const c = await historyClient(h)
    t.after(() => { c.destroy() })
    await call(c, 'join', { room, since })
  }
  assert.deepEqual(h.app.realtime.stats().recoveries, { recovered: 1, epoch: 1, invalid: 1 })
  const text = await registry.metrics()
  const series = new Map(text.split('\n').filter((l) => l.startsWith(`${M}recoveries_total`)).map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]))
  expectSeries(series, {
    [`${M}recoveries_total{recovered="true",reason=""}`]: 1,
    [`${M}recoveries_total{recovered="false",reason="epoch"}`]: 1,
    [`${M}recoveries_total{recovered="false",reason="invalid"}`]: 1
  })
})

test('presence diffs: each change of a member list this instance received, counted once', { timeout: 10000 }, async (t) => {
  const registry = new Registry()
  const h = await presenceApp({ leaveDelay: 50 }, { metrics: realtimeMetrics({ registry }) })
  t.after(() => h.close())
  const ann = await presenceClient(h, 'ann')
  t.after(() => { ann.c.destroy() })
  await ann.call('join', { room: 'p:r' })
  const bob = await presenceClient(h, 'bob')
  t.after(() => { bob.c.destroy() })
  await bob.call('join', { room: 'p:r', data: { away: false } })
  await bob.call('update', { room: 'p:r', data: { away: true } })
  await bob.call('leave', { room: 'p:r' })
  // ann's join, bob's join, his update and his leave: four diffs of the room's list.
  await waitFor(() => h.app.realtime.stats().presenceDiffs === 4, 3000, 'four presence diffs')
  assert.match(await registry.metrics(), new RegExp(`\\n${M}presence_diffs_total 4\\n`))
})

test('heartbeat: unsolicited pongs are not timed as round trips', { timeout: 10000 }, async (t) => {
  const { h } = await meteredApp({ heartbeat: { interval: 200 } })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  await new Promise((resolve) => setTimeout(resolve, 250))
  for (let i = 0; i < 200; i++) c.ws.pong()
  assert.equal((await c.request('echo', 'after')).data, 'after')
  const series = await scrape(`${h.httpBase}/metrics`)
  const timed = series.get(`${M}ping_rtt_seconds_count`) ?? 0
  // One round trip per sweep at most (an unsolicited pong may stand in for the answer to the sweep's ping).
  assert.ok(timed <= 5, `${timed} pongs timed for a few sweeps`)
})

test('errors_sent_total counts only error envelopes sent: not one for a client gone before its handler failed', { timeout: 10000 }, async (t) => {
  const { h } = await meteredApp()
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  c.sendJson({ type: 'late', data: 150, id: 1 })
  await new Promise((resolve) => setTimeout(resolve, 30))
  c.destroy()
  await new Promise((resolve) => setTimeout(resolve, 400))
  const stay = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'bob' } })
  t.after(() => { stay.destroy() })
  assert.equal((await stay.request('late', 0)).error.code, 'LATE')
  const series = await scrape(`${h.httpBase}/metrics`)
  assert.equal(series.get(`${M}errors_sent_total{route="/rt",type="late",code="LATE"}`), 1, 'only the one that reached its client')
  assert.deepEqual(h.app.realtime.stats().errors, { LATE: 1 })
})

test('protocol frames (rt.position, rt.presence, rt.presence.left) are counted under their own type, not unknown', { timeout: 10000 }, async (t) => {
  const { h } = await meteredApp({ history: { rooms: (room) => room === 'h' }, presence: { rooms: (room) => room === 'p' } })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  c.sendJson({ type: 'join', data: 'h', id: 1 })
  const seen = new Set<string>()
  while (!seen.has('rt.position') || !seen.has('reply')) seen.add((await c.nextMessage()).type)
  const conn = [...h.app.realtime.connections.values()][0]
  assert.ok(conn !== undefined)
  await conn.join('p', { presence: {} })
  while (!seen.has('rt.presence')) seen.add((await c.nextMessage()).type)
  conn.leave('p')
  while (!seen.has('rt.presence.left')) seen.add((await c.nextMessage()).type)
  const series = await scrape(`${h.httpBase}/metrics`)
  const sent = (type: string): number | undefined => series.get(`${M}messages_sent_total{route="/rt",type="${type}"}`)
  assert.equal(sent('rt.position'), 1)
  assert.equal(sent('rt.presence'), 1)
  assert.equal(sent('rt.presence.left'), 1)
  assert.equal(sent('unknown'), 0)
})

test('docs/08-observability.md lists every metric, with its type and labels, and nothing else', { timeout: 10000 }, async (t) => {
  const { h, registry } = await meteredApp()
  t.after(() => h.close())
  const collectors = registry.getMetricsAsArray() as unknown as Array<{ name: string, type: string, labelNames: string[] }>
  const actual = collectors.map((m) => `${m.name} ${m.type}`).sort()
  assert.ok(actual.length > 20, `${actual.length} metrics registered`)
  const page = await readFile(new URL('../docs/08-observability.md', import.meta.url), 'utf8')
  const rows = [...page.matchAll(/^\| `(fastify_realtime_\w+)` \| (\w+) \|([^|]*)\|/gm)]
  assert.deepEqual(rows.map(([, name, type]) => `${String(name)} ${String(type)}`).sort(), actual)
  // The labels each collector declares are the ones the page names.
  const declared = new Map(collectors.map((m) => [m.name, [...m.labelNames].sort().join(',')]))
  for (const [, name, , labels] of rows) {
    const named = [...(labels ?? '').matchAll(/`(\w+)`/g)].map(([, l]) => l).sort().join(',')
    assert.equal(named, declared.get(name as string), `${String(name)}'s labels`)
  }
})
