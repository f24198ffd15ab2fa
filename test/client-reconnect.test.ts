// The typed client's reconnects: the backoff, onReconnect and the queue across a server restart, which close codes
// end it, the dead link found by the app-level ping, and sessions that expire.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { WebSocketServer } from 'ws'
import { CloseCode as ServerCloseCode } from '../lib/index.js'
import { CloseCode, backoffDelay, shouldReconnect, type RealtimeClientError } from '../lib/client/index.js'
import { waitFor } from './helpers/client.js'
import { nextEvent, opened, serveChat, sleep, typedClient } from './helpers/typed-client.js'

test('backoff: exponential ceilings with full jitter, capped', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, {}, () => 0.999999)), [499, 999, 1999, 3999, 7999, 15999, 29999])
  assert.deepEqual([1, 5, 40].map((n) => backoffDelay(n, { base: 20, cap: 200 }, () => 0.5)), [10, 100, 100])
  assert.equal(backoffDelay(3, {}, () => 0), 0)
})

test('which closes are worth a reconnect', () => {
  const retry = [CloseCode.GOING_AWAY, CloseCode.ABNORMAL, CloseCode.INTERNAL_ERROR, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER, CloseCode.SLOW_CONSUMER]
  const final = [CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR, CloseCode.POLICY_VIOLATION, CloseCode.MESSAGE_TOO_BIG, 4000]
  for (const code of retry) assert.equal(shouldReconnect(code, false), true, String(code))
  for (const code of final) assert.equal(shouldReconnect(code, true), false, String(code))
  assert.equal(shouldReconnect(CloseCode.SESSION_EXPIRED, false), false)
  assert.equal(shouldReconnect(CloseCode.SESSION_EXPIRED, true), true)
})

test('server restarted on the same port: DISCONNECTED, backoff, onReconnect first, then the queue in order', { timeout: 20000 }, async (t) => {
  const h = await serveChat()
  const { port, seen } = h
  const reconnecting: Array<{ attempt: number, delay: number }> = []
  const opens: boolean[] = []
  let reconnects = 0
  const c = typedClient(h.url, {
    onReconnect: async (client) => { reconnects++; await client.request('join', 'lobby') }
  })
  t.after(() => { c.close() })
  c.on('reconnecting', (e) => { reconnecting.push(e) })
  c.on('open', ({ reconnected }) => { opens.push(reconnected) })
  await opened(c)
  const inFlight = c.request('hang', 5000)
  await sleep(50)
  const closing = h.close()
  const closed = await nextEvent(c, 'close')
  assert.equal(closed.code, CloseCode.GOING_AWAY)
  await assert.rejects(inFlight, (err: RealtimeClientError) => err.code === 'DISCONNECTED' && err.closeCode === CloseCode.GOING_AWAY)
  await closing
  // While the server is down: queued, in order, a request among them.
  c.send('note', 'one')
  const queuedRequest = c.request('echo', { text: 'two' }, { timeout: 10000 })
  c.send('note', 'three')
  await waitFor(() => reconnecting.length >= 3, 5000, 'a few failed attempts')
  const back = await serveChat({ auth: false }, port, seen)
  t.after(() => back.close())
  assert.deepEqual(await queuedRequest, { echoed: 'two', length: 3 })
  await waitFor(() => seen.notes.length >= 3, 3000, 'the queue')
  assert.deepEqual(seen.notes, ['join:lobby', 'one', 'three'])
  assert.equal(reconnects, 1)
  assert.deepEqual(opens, [false, true])
  assert.deepEqual(reconnecting.map((r) => r.attempt), reconnecting.map((_, i) => i + 1))
  for (const { attempt, delay } of reconnecting) assert.ok(delay >= 0 && delay < Math.min(200, 20 * 2 ** (attempt - 1)), `attempt ${attempt}: ${delay} ms`)
  assert.equal(c.state, 'open')
})

for (const [name, code] of [['1008 policy close', ServerCloseCode.POLICY_VIOLATION], ['normal close by the server', ServerCloseCode.NORMAL]] as const) {
  test(`no reconnect after a ${name}: offline, what waits is rejected, send throws`, { timeout: 10000 }, async (t) => {
    const h = await serveChat()
    t.after(() => h.close())
    const c = typedClient(h.url)
    let reconnecting = 0
    c.on('reconnecting', () => { reconnecting++ })
    const offline = nextEvent(c, 'offline')
    await opened(c)
    c.send('kick', code)
    const pending = c.request('hang', 1000) // in flight when the close comes
    const err = await offline
    assert.deepEqual([err.code, err.closeCode], ['CLOSED', code])
    await assert.rejects(pending, { code: 'DISCONNECTED', closeCode: code })
    await sleep(200)
    assert.deepEqual(h.seen.closes, [code], 'the server closed with it')
    assert.equal(reconnecting, 0)
    assert.equal(c.state, 'closed')
    assert.throws(() => { c.send('note', 'late') }, { code: 'CLOSED' })
  })
}

