import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import { CloseCode } from '../lib/index.js'
import { startApp, type StartOptions } from './helpers/app.js'
import { Writable } from 'node:stream'
import { connect, refusalOf, waitFor } from './helpers/client.js'

const route = {
  url: '/rt',
  messages: {
    echo: { schema: Type.Any(), handler: (d: unknown) => d },
    join: { schema: Type.String({ maxLength: 10_000 }), handler: (room: string, conn: any) => { conn.join(room); return conn.rooms.size } },
    flood: {
      schema: Type.Object({ count: Type.Integer(), size: Type.Integer() }),
      handler: ({ count, size }: { count: number, size: number }, conn: any) => {
        const text = 'x'.repeat(size)
        let sent = 0
        for (let i = 0; i < count; i++) if (conn.send('blob', { text }) === true) sent++
        return sent
      }
    }
  },
  events: { blob: Type.Object({ text: Type.String() }) }
}

async function limitsApp (realtime: StartOptions['realtime']) {
  return await startApp({
    jwt: false,
    realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user'] ?? 'anon') }) }, ...realtime },
    setup: (app) => { app.realtimeRoute(route) }
  })
}

test('rate limit: over the burst, RATE_LIMITED and not handled; refills with time', { timeout: 10000 }, async (t) => {
  const h = await limitsApp({ limits: { rate: 10, burst: 5 } })
  const c = await connect(`${h.wsBase}/rt`)
  t.after(async () => { c.destroy(); await h.close() })
  for (let i = 1; i <= 8; i++) c.sendJson({ type: 'echo', data: i, id: i })
  const answers = []
  for (let i = 1; i <= 8; i++) answers.push(await c.nextMessage())
  assert.deepEqual(answers.slice(0, 5).map((a) => [a.type, a.data]), [['reply', 1], ['reply', 2], ['reply', 3], ['reply', 4], ['reply', 5]])
  assert.deepEqual(answers.slice(5).map((a) => [a.type, a.id, a.error.code]), [['error', 6, 'RATE_LIMITED'], ['error', 7, 'RATE_LIMITED'], ['error', 8, 'RATE_LIMITED']])
  await new Promise((resolve) => setTimeout(resolve, 250))
  assert.equal((await c.request('echo', 'again')).type, 'reply')
})

test('rate limit on the monotonic clock: a wall clock stepped back an hour neither starves the bucket nor closes the client', { timeout: 10000 }, async (t) => {
  const h = await limitsApp({ limits: { rate: 10, burst: 5, maxViolations: 2 } })
  const c = await connect(`${h.wsBase}/rt`)
  const realNow = Date.now
  t.after(async () => { Date.now = realNow; c.destroy(); await h.close() })
  for (let i = 1; i <= 5; i++) c.sendJson({ type: 'echo', data: i, id: i })
  for (let i = 1; i <= 5; i++) assert.equal((await c.nextMessage()).type, 'reply')
  // An NTP correction or a VM resumed from a snapshot: the wall clock jumps back while the process runs.
  const step = realNow() - 3_600_000
  const base = realNow()
  Date.now = () => step + (realNow() - base)
  await new Promise((resolve) => setTimeout(resolve, 400))
  for (let i = 6; i <= 8; i++) {
    const answer = await c.request('echo', i)
    assert.equal(answer.type, 'reply', `message ${i} after the step: ${JSON.stringify(answer)}`)
    await new Promise((resolve) => setTimeout(resolve, 150))
  }
  assert.equal(c.ws.readyState, c.ws.OPEN)
})

test('a connection that keeps sending past the limit is closed with 1008; so is one sending garbage', { timeout: 10000 }, async (t) => {
  const h = await limitsApp({ limits: { rate: 5, burst: 5, maxViolations: 10 } })
  t.after(() => h.close())
  const flooder = await connect(`${h.wsBase}/rt`)
  for (let i = 0; i < 30; i++) flooder.sendJson({ type: 'echo', data: i })
  assert.deepEqual(await flooder.closed, { code: CloseCode.POLICY_VIOLATION, reason: 'too many rejected messages' })
  const garbage = await connect(`${h.wsBase}/rt`)
  for (let i = 0; i < 11; i++) garbage.ws.send('not json')
  assert.equal((await garbage.closed).code, CloseCode.POLICY_VIOLATION)
  await waitFor(() => h.app.realtime.connections.size === 0)
  assert.equal(h.app.realtime.stats().closes[1008], 2)
})

