// The typed client on the HTTP-streaming fallback (docs/15-fallback.md): the stream alone, the fall back when a proxy
// refuses or swallows upgrades (never on the route's own refusals), batches retried through a proxy that loses
// answers, auth.refresh on the stream, a dropped stream recovered, and the move back to a WebSocket without losing or
// repeating an event of a history room.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import jwt from '@fastify/jwt'
import WebSocket from 'ws'
import realtime, { type RealtimeOptions } from '../lib/index.js'
import { createClient, type RealtimeClient, type RealtimeClientError } from '../lib/client/index.js'
import { SECRET } from './helpers/app.js'
import { waitFor } from './helpers/client.js'
import { historyApp } from './helpers/history.js'
import { HttpProxy, type HttpProxyOptions } from './helpers/http-proxy.js'
import { chatRoute, nextEvent, opened, sleep, typedClient, type ChatApp, type Seen } from './helpers/typed-client.js'

/** The client tests' chat route with the fallback on; every connection is closed at close() (fetch's idle pool). */
async function serveFallback (options: RealtimeOptions = {}): Promise<ChatApp & { streams: () => number }> {
  const app = Fastify({ logger: false, forceCloseConnections: true })
  await app.register(jwt, { secret: SECRET })
  await app.register(realtime, { auth: false, heartbeat: false, shutdown: { timeout: 300 }, fallback: true, ...options, limits: { rate: 10_000, ...options.limits } })
  let streams = 0
  app.addHook('onRequest', async (request) => {
    if (request.method === 'GET' && String(request.headers.accept).includes('text/event-stream')) streams++
  })
  const seen: Seen = { notes: [], closes: [] }
  chatRoute(app, seen)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as { port: number }).port
  return {
    app,
    port,
    url: `ws://127.0.0.1:${port}/chat`,
    httpUrl: `http://127.0.0.1:${port}/chat`,
    seen,
    sign: (payload) => (app as any).jwt.sign(payload),
    close: async () => { await app.close() },
    streams: () => streams
  }
}

/** A proxy in front of one app; its `ws://` URL for `path`. */
async function proxyTo (t: { after: (fn: () => Promise<void>) => void }, base: string, options: Omit<HttpProxyOptions, 'targets'> = {}): Promise<{ proxy: HttpProxy, wsBase: string }> {
  const proxy = new HttpProxy({ targets: () => [base], ...options })
  const http = await proxy.listen()
  t.after(async () => { await proxy.close() })
  return { proxy, wsBase: http.replace('http:', 'ws:') }
}

/**
 * The history app (rooms `h:*`) with the fallback on, behind a proxy whose upgrades `upgrades` decides, and a typed
 * client through it that joins `h:1` again in onReconnect; `said` collects the room's events.
 */
async function historyThroughProxy (t: { after: (fn: () => Promise<void> | void) => void }, upgrades: () => 'refuse' | 'pass', options: Record<string, unknown> = {}): Promise<{ h: Awaited<ReturnType<typeof historyApp>>, proxy: HttpProxy, c: RealtimeClient<any>, said: number[] }> {
  const h = await historyApp({}, { fallback: true }, 0, { forceCloseConnections: true })
  t.after(async () => { await h.close() })
  const { proxy, wsBase } = await proxyTo(t, h.httpBase, { upgrades })
  const c: RealtimeClient<any> = createClient<any>(`${wsBase}/rt`, {
    WebSocket: WebSocket as never,
    backoff: { base: 20, cap: 100 },
    onReconnect: async (client: RealtimeClient<any>) => { await client.request('join', { room: 'h:1' }) },
    ...options
  })
  t.after(() => { c.close() })
  const said: number[] = []
  c.on('said', ({ n }: { n: number }) => { said.push(n) })
  return { h, proxy, c, said }
}

function transports (h: { app: ChatApp['app'] }): string[] {
  return [...h.app.realtime.connections.values()].map((conn) => conn.transport)
}

