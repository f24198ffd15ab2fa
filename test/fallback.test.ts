import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import type { RouteDefinition } from '../lib/index.js'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, waitFor } from './helpers/client.js'
import { StreamClient, StreamRefused } from './helpers/stream.js'

/** A chat route with the fallback on: join a room, say something to it, echo. */
async function chatApp (t: { after: (fn: () => Promise<void>) => void }, options: Parameters<typeof startApp>[0] = {}): Promise<TestApp> {
  const h = await startApp({
    ...options,
    // fetch's pool may open a connection it never sends a request on, which Node closes at app.close() only after
    // its headers timeout (60 s), unless told to close every connection.
    fastify: { forceCloseConnections: true, ...options.fastify },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        fallback: true,
        messages: {
          join: { schema: Type.String(), handler: async (room, conn) => { await conn.join(room); return room } },
          say: { schema: Type.Object({ room: Type.String(), text: Type.String() }), handler: ({ room, text }, conn) => { app.realtime.to(room).send('said', { text, by: conn.userId ?? null }); return true } },
          echo: { schema: Type.Unknown(), handler: (data) => data },
          transport: { schema: Type.Null(), handler: (_data, conn) => conn.transport }
        }
      })
    }
  })
  t.after(async () => { await h.close() })
  return h
}

/** An anonymous fallback route `/rt` with an `echo` message and the route options given. */
async function echoApp (t: { after: (fn: () => Promise<void>) => void }, route: Pick<RouteDefinition<any, any, any>, 'binary' | 'onOpen' | 'onClose'>): Promise<TestApp> {
  const h = await startApp({
    jwt: false,
    realtime: { auth: false },
    fastify: { forceCloseConnections: true },
    setup: (app) => { app.realtimeRoute({ url: '/rt', fallback: true, messages: { echo: { schema: Type.Unknown(), handler: (d) => d } }, ...route }) }
  })
  t.after(async () => { await h.close() })
  return h
}