for (const [name, code] of [['4408 slow-consumer close', ServerCloseCode.SLOW_CONSUMER], ['1011 internal error', ServerCloseCode.INTERNAL_ERROR]] as const) {
  test(`a ${name} is followed by a reconnect`, { timeout: 10000 }, async (t) => {
    const h = await serveChat()
    t.after(() => h.close())
    const c = typedClient(h.url)
    t.after(() => { c.close() })
    await opened(c)
    const closed = nextEvent(c, 'close')
    const reopened = nextEvent(c, 'open')
    c.send('kick', code)
    assert.deepEqual(await closed, { code, reason: 'kicked' })
    assert.deepEqual(await reopened, { reconnected: true, transport: 'websocket' })
    assert.deepEqual(await c.request('echo', { text: 'back' }), { echoed: 'back', length: 4 })
  })
}

test('maxAttempts: the client gives up after that many failed attempts in a row', { timeout: 10000 }, async (t) => {
  const c = typedClient('ws://127.0.0.1:9/chat', { maxAttempts: 2 })
  t.after(() => { c.close() })
  const attempts: number[] = []
  c.on('reconnecting', ({ attempt }) => { attempts.push(attempt) })
  const err = await nextEvent(c, 'offline')
  assert.equal(err.code, 'CLOSED')
  assert.match(err.message, /gave up after 2 attempts/)
  assert.deepEqual(attempts, [1, 2])
})

test('a dead link (the server stops reading) is found by the app-level ping: dropped, then reconnected', { timeout: 15000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  const c = typedClient(h.url, { pingInterval: 100, pingTimeout: 200 })
  t.after(() => { c.close() })
  await opened(c)
  await sleep(250) // pings are answered while the link lives
  assert.equal(c.state, 'open')
  const [conn] = h.app.realtime.connections.values()
  ;(conn?.socket as unknown as { _socket: { pause: () => void } })._socket.pause()
  const closed = nextEvent(c, 'close')
  const reopened = nextEvent(c, 'open')
  assert.deepEqual(await closed, { code: CloseCode.ABNORMAL, reason: 'ping timeout' })
  await reopened
  assert.deepEqual(await c.request('echo', { text: 'back' }), { echoed: 'back', length: 4 })
})

test('a peer that never answers the app-level ping is dropped and connected to again', { timeout: 10000 }, async (t) => {
  // A bare ws server: it completes the handshake (and answers protocol pings), but knows nothing of { type: 'ping' }.
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (offered) => offered.has('realtime.v1') ? 'realtime.v1' : false })
  await once(wss, 'listening')
  t.after(() => { for (const ws of wss.clients) ws.terminate(); wss.close() })
  let connections = 0
  const frames: string[] = []
  wss.on('connection', (ws) => { connections++; ws.on('message', (data) => { frames.push(String(data)) }) })
  const c = typedClient(`ws://127.0.0.1:${(wss.address() as { port: number }).port}/`, { pingInterval: 50, pingTimeout: 100 })
  t.after(() => { c.close() })
  const closed = await nextEvent(c, 'close')
  assert.deepEqual(closed, { code: CloseCode.ABNORMAL, reason: 'ping timeout' })
  await waitFor(() => connections === 2, 3000, 'the reconnect')
  assert.deepEqual(JSON.parse(frames[0]!), { type: 'ping' })
})

test('a session that expires (4401) comes back with a fresh token from getToken', { timeout: 15000 }, async (t) => {
  const h = await serveChat({})
  t.after(() => h.close())
  let tokens = 0
  // The first token lives 1 to 2 s (exp is in whole seconds: floor(now) + 1 could be a few ms away, and the
  // session would end before its first request is answered).
  const c = typedClient(h.url, {
    getToken: () => { tokens++; return h.sign({ sub: `alice-${tokens}`, exp: Math.ceil(Date.now() / 1000) + (tokens === 1 ? 1 : 60) }) }
  })
  t.after(() => { c.close() })
  await opened(c)
  assert.equal(await c.request('whoami', null), 'alice-1')
  assert.deepEqual(await nextEvent(c, 'close'), { code: CloseCode.SESSION_EXPIRED, reason: 'session expired' })
  await nextEvent(c, 'open')
  assert.equal(tokens, 2)
  assert.equal(await c.request('whoami', null), 'alice-2')
  assert.deepEqual(h.seen.closes, [ServerCloseCode.SESSION_EXPIRED])
})

test('without getToken, a session expiry (4401) is final', { timeout: 15000 }, async (t) => {
  const h = await serveChat({})
  t.after(() => h.close())
  // 1 to 2 s, never a few ms: a token already expired at the handshake is refused instead of expiring (4401).
  const c = typedClient(h.url, { token: h.sign({ sub: 'bob', exp: Math.ceil(Date.now() / 1000) + 1 }) })
  t.after(() => { c.close() })
  let reconnecting = 0
  c.on('reconnecting', () => { reconnecting++ })
  const err = await nextEvent(c, 'offline', 10000)
  assert.deepEqual([err.code, err.closeCode], ['CLOSED', CloseCode.SESSION_EXPIRED])
  assert.equal(reconnecting, 0)
})