test('transports: [\'stream\']: requests, sends, events, errors and the server\'s close arrive as over a WebSocket', { timeout: 15000 }, async (t) => {
  const h = await serveFallback()
  t.after(async () => { await h.close() })
  const c = typedClient(h.url, { transports: ['stream'] })
  t.after(() => { c.close() })
  const open = await nextEvent(c, 'open')
  assert.deepEqual(open, { reconnected: false, transport: 'stream' })
  assert.equal(c.transport, 'stream')
  assert.deepEqual(transports(h), ['stream'])
  assert.deepEqual(await c.request('echo', { text: 'hi' }), { echoed: 'hi', length: 2 })
  // Many at once: batched, in order, each once.
  const replies = await Promise.all(Array.from({ length: 150 }, async (_, i) => await c.request('echo', { text: 'x'.repeat(i) })))
  assert.deepEqual(replies.map((r) => r.length), Array.from({ length: 150 }, (_, i) => i))
  for (let i = 0; i < 100; i++) c.send('note', `n${i}`)
  await waitFor(() => h.seen.notes.length === 100, 5000, 'the notes')
  assert.deepEqual(h.seen.notes, Array.from({ length: 100 }, (_, i) => `n${i}`))
  await assert.rejects(c.request('refuse', null), (err: RealtimeClientError) => err.code === 'NOT_ALLOWED' && (err.details as any)?.why === 'test')
  await c.request('join', 'lobby')
  const news: string[] = []
  c.on('news', ({ headline }) => { news.push(headline) })
  h.app.realtime.to('lobby').send('news', { headline: 'line one\nline two' })
  await waitFor(() => news.length === 1, 3000, 'the event')
  assert.deepEqual(news, ['line one\nline two'])
  const binary = nextEvent(c, 'binary')
  for (const conn of h.app.realtime.connections.values()) conn.sendBinary(Buffer.from([0, 1, 254, 255]))
  assert.deepEqual([...new Uint8Array(await binary)], [0, 1, 254, 255])
  // A close code the server sends ends the stream with it: 4000 is final for the client.
  const offline = nextEvent(c, 'offline')
  const closed = nextEvent(c, 'close')
  c.send('kick', 4000)
  assert.deepEqual(await closed, { code: 4000, reason: 'kicked' })
  assert.equal((await offline).closeCode, 4000)
  assert.equal(c.state, 'closed')
  await waitFor(() => h.app.realtime.connections.size === 0, 3000, 'the server\'s connection closed')
})

test('the client\'s close() ends the stream after what was sent before it: the server\'s onClose gets its code, nothing reconnects', { timeout: 10000 }, async (t) => {
  const h = await serveFallback()
  t.after(async () => { await h.close() })
  const c = typedClient(h.url, { transports: ['stream'] })
  await opened(c)
  assert.equal(h.app.realtime.connections.size, 1)
  for (let i = 0; i < 3; i++) c.send('note', `last ${i}`)
  c.close(4000, 'bye')
  assert.equal(c.state, 'closed')
  await waitFor(() => h.seen.closes.length === 1, 3000, 'onClose')
  assert.deepEqual(h.seen.closes, [4000])
  assert.deepEqual(h.seen.notes, ['last 0', 'last 1', 'last 2'])
  // A default close: 1000.
  const d = typedClient(h.url, { transports: ['stream'] })
  await opened(d)
  d.close()
  await waitFor(() => h.seen.closes.length === 2, 3000, 'onClose')
  assert.deepEqual(h.seen.closes, [4000, 1000])
  await sleep(200)
  assert.equal(h.app.realtime.connections.size, 0)
  assert.equal(h.streams(), 2)
})

test('a proxy refuses upgrades: the client falls back to the stream at once and works there', { timeout: 15000 }, async (t) => {
  const h = await serveFallback()
  t.after(async () => { await h.close() })
  const { proxy, wsBase } = await proxyTo(t, `http://127.0.0.1:${h.port}`, { upgrades: () => 'refuse' })
  const c = typedClient(`${wsBase}/chat`)
  t.after(() => { c.close() })
  const started = Date.now()
  const open = await nextEvent(c, 'open')
  assert.deepEqual(open, { reconnected: false, transport: 'stream' })
  assert.ok(Date.now() - started < 2500, `opened after ${Date.now() - started} ms: no wait for fallbackAfter`)
  assert.equal(proxy.refusedUpgrades, 1)
  assert.equal(c.transport, 'stream')
  assert.deepEqual(await c.request('echo', { text: 'through' }), { echoed: 'through', length: 7 })
  assert.deepEqual(transports(h), ['stream'])
})

