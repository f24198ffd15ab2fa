import { test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { RealtimeError, CloseCode } from '../lib/index.js'
import { createClient, RealtimeClientError, type ClientOptions, type RealtimeClient } from '../lib/client/index.js'
import { startApp, type StartOptions, type TestApp } from './helpers/app.js'
import { waitFor } from './helpers/client.js'

/** The route every client test talks to; `received` records what reached the server, in order. */
function chatRoute (app: FastifyInstance, received: string[] = []) {
  return app.realtimeRoute({
    url: '/chat',
    messages: {
      echo: { schema: Type.Object({ text: Type.String() }), handler: ({ text }) => ({ echoed: text, length: text.length }) },
      note: { schema: Type.String(), handler: (text) => { received.push(text) } },
      refuse: { schema: Type.Null(), handler: () => { throw new RealtimeError('NOT_ALLOWED', 'not for you', { why: 'test' }) } },
      hang: { schema: Type.Integer(), handler: async (ms) => { await new Promise((resolve) => setTimeout(resolve, ms)); return ms } },
      kick: { schema: Type.Integer(), handler: (code, conn) => { conn.close(code) } },
      join: { schema: Type.String(), handler: (room, conn) => { conn.join(room); received.push(`join:${room}`); return room } }
    },
    events: { news: Type.Object({ headline: Type.String() }) }
  })
}
type ChatRoute = ReturnType<typeof chatRoute>

async function serve (options: StartOptions['realtime'] = { auth: false }, port = 0, received: string[] = []): Promise<TestApp> {
  return await startApp({ realtime: options, setup: (app) => { chatRoute(app, received) }, ...(port === 0 ? {} : {}) }).then(async (h) => {
    if (port === 0 || h.port === port) return h
    await h.close()
    throw new Error('unreachable')
  })
}

/** A second server on a fixed port (the first one's, after it closed). */
async function serveOn (port: number, received: string[], realtime: StartOptions['realtime'] = { auth: false }): Promise<FastifyInstance> {
  const { default: Fastify } = await import('fastify')
  const { default: realtimePlugin } = await import('../lib/index.js')
  const app = Fastify()
  await app.register(realtimePlugin, { heartbeat: false, ...realtime })
  chatRoute(app, received)
  await app.listen({ host: '127.0.0.1', port })
  return app
}

function client (url: string, options: ClientOptions<ChatRoute> = {}): RealtimeClient<ChatRoute> {
  return createClient<ChatRoute>(url, { WebSocket: WebSocket as never, backoff: { base: 20, cap: 200 }, ...options })
}

async function opened (c: RealtimeClient<ChatRoute>): Promise<void> {
  if (c.state === 'open') return
  await new Promise<void>((resolve) => c.on('open', () => { resolve() }))
}

test('a typed request gets its reply; events reach their listeners', { timeout: 10000 }, async (t) => {
  const h = await serve()
  t.after(() => h.close())
  const c = client(`${h.wsBase}/chat`)
  t.after(() => { c.close() })
  const reply = await c.request('echo', { text: 'hello' })
  assert.deepEqual(reply, { echoed: 'hello', length: 5 })
  assert.equal(await c.request('note', 'nothing back'), null)
  const news = new Promise((resolve) => c.on('news', resolve))
  h.app.realtime.broadcast('news', { headline: 'typed' })
  assert.deepEqual(await news, { headline: 'typed' })
})

test('an error envelope rejects the request with the server\'s code, message and details', { timeout: 10000 }, async (t) => {
  const h = await serve()
  t.after(() => h.close())
  const c = client(`${h.wsBase}/chat`)
  t.after(() => { c.close() })
  await assert.rejects(c.request('refuse', null), (err: RealtimeClientError) => {
    assert.ok(err instanceof RealtimeClientError)
    assert.deepEqual([err.code, err.message, err.details], ['NOT_ALLOWED', 'not for you', { why: 'test' }])
    return true
  })
  await assert.rejects(c.request('echo', { text: 1 } as never), { code: 'VALIDATION_FAILED' })
})

test('a request without a reply in time rejects with TIMEOUT', { timeout: 10000 }, async (t) => {
  const h = await serve()
  t.after(() => h.close())
  const c = client(`${h.wsBase}/chat`)
  t.after(() => { c.close() })
  await assert.rejects(c.request('hang', 500, { timeout: 50 }), { code: 'TIMEOUT' })
  // The connection is fine afterwards.
  assert.deepEqual(await c.request('echo', { text: 'x' }), { echoed: 'x', length: 1 })
})

test('server restarted on the same port: DISCONNECTED, backoff, onReconnect, then the queue in order', { timeout: 20000 }, async (t) => {
  const received: string[] = []
  const h = await serve({ auth: false, shutdown: { timeout: 500 } }, 0, received)
  const port = h.port
  const reconnecting: number[] = []
  let reconnects = 0
  const c = client(`${h.wsBase}/chat`, {
    onReconnect: async (self) => { reconnects++; await self.request('join', 'lobby') }
  })
  t.after(() => { c.close() })
  c.on('reconnecting', ({ attempt }) => { reconnecting.push(attempt) })
  await opened(c)
  const inFlight = c.request('hang', 5000)
  await new Promise((resolve) => setTimeout(resolve, 50))
  const closing = h.close()
  await assert.rejects(inFlight, { code: 'DISCONNECTED' })
  await closing
  // While the server is down: queued, in order.
  c.send('note', 'one')
  c.send('note', 'two')
  const queuedRequest = c.request('echo', { text: 'three' }, { timeout: 10000 })
  await waitFor(() => reconnecting.length >= 2, 5000, 'a few failed attempts')
  const second = await serveOn(port, received)
  t.after(() => second.close())
  assert.deepEqual(await queuedRequest, { echoed: 'three', length: 5 })
  await waitFor(() => received.length >= 3, 3000, 'the queue')
  assert.deepEqual(received, ['join:lobby', 'one', 'two'])
  assert.equal(reconnects, 1)
  assert.deepEqual(reconnecting.slice(0, 3), [1, 2, 3].slice(0, Math.min(3, reconnecting.length)))
  assert.equal(c.state, 'open')
})

test('no reconnect after a 1008 policy close', { timeout: 10000 }, async (t) => {
  const h = await serve()
  t.after(() => h.close())
  const c = client(`${h.wsBase}/chat`)
  let reconnecting = 0
  c.on('reconnecting', () => { reconnecting++ })
  const offline = new Promise<RealtimeClientError>((resolve) => c.on('offline', resolve))
  await opened(c)
  c.send('kick', CloseCode.POLICY_VIOLATION)
  const err = await offline
  assert.equal(err.closeCode, CloseCode.POLICY_VIOLATION)
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.equal(reconnecting, 0)
  assert.equal(c.state, 'closed')
  assert.throws(() => { c.send('note', 'late') }, { code: 'CLOSED' })
})

test('no reconnect after a 401 at the handshake: the refusal\'s code, learned over plain HTTP', { timeout: 10000 }, async (t) => {
  const h = await serve({})
  t.after(() => h.close())
  const c = client(`${h.wsBase}/chat`, { token: 'not-a-jwt' })
  const pendingRequest = c.request('echo', { text: 'queued' })
  const err = await new Promise<RealtimeClientError>((resolve) => c.on('offline', resolve))
  assert.deepEqual([err.code, err.status], ['INVALID_TOKEN', 401])
  await assert.rejects(pendingRequest, { code: 'INVALID_TOKEN' })
  assert.equal(c.state, 'closed')
  const none = client(`${h.wsBase}/chat`)
  const missing = await new Promise<RealtimeClientError>((resolve) => none.on('offline', resolve))
  assert.deepEqual([missing.code, missing.status], ['MISSING_TOKEN', 401])
})

test('an expired token at the handshake: getToken is asked again and the retry succeeds', { timeout: 10000 }, async (t) => {
  const h = await serve({})
  t.after(() => h.close())
  let calls = 0
  const c = client(`${h.wsBase}/chat`, {
    getToken: () => h.sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - (++calls === 1 ? 30 : -60) })
  })
  t.after(() => { c.close() })
  await opened(c)
  assert.equal(calls, 2)
  assert.deepEqual(await c.request('echo', { text: 'in' }), { echoed: 'in', length: 2 })
})