test('the rate limit cannot be bypassed: garbage frames pay before they are parsed, pings reset nothing, bytes are charged too', { timeout: 15000 }, async (t) => {
  const h = await limitsApp({ limits: { rate: 10, burst: 10, maxViolations: 20, byteRate: 200_000 } })
  const c = await connect(`${h.wsBase}/rt`)
  t.after(async () => { c.destroy(); await h.close() })
  // 30 KB JSON arrays (BAD_ENVELOPE) with a ping between each, as fast as the socket takes them.
  const junk = JSON.stringify(Array.from({ length: 3000 }, (_, i) => i * 1000))
  let sent = 0
  const started = Date.now()
  while (c.ws.readyState === c.ws.OPEN && Date.now() - started < 3000 && sent < 2000) {
    c.ws.send(junk)
    c.ws.send('{"type":"ping"}')
    sent++
    if (sent % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 5))
  }
  assert.equal((await c.closed).code, 1008, 'closed for violations')
  const { errors } = h.app.realtime.stats()
  // At most the burst and a few seconds of the rate were parsed: the rest was refused unread.
  assert.ok((errors.BAD_ENVELOPE ?? 0) <= 40, `parsed ${errors.BAD_ENVELOPE} junk frames`)
  assert.ok((errors.RATE_LIMITED ?? 0) > 0)

  // Bytes: under the message rate, a client sending 60 KB frames at 20 a second passes 200 KB/s and is refused.
  const b = await connect(`${h.wsBase}/rt`)
  t.after(() => { b.destroy() })
  const big = JSON.stringify({ type: 'echo', data: 'x'.repeat(60_000), id: 1 })
  const answers: string[] = []
  for (let i = 0; i < 8; i++) {
    b.ws.send(big)
    const m = await b.nextMessage()
    answers.push(m.type === 'error' ? m.error.code : m.type)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  assert.ok(answers.includes('RATE_LIMITED'), `answers: ${answers.join(', ')}`)
  assert.ok(answers.filter((a) => a === 'reply').length >= 3, `the first ones pass: ${answers.join(', ')}`)
})

test('room limits: a name of 1-maxRoomNameLength characters, at most maxRoomsPerConnection rooms; refusals are error envelopes', { timeout: 10000 }, async (t) => {
  const h = await limitsApp({ limits: { maxRoomsPerConnection: 3, maxRoomNameLength: 8, rate: 1000, burst: 1000 } })
  const c = await connect(`${h.wsBase}/rt`)
  t.after(async () => { c.destroy(); await h.close() })
  assert.equal((await c.request('join', '')).error.code, 'INVALID_ROOM')
  assert.equal((await c.request('join', 'x'.repeat(9))).error.code, 'INVALID_ROOM')
  for (const room of ['a', 'b', 'c']) assert.equal((await c.request('join', room)).type, 'reply')
  assert.equal((await c.request('join', 'a')).data, 3, 'a room already joined is no new room')
  const refused = await c.request('join', 'd')
  assert.equal(refused.error.code, 'TOO_MANY_ROOMS')
  assert.equal(h.app.realtime.stats().rooms, 3)
  // A flood of distinct names creates nothing past the limit.
  for (let i = 0; i < 200; i++) c.sendJson({ type: 'join', data: `r${i}`, id: 100 + i })
  for (let i = 0; i < 200; i++) assert.equal((await c.nextMessage()).error.code, 'TOO_MANY_ROOMS')
  assert.equal(h.app.realtime.stats().rooms, 3)
  assert.equal(c.ws.readyState, c.ws.OPEN)
  assert.deepEqual(h.app.realtime.stats().roomStates, { history: 0, presence: 0, historyMetas: 0 }, 'no history or presence here')
})

test('maxConnections: 503 SERVER_FULL; maxConnectionsPerUser: 429 TOO_MANY_CONNECTIONS', { timeout: 10000 }, async (t) => {
  const h = await limitsApp({ limits: { maxConnections: 3, maxConnectionsPerUser: 2 } })
  t.after(() => h.close())
  const a1 = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'a' } })
  const a2 = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'a' } })
  const perUser = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'a' } }))
  assert.deepEqual(perUser, { statusCode: 429, body: { statusCode: 429, code: 'TOO_MANY_CONNECTIONS', message: 'too many connections for this user' } })
  const b1 = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'b' } })
  const full = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'c' } }))
  assert.deepEqual(full, { statusCode: 503, body: { statusCode: 503, code: 'SERVER_FULL', message: 'server is at its connection limit' } })
  await a1.close()
  await waitFor(() => h.app.realtime.connections.size === 2)
  const c1 = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'c' } })
  for (const c of [a2, b1, c1]) c.destroy()
})