test('a proxy that swallows upgrades: the stream after fallbackAfter', { timeout: 15000 }, async (t) => {
  const h = await serveFallback()
  t.after(async () => { await h.close() })
  const { proxy, wsBase } = await proxyTo(t, `http://127.0.0.1:${h.port}`, { upgrades: () => 'hang' })
  const c = typedClient(`${wsBase}/chat`, { fallbackAfter: 300, probeInterval: 0 })
  t.after(() => { c.close() })
  const started = Date.now()
  await opened(c)
  const took = Date.now() - started
  assert.ok(took >= 290 && took < 3000, `opened after ${took} ms`)
  assert.equal(proxy.heldUpgrades, 1)
  assert.equal(c.transport, 'stream')
  assert.deepEqual(await c.request('echo', { text: 'ok' }), { echoed: 'ok', length: 2 })
})

test('never a fall back on the route\'s own refusal, nor to a route without the fallback', { timeout: 15000 }, async (t) => {
  const h = await serveFallback({ auth: { sources: ['protocol', 'header'] } })
  t.after(async () => { await h.close() })
  // An invalid token: the route's 401, final; no stream was asked for.
  const bad = typedClient(h.url, { token: 'not-a-jwt' })
  t.after(() => { bad.close() })
  const offline = await nextEvent(bad, 'offline')
  assert.equal(offline.code, 'INVALID_TOKEN')
  assert.equal(h.streams(), 0)
  // Too many connections for the user (the route's 429): retried on WebSockets, never on the stream.
  await h.app.close()
  const limited = await serveFallback({ auth: { sources: ['protocol', 'header'] }, limits: { maxConnectionsPerUser: 1 } })
  t.after(async () => { await limited.close() })
  const token = limited.sign({ sub: 'ann' })
  const first = typedClient(limited.url, { token })
  t.after(() => { first.close() })
  await opened(first)
  const second = typedClient(limited.url, { token, backoff: { base: 50, cap: 100 } })
  t.after(() => { second.close() })
  await waitFor(() => (second as any).attempt >= 3, 5000, 'three refused attempts')
  assert.equal(second.transport, 'websocket')
  assert.equal(limited.streams(), 0)
  // A route without the fallback behind a proxy that refuses upgrades: its 426 does not offer the stream.
  const plain = Fastify({ logger: false, forceCloseConnections: true })
  await plain.register(realtime, { auth: false, heartbeat: false })
  let streams = 0
  plain.addHook('onRequest', async (request) => { if (String(request.headers.accept).includes('text/event-stream')) streams++ })
  chatRoute(plain)
  await plain.listen({ host: '127.0.0.1', port: 0 })
  t.after(async () => { await plain.close() })
  const { wsBase } = await proxyTo(t, `http://127.0.0.1:${(plain.server.address() as { port: number }).port}`, { upgrades: () => 'refuse' })
  const lost = typedClient(`${wsBase}/chat`, { backoff: { base: 50, cap: 100 } })
  t.after(() => { lost.close() })
  await nextEvent(lost, 'reconnecting')
  await nextEvent(lost, 'reconnecting')
  assert.equal(lost.transport, 'websocket')
  assert.equal(streams, 0)
})

test('a proxy that loses the answers to POSTs: every send and request is handled once and in order', { timeout: 20000 }, async (t) => {
  const h = await serveFallback()
  t.after(async () => { await h.close() })
  let posts = 0
  const { wsBase } = await proxyTo(t, `http://127.0.0.1:${h.port}`, { dropAnswer: () => ++posts % 3 === 0 })
  const c = typedClient(`${wsBase}/chat`, { transports: ['stream'] })
  t.after(() => { c.close() })
  await opened(c)
  const requests: Array<Promise<number>> = []
  for (let i = 0; i < 60; i++) {
    c.send('note', `n${i}`)
    if (i % 10 === 0) requests.push(c.request('slow', 0))
    await sleep(i % 7 === 0 ? 15 : 0)
  }
  const counts = await Promise.all(requests)
  await waitFor(() => h.seen.notes.filter((n) => n.startsWith('n')).length === 60, 10000, 'the notes')
  assert.deepEqual(h.seen.notes.filter((n) => n.startsWith('n')), Array.from({ length: 60 }, (_, i) => `n${i}`))
  // 'slow' counts its runs: each ran once, in order.
  assert.deepEqual(counts, [1, 2, 3, 4, 5, 6])
  assert.ok(posts >= 3, `${posts} POSTs, every third answered into the void`)
})