test('a dead link is found by the app-level ping and the client reconnects', { timeout: 15000 }, async (t) => {
  const h = await serve()
  t.after(() => h.close())
  const c = client(`${h.wsBase}/chat`, { pingInterval: 100, pingTimeout: 200 })
  t.after(() => { c.close() })
  const closes: Array<{ code: number, reason: string }> = []
  c.on('close', (e) => { closes.push(e) })
  await opened(c)
  // The server side stops reading: pings go unanswered.
  const [conn] = h.app.realtime.connections.values()
  ;(conn?.socket as unknown as { _socket: { pause: () => void } })._socket.pause()
  const reopened = new Promise<void>((resolve) => c.on('open', () => { resolve() }))
  await reopened
  assert.deepEqual(closes[0], { code: 1006, reason: 'ping timeout' })
  assert.deepEqual(await c.request('echo', { text: 'back' }), { echoed: 'back', length: 4 })
})

test('a session that expires (4401) comes back with a fresh token from getToken', { timeout: 15000 }, async (t) => {
  const h = await serve({})
  t.after(() => h.close())
  let tokens = 0
  const c = client(`${h.wsBase}/chat`, {
    getToken: () => { tokens++; return h.sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + (tokens === 1 ? 1 : 60) }) }
  })
  t.after(() => { c.close() })
  const closed = new Promise<{ code: number }>((resolve) => c.on('close', resolve))
  await opened(c)
  assert.equal((await closed).code, CloseCode.SESSION_EXPIRED)
  await new Promise<void>((resolve) => c.on('open', () => { resolve() }))
  assert.equal(tokens, 2)
  assert.deepEqual(await c.request('echo', { text: 'renewed' }), { echoed: 'renewed', length: 7 })
})

test('refreshToken renews the session over the open socket', { timeout: 10000 }, async (t) => {
  const h = await serve({})
  t.after(() => h.close())
  const exp = Math.floor(Date.now() / 1000) + 120
  const c = client(`${h.wsBase}/chat`, { token: h.sign({ sub: 'bob', exp: exp - 60 }) })
  t.after(() => { c.close() })
  await opened(c)
  assert.deepEqual(await c.refreshToken(h.sign({ sub: 'bob', exp })), { exp })
  await assert.rejects(c.refreshToken(h.sign({ sub: 'mallory' })), { code: 'INVALID_TOKEN' })
})

test('the queue is bounded; close() rejects what waits and keeps nothing alive', { timeout: 10000 }, async () => {
  // Nothing listens on this port: the client keeps trying while messages queue up.
  const c = client('ws://127.0.0.1:9/chat', { maxQueue: 3, fetch: async () => { throw new Error('down') } })
  c.send('note', 'a')
  c.send('note', 'b')
  const waiting = c.request('echo', { text: 'c' })
  assert.throws(() => { c.send('note', 'd') }, { code: 'QUEUE_FULL' })
  c.close()
  await assert.rejects(waiting, { code: 'CLOSED' })
  assert.equal(c.state, 'closed')
})