test('maxConnections and maxConnectionsPerUser hold under concurrent handshakes whose session check awaits', { timeout: 15000 }, async (t) => {
  const h = await startApp({
    jwt: false,
    realtime: {
      auth: { authenticate: async (request) => { await new Promise((resolve) => setTimeout(resolve, 10)); return { sub: String(request.headers['x-user']) } } },
      limits: { maxConnections: 5, maxConnectionsPerUser: 2 }
    },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  const attempts = await Promise.allSettled(Array.from({ length: 20 }, async (_, i) => await connect(`${h.wsBase}/rt`, { headers: { 'x-user': `u${i}` } })))
  const opened = attempts.filter((a) => a.status === 'fulfilled')
  t.after(() => { for (const a of opened) (a as PromiseFulfilledResult<Awaited<ReturnType<typeof connect>>>).value.destroy() })
  assert.equal(opened.length, 5, 'exactly maxConnections got in')
  assert.equal(h.app.realtime.stats().connections, 5)
  assert.equal(h.app.realtime.stats().refused.SERVER_FULL, 15)
  const same = await Promise.allSettled(Array.from({ length: 6 }, async () => await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'u0' } })))
  for (const a of same) if (a.status === 'fulfilled') a.value.destroy()
  assert.equal(same.filter((a) => a.status === 'fulfilled').length, 0, 'the instance is full: none of them')
  for (const a of opened) (a as PromiseFulfilledResult<Awaited<ReturnType<typeof connect>>>).value.destroy()
  await waitFor(() => h.app.realtime.stats().connections === 0)
  const mallory = await Promise.allSettled(Array.from({ length: 6 }, async () => await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'mallory' } })))
  t.after(() => { for (const a of mallory) if (a.status === 'fulfilled') a.value.destroy() })
  assert.equal(mallory.filter((a) => a.status === 'fulfilled').length, 2, 'exactly maxConnectionsPerUser for one user')
  assert.equal((h.app.realtime as unknown as { reserved: number }).reserved, 0, 'every reservation was given back')
})

test('maxConnectionsPerIp: the client address (behind trustProxy, the forwarded one) holds at most that many sockets', { timeout: 15000 }, async (t) => {
  const h = await startApp({
    jwt: false,
    fastify: { trustProxy: true },
    realtime: { auth: false, limits: { maxConnectionsPerIp: 3 } },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  const from = async (ip: string) => await Promise.allSettled(Array.from({ length: 5 }, async () => await connect(`${h.wsBase}/rt`, { headers: { 'x-forwarded-for': ip } })))
  const a = await from('203.0.113.7')
  const b = await from('198.51.100.9')
  const open = [...a, ...b].filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof connect>>>).value)
  t.after(() => { for (const c of open) c.destroy() })
  assert.equal(a.filter((r) => r.status === 'fulfilled').length, 3)
  assert.equal(b.filter((r) => r.status === 'fulfilled').length, 3)
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { 'x-forwarded-for': '203.0.113.7' } }))
  assert.deepEqual([refusal.statusCode, refusal.body.code], [429, 'TOO_MANY_FROM_ADDRESS'])
  open[0]?.destroy()
  await waitFor(() => h.app.realtime.stats().connections === 5)
  const again = await connect(`${h.wsBase}/rt`, { headers: { 'x-forwarded-for': '203.0.113.7' } })
  again.destroy()
})

test('a flood of failing handshakes writes no log line above debug by default, and each costs one refusal', { timeout: 20000 }, async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(JSON.parse(chunk.toString())); cb() } })
  const h = await startApp({
    fastify: { logger: { level: 'info', stream }, disableRequestLogging: true },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  for (let i = 0; i < 20; i++) {
    await Promise.all(Array.from({ length: 10 }, async () => await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: 'Bearer not.a.token' } }))))
  }
  assert.equal(h.app.realtime.stats().refused.INVALID_TOKEN, 200)
  assert.deepEqual(lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('realtime handshake refused')), [])
})