test('a stream gets rt.open, then carries replies, events and errors as the WebSocket would', async (t) => {
  const h = await chatApp(t)
  const token = h.sign({ sub: 'ann' })
  const stream = await StreamClient.open(`${h.httpBase}/rt`, { headers: { authorization: `Bearer ${token}` } })
  t.after(() => { stream.abort() })
  assert.equal(stream.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  assert.equal(stream.headers.get('cache-control'), 'no-cache, no-transform')
  assert.equal(stream.headers.get('x-accel-buffering'), 'no')
  assert.match(stream.session, /^[\w-]+\.[\w-]{24}$/)
  assert.equal(stream.post, '/rt')

  const auth = { headers: { authorization: `Bearer ${token}` } }
  assert.deepEqual(await stream.request('transport', null, auth), { type: 'reply', id: 1, data: 'stream' })
  assert.deepEqual(await stream.request('join', 'lobby', auth), { type: 'reply', id: 2, data: 'lobby' })
  // A WebSocket member of the same room hears the stream's message, and the stream hears the socket's.
  const ws = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'bob' })}` } })
  t.after(() => { ws.ws.terminate() })
  assert.equal((await ws.request('join', 'lobby')).data, 'lobby')
  await stream.send([JSON.stringify({ type: 'say', data: { room: 'lobby', text: 'hi from the stream' } })], auth)
  assert.deepEqual(await ws.nextMessage(), { type: 'said', data: { text: 'hi from the stream', by: 'ann' } })
  assert.deepEqual(await stream.nextMessage(), { type: 'said', data: { text: 'hi from the stream', by: 'ann' } })
  ws.sendJson({ type: 'say', data: { room: 'lobby', text: 'hi from the socket' } })
  assert.deepEqual(await stream.nextMessage(), { type: 'said', data: { text: 'hi from the socket', by: 'bob' } })
  // A bad message gets its error envelope on the stream.
  await stream.send([JSON.stringify({ type: 'nope', id: 9 })], auth)
  const error = await stream.nextMessage()
  assert.equal(error.type, 'error')
  assert.equal(error.id, 9)
  assert.equal(error.error.code, 'UNKNOWN_TYPE')
  assert.equal(h.app.realtime.stats().connections, 2)
})

test('a batch is handled in order and exactly once: a retried seq is acknowledged again, a gap is refused', async (t) => {
  const h = await chatApp(t, { jwt: false, realtime: { auth: false } })
  const stream = await StreamClient.open(`${h.httpBase}/rt`)
  t.after(() => { stream.abort() })
  const frames = [1, 2, 3].map((n) => JSON.stringify({ type: 'echo', data: n, id: n }))
  assert.deepEqual(await stream.send(frames, { seq: 1 }), { status: 200, body: { ack: 1 } })
  for (const n of [1, 2, 3]) assert.deepEqual(await stream.nextMessage(), { type: 'reply', id: n, data: n })
  // The same batch again (its answer was lost, say): acknowledged, not run.
  assert.deepEqual(await stream.send(frames, { seq: 1 }), { status: 200, body: { ack: 1 } })
  const gap = await stream.send([JSON.stringify({ type: 'echo', data: 5, id: 5 })], { seq: 3 })
  assert.equal(gap.status, 409)
  assert.equal(gap.body.code, 'SEQ_GAP')
  assert.deepEqual(await stream.send([JSON.stringify({ type: 'echo', data: 4, id: 4 })], { seq: 2 }), { status: 200, body: { ack: 2 } })
  assert.deepEqual(await stream.nextMessage(), { type: 'reply', id: 4, data: 4 })
  // Nothing else arrived: not the retried batch's replies, not the refused one's.
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(stream.received.length, 4)
})

test('the stream ends with rt.close: 1001 at shutdown, within shutdown.timeout', async (t) => {
  const h = await chatApp(t, { jwt: false, realtime: { auth: false, shutdown: { timeout: 2000 } } })
  const stream = await StreamClient.open(`${h.httpBase}/rt`)
  const started = performance.now()
  await h.close()
  assert.deepEqual(await stream.closed, { code: 1001, reason: 'server shutting down' })
  assert.ok(performance.now() - started < 2000)
})

test('a stream the client dropped is gone from the registry, and its session refuses batches', async (t) => {
  const h = await chatApp(t, { jwt: false, realtime: { auth: false } })
  const stream = await StreamClient.open(`${h.httpBase}/rt`)
  await waitFor(() => h.app.realtime.stats().connections === 1)
  stream.abort()
  await waitFor(() => h.app.realtime.stats().connections === 0)
  const answer = await stream.send([JSON.stringify({ type: 'echo', data: 1, id: 1 })])
  assert.equal(answer.status, 404)
  assert.equal(answer.body.code, 'UNKNOWN_SESSION')
})

test('a route without fallback answers a stream request 426, and POST 404', async (t) => {
  const h = await startApp({
    jwt: false,
    realtime: { auth: false },
    fastify: { forceCloseConnections: true },
    setup: (app) => { app.realtimeRoute({ url: '/rt', messages: { echo: { schema: Type.Unknown(), handler: (d) => d } } }) }
  })
  t.after(async () => { await h.close() })
  await assert.rejects(StreamClient.open(`${h.httpBase}/rt`), (err: StreamRefused) => err.status === 426 && err.body.code === 'UPGRADE_REQUIRED')
  const post = await fetch(`${h.httpBase}/rt`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  assert.equal(post.status, 404)
  // The client's diagnosis reads whether the route offers the stream from its 426: this one does not.
  const plain = await fetch(`${h.httpBase}/rt`)
  assert.equal(plain.status, 426)
  assert.equal(plain.headers.get('x-realtime-fallback'), null)
})

test('a fallback route\'s 426 offers the stream (X-Realtime-Fallback, exposed to an allowed Origin)', async (t) => {
  const h = await chatApp(t, { jwt: false, realtime: { auth: false, origins: ['https://app.example'] } })
  const res = await fetch(`${h.httpBase}/rt`, { headers: { origin: 'https://app.example' } })
  assert.equal(res.status, 426)
  assert.equal(res.headers.get('x-realtime-fallback'), 'stream')
  assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example')
  assert.match(res.headers.get('access-control-expose-headers') ?? '', /x-realtime-fallback/)
})

test('binary frames both ways (base64 on the wire), onOpen and onClose once each, conn.transport', async (t) => {
  const events: string[] = []
  const h = await echoApp(t, {
    binary: (data, conn) => { conn.sendBinary(Buffer.concat([Buffer.from([0xff]), data])) },
    onOpen: (conn) => { events.push(`open ${conn.transport}`) },
    onClose: (conn, code) => { events.push(`close ${conn.transport} ${code}`) }
  })
  const stream = await StreamClient.open(`${h.httpBase}/rt`)
  assert.deepEqual(await stream.send([{ binary: Buffer.from([0, 1, 2, 0xfe]).toString('base64') }]), { status: 200, body: { ack: 1 } })
  assert.deepEqual(await stream.nextMessage(), { binary: Buffer.from([0xff, 0, 1, 2, 0xfe]) })
  stream.abort()
  await waitFor(() => events.length === 2)
  assert.deepEqual(events, ['open stream', 'close stream 1006'])
})

test('heartbeat: a comment line at each sweep; session expiry ends the stream with 4401', { timeout: 10_000 }, async (t) => {
  const h = await chatApp(t, { realtime: { heartbeat: { interval: 200 } } })
  const stream = await StreamClient.open(`${h.httpBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'ann', exp: Math.floor(Date.now() / 1000) + 2 })}` } })
  t.after(() => { stream.abort() })
  assert.equal(stream.heartbeat, 200)
  const comments = stream.parser.comments
  await new Promise((resolve) => setTimeout(resolve, 700))
  assert.ok(stream.parser.comments - comments >= 2, `comments: ${stream.parser.comments - comments}`)
  assert.deepEqual(await stream.closed, { code: 4401, reason: 'session expired' })
  await waitFor(() => h.app.realtime.stats().connections === 0)
})

test('limits count a stream as a connection: maxConnectionsPerUser across both transports', async (t) => {
  const h = await chatApp(t, { realtime: { limits: { maxConnectionsPerUser: 1 } } })
  const auth = { authorization: `Bearer ${h.sign({ sub: 'ann' })}` }
  const stream = await StreamClient.open(`${h.httpBase}/rt`, { headers: auth })
  t.after(() => { stream.abort() })
  await assert.rejects(StreamClient.open(`${h.httpBase}/rt`, { headers: auth }), (err: StreamRefused) => err.status === 429 && err.body.code === 'TOO_MANY_CONNECTIONS')
  await assert.rejects(connect(`${h.wsBase}/rt`, { headers: auth }))
  // Batches are no connections: they pass the per-user limit.
  assert.deepEqual(await stream.request('echo', 1, { headers: auth }), { type: 'reply', id: 1, data: 1 })
  assert.equal(h.app.realtime.byUser('ann').length, 1)
})

test('auth.refresh over the stream renews the session as on a socket', async (t) => {
  const h = await chatApp(t)
  const auth = { authorization: `Bearer ${h.sign({ sub: 'ann', exp: Math.floor(Date.now() / 1000) + 60 })}` }
  const stream = await StreamClient.open(`${h.httpBase}/rt`, { headers: auth })
  t.after(() => { stream.abort() })
  const exp = Math.floor(Date.now() / 1000) + 3600
  const answer = await stream.request('auth.refresh', { token: h.sign({ sub: 'ann', exp }) }, { headers: auth })
  assert.deepEqual(answer, { type: 'reply', id: 1, data: { exp } })
  const conn = [...h.app.realtime.connections.values()][0]
  assert.equal(conn?.expiresAt, exp * 1000)
})

test('a client gone while its stream was being admitted (a slow authenticate): the connection opens and closes, none is left', async (t) => {
  const events: string[] = []
  const h = await startApp({
    jwt: false,
    realtime: { auth: { authenticate: async () => { await new Promise((resolve) => setTimeout(resolve, 50)); return { sub: 'slow' } } } },
    fastify: { forceCloseConnections: true },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        fallback: true,
        messages: { echo: { schema: Type.Unknown(), handler: (d) => d } },
        onOpen: () => { events.push('open') },
        onClose: (_conn, code) => { events.push(`close ${code}`) }
      })
    }
  })
  t.after(async () => { await h.close() })
  const http = await import('node:http')
  await Promise.all(Array.from({ length: 5 }, async () => await new Promise<void>((resolve) => {
    const request = http.request({ host: '127.0.0.1', port: h.port, path: '/rt', agent: false, headers: { accept: 'text/event-stream' } })
    request.on('error', () => { resolve() })
    setTimeout(() => { request.destroy(); resolve() }, 10)
    request.end()
  })))
  await new Promise((resolve) => setTimeout(resolve, 150))
  await waitFor(() => h.app.realtime.stats().connections === 0, 3000, 'no connection left')
  assert.equal(events.filter((e) => e === 'open').length, events.filter((e) => e.startsWith('close')).length)
  // The slots their handshakes reserved were given back.
  const registry = h.app.realtime as unknown as { reserved: number, reservedFor: (user: string) => number }
  assert.equal(registry.reserved, 0)
  assert.equal(registry.reservedFor('slow'), 0)
})

test('a batch with close: its frames run, then the stream ends with rt.close echoing the code and onClose gets it; bad closes are refused', async (t) => {
  const closes: Array<[number, string]> = []
  const h = await echoApp(t, { onClose: (_conn, code, reason) => { closes.push([code, reason]) } })
  const stream = await StreamClient.open(`${h.httpBase}/rt`)
  t.after(() => { stream.abort() })
  for (const close of [{ code: 1001 }, { code: 2999 }, { code: 5000 }, { code: 4000, reason: 'x'.repeat(124) }, { code: '4000' }, null]) {
    const refused = await stream.send([], { body: { session: stream.session, seq: 1, frames: [], close } })
    assert.equal(refused.status, 400, JSON.stringify(close))
    assert.equal(refused.body.code, 'BAD_BATCH')
  }
  const empty = await stream.send([], { body: { session: stream.session, seq: 1, frames: [] } })
  assert.equal(empty.status, 400)
  const answer = await stream.send([], { body: { session: stream.session, seq: 1, frames: [JSON.stringify({ type: 'echo', id: 1, data: 'last' })], close: { code: 4001, reason: 'done' } } })
  assert.deepEqual(answer, { status: 200, body: { ack: 1 } })
  assert.deepEqual(await stream.closed, { code: 4001, reason: 'done' })
  assert.deepEqual(closes, [[4001, 'done']])
  assert.equal(h.app.realtime.connections.size, 0)
})