test('auth.refresh on the stream: the batches after it carry the new token, past the old one\'s expiry', { timeout: 15000 }, async (t) => {
  const h = await serveFallback({ auth: { sources: ['protocol', 'header'] } })
  t.after(async () => { await h.close() })
  const short = (h.app as any).jwt.sign({ sub: 'ann' }, { expiresIn: 2 })
  const c = typedClient(h.url, { transports: ['stream'], token: short })
  t.after(() => { c.close() })
  await opened(c)
  const { exp } = await c.refreshToken((h.app as any).jwt.sign({ sub: 'ann' }, { expiresIn: 60 }))
  assert.ok(exp !== null && exp > Date.now() / 1000 + 30)
  await sleep(2600)
  assert.equal(await c.request('whoami', null), 'ann')
  assert.equal(c.state, 'open')
  assert.equal(h.app.realtime.connections.size, 1)
})

test('a stream dropped: the client comes back on the stream and a history room recovers what it missed', { timeout: 20000 }, async (t) => {
  const { h, c, said } = await historyThroughProxy(t, () => 'refuse')
  const recovery: unknown[] = []
  c.on('recovery', (e) => { recovery.push(e) })
  await c.request('join', { room: 'h:1' })
  assert.equal(c.transport, 'stream')
  h.app.realtime.to('h:1').send('said', { n: 1 })
  await waitFor(() => said.length === 1)
  for (const conn of h.app.realtime.connections.values()) conn.terminate()
  for (let n = 2; n <= 4; n++) h.app.realtime.to('h:1').send('said', { n })
  await waitFor(() => said.length === 4, 5000, 'the missed events')
  h.app.realtime.to('h:1').send('said', { n: 5 })
  await waitFor(() => said.length === 5)
  assert.deepEqual(said, [1, 2, 3, 4, 5])
  assert.deepEqual(recovery, [{ room: 'h:1', recovered: true, missed: 3 }])
  assert.equal(c.transport, 'stream')
})

test('upgrades let through again: the client moves to a WebSocket, no event of a history room lost or repeated, no request failed', { timeout: 30000 }, async (t) => {
  let upgrades: 'refuse' | 'pass' = 'refuse'
  const { h, proxy, c, said } = await historyThroughProxy(t, () => upgrades, { probeInterval: 300 })
  const opens: unknown[] = []
  c.on('open', (e) => { opens.push(e) })
  await c.request('join', { room: 'h:1' })
  assert.equal(c.transport, 'stream')
  // Events every few ms and requests one after another, while the probes fail and then one gets through.
  let n = 0
  const run = { publishing: true }
  const publisher = (async () => {
    while (run.publishing) {
      h.app.realtime.to('h:1').send('said', { n: ++n })
      await sleep(4)
    }
  })()
  const requests = (async () => {
    let done = 0
    while (run.publishing) {
      await c.request('join', { room: 'h:1' })
      done++
      await sleep(15)
    }
    return done
  })()
  await sleep(800)
  assert.equal(c.transport, 'stream')
  assert.ok(proxy.refusedUpgrades >= 2, `${proxy.refusedUpgrades} probes refused`)
  upgrades = 'pass'
  await waitFor(() => c.transport === 'websocket', 5000, 'the move to a WebSocket')
  await sleep(500)
  run.publishing = false
  await publisher
  const done = await requests
  assert.ok(done > 5, `${done} requests`)
  await waitFor(() => said.length >= n, 5000, 'every event')
  assert.deepEqual(said, Array.from({ length: n }, (_, i) => i + 1))
  assert.deepEqual(opens, [{ reconnected: false, transport: 'stream' }, { reconnected: true, transport: 'websocket' }])
  // The stream was closed once the WebSocket joined again: one connection, the WebSocket.
  await waitFor(() => h.app.realtime.connections.size === 1, 3000, 'the stream closed')
  assert.deepEqual([...h.app.realtime.connections.values()].map((conn) => conn.transport), ['websocket'])
})