test('slow consumer: a client that stops reading is closed with 4408 within a second; the heap stays bounded', { timeout: 20000 }, async (t) => {
  const maxBufferedBytes = 256 * 1024
  const closes: number[] = []
  const h = await startApp({
    realtime: { auth: false, limits: { maxBufferedBytes, rate: 1000, burst: 1000 } },
    setup: (app) => { app.realtimeRoute({ ...route, onClose: (_conn, code) => { closes.push(code) } }) }
  })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`)
  c.ws.pause()
  ;(c.ws as unknown as { _socket: { pause: () => void } })._socket.pause()
  const conn = [...h.app.realtime.connections.values()][0]
  assert.ok(conn)
  global.gc?.()
  const heapBefore = process.memoryUsage().heapUsed
  const chunk = 'y'.repeat(16 * 1024)
  let refusedAt = 0
  let sent = 0
  // Send 10 MiB/s for up to 3 s; the policy must apply long before.
  for (let tick = 0; tick < 300 && refusedAt === 0; tick++) {
    for (let i = 0; i < 6; i++) {
      if (conn.send('blob' as never, { text: chunk } as never)) sent++
      else { refusedAt = Date.now(); break }
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  assert.ok(refusedAt > 0, 'backpressure applied')
  assert.ok(conn.socket.bufferedAmount <= maxBufferedBytes + chunk.length + 64, `buffered ${conn.socket.bufferedAmount}`)
  await waitFor(() => h.app.realtime.connections.size === 0, 3000, 'the slow consumer to be gone')
  assert.ok(Date.now() - refusedAt < 2000, 'gone within the one-second grace')
  assert.deepEqual(closes, [CloseCode.SLOW_CONSUMER])
  assert.deepEqual(h.app.realtime.stats().closes, { 4408: 1 })
  assert.ok(h.app.realtime.stats().dropped >= 1)
  const heapGrowth = process.memoryUsage().heapUsed - heapBefore
  assert.ok(heapGrowth < 32 * 1024 * 1024, `heap grew by ${heapGrowth} bytes after sending ${sent} messages`)
  c.destroy()
})

test('one frame larger than maxBufferedBytes reaches a reader with an empty backlog; the connection stays open', { timeout: 10000 }, async (t) => {
  const h = await limitsApp({ limits: { maxBufferedBytes: 64 * 1024, maxPayload: 1024 } })
  const c = await connect(`${h.wsBase}/rt`)
  t.after(async () => { c.destroy(); await h.close() })
  assert.deepEqual(await c.request('flood', { count: 1, size: 200 * 1024 }), { type: 'blob', data: { text: 'x'.repeat(200 * 1024) } })
  assert.deepEqual(await c.nextMessage(), { type: 'reply', id: 1, data: 1 })
  assert.equal((await c.request('echo', 'still open')).data, 'still open')
  assert.equal(h.app.realtime.stats().dropped, 0)
})

test('slow consumer with onSlowConsumer: drop: messages are dropped and counted until it drains', { timeout: 20000 }, async (t) => {
  const h = await startApp({
    realtime: { auth: false, limits: { maxBufferedBytes: 64 * 1024, onSlowConsumer: 'drop' } },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`)
  t.after(() => { c.destroy() })
  const raw = (c.ws as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
  raw.pause()
  const conn = [...h.app.realtime.connections.values()][0]
  assert.ok(conn)
  let dropped = 0
  for (let i = 0; i < 2000 && dropped === 0; i++) {
    if (!conn.send('blob' as never, { text: 'z'.repeat(8 * 1024) } as never)) dropped++
    if (i % 50 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  assert.equal(dropped, 1)
  assert.ok(h.app.realtime.stats().dropped >= 1)
  assert.equal(conn.isOpen, true, 'still open')
  raw.resume()
  await waitFor(() => conn.socket.bufferedAmount === 0, 10000, 'the backlog to drain')
  assert.equal(conn.send('blob' as never, { text: 'after' } as never), true)
})

test('a frame over limits.maxPayload closes with 1009 on both sides; other connections are untouched', { timeout: 10000 }, async (t) => {
  const closes: number[] = []
  const h = await startApp({
    realtime: { auth: false, limits: { maxPayload: 1024 } },
    setup: (app) => { app.realtimeRoute({ ...route, onClose: (_conn, code) => { closes.push(code) } }) }
  })
  t.after(() => h.close())
  const big = await connect(`${h.wsBase}/rt`)
  const other = await connect(`${h.wsBase}/rt`)
  t.after(() => { other.destroy() })
  big.sendJson({ type: 'echo', data: 'x'.repeat(1020) })
  assert.equal((await big.closed).code, CloseCode.MESSAGE_TOO_BIG)
  await waitFor(() => closes.length === 1)
  assert.deepEqual(closes, [CloseCode.MESSAGE_TOO_BIG])
  assert.equal((await other.request('echo', 'fine')).data, 'fine')
  // Just under the limit is handled.
  assert.equal((await other.request('echo', 'y'.repeat(1024 - 40))).type, 'reply')
})