test('transports: [\'websocket\'] never falls back; [\'stream\', \'websocket\'] stays on the stream; a bad list throws', { timeout: 15000 }, async (t) => {
  const h = await serveFallback()
  t.after(async () => { await h.close() })
  const { proxy, wsBase } = await proxyTo(t, `http://127.0.0.1:${h.port}`, { upgrades: () => 'refuse' })
  const only = typedClient(`${wsBase}/chat`, { transports: ['websocket'], backoff: { base: 50, cap: 100 } })
  t.after(() => { only.close() })
  await nextEvent(only, 'reconnecting')
  await nextEvent(only, 'reconnecting')
  assert.equal(only.transport, 'websocket')
  assert.equal(h.streams(), 0)
  assert.ok(proxy.refusedUpgrades >= 2)
  only.close()
  // The stream first, a WebSocket second (straight to the app, where upgrades pass): no probe moves it.
  const preferStream = typedClient(h.url, { transports: ['stream', 'websocket'], probeInterval: 100 })
  t.after(() => { preferStream.close() })
  await opened(preferStream)
  await sleep(400)
  assert.equal(preferStream.transport, 'stream')
  assert.deepEqual(transports(h), ['stream'])
  assert.throws(() => typedClient(h.url, { transports: [] }), TypeError)
  assert.throws(() => typedClient(h.url, { transports: ['polling' as never] }), TypeError)
})

test('the move waits for the stream\'s requests, 2 s at most: then a plain request is DISCONNECTED and a keyed one is retried on the WebSocket and runs once', { timeout: 20000 }, async (t) => {
  const h = await serveFallback()
  t.after(async () => { await h.close() })
  let upgrades: 'refuse' | 'pass' = 'refuse'
  const { wsBase } = await proxyTo(t, `http://127.0.0.1:${h.port}`, { upgrades: () => upgrades })
  const c = typedClient(`${wsBase}/chat`, { probeInterval: 200 })
  t.after(() => { c.close() })
  await opened(c)
  assert.equal(c.transport, 'stream')
  // A short request is waited for: it is answered on the stream before the move.
  const quick = c.request('hang', 300)
  const keyed = c.request('slow', 3000, { retry: true, timeout: 15000 })
  const plain = c.request('hang', 3000).then(() => 'answered', (err: RealtimeClientError) => err.code)
  await sleep(50)
  upgrades = 'pass'
  assert.equal(await quick, 300)
  assert.equal(c.transport, 'stream', 'still on the stream while its requests run')
  await waitFor(() => c.transport === 'websocket', 5000, 'the move')
  assert.equal(await plain, 'DISCONNECTED')
  assert.equal(await keyed, 1, 'the keyed request ran once, its result given to the retry')
  assert.deepEqual(h.seen.notes.filter((n) => n === 'slow'), ['slow'])
  assert.deepEqual(await c.request('echo', { text: 'after' }), { echoed: 'after', length: 5 })
})

test('a proxy that swallows upgrades to a route without the fallback: the stream is tried after fallbackAfter, refused, and the next attempt is a WebSocket again', { timeout: 15000 }, async (t) => {
  const plain = Fastify({ logger: false, forceCloseConnections: true })
  await plain.register(realtime, { auth: false, heartbeat: false })
  let streams = 0
  plain.addHook('onRequest', async (request) => { if (String(request.headers.accept).includes('text/event-stream')) streams++ })
  chatRoute(plain)
  await plain.listen({ host: '127.0.0.1', port: 0 })
  t.after(async () => { await plain.close() })
  const { proxy, wsBase } = await proxyTo(t, `http://127.0.0.1:${(plain.server.address() as { port: number }).port}`, { upgrades: () => 'hang' })
  const c = typedClient(`${wsBase}/chat`, { fallbackAfter: 200, backoff: { base: 50, cap: 100 } })
  t.after(() => { c.close() })
  await nextEvent(c, 'reconnecting')
  assert.equal(c.transport, 'websocket', 'back to a WebSocket for the next attempt')
  await nextEvent(c, 'reconnecting')
  assert.ok(streams >= 1 && proxy.heldUpgrades >= 2, `${streams} streams, ${proxy.heldUpgrades} upgrades held`)
  assert.equal(plain.realtime.connections.size, 0)
  assert.notEqual(c.state, 'closed')
})
