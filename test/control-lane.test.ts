import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { Type } from '@sinclair/typebox'
import type { RealtimeOptions } from '../lib/index.js'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, waitFor, type TestClient } from './helpers/client.js'

// Issue 21, the server's side: control messages (ping, auth.refresh, rt.resume) have a lane of their own, a hung
// handler has a bound, onClose follows onOpen, and no answer is dropped in silence.

const now = (): number => Math.floor(Date.now() / 1000)
const KEY = 'k-0123456789abcdef'

async function laneApp (t: { after: (fn: () => unknown) => void }, realtime: RealtimeOptions, route: Record<string, unknown> = {}): Promise<TestApp> {
  const h = await startApp({
    realtime,
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: {
          echo: { schema: Type.Any(), handler: (d: unknown) => d },
          slow: { schema: Type.Number(), handler: async (ms: number) => { await sleep(ms); return ms } },
          hang: { schema: Type.Any(), handler: async () => await new Promise(() => {}) },
          late: { schema: Type.Number(), handler: async (ms: number) => { await sleep(ms); return { late: ms } } }
        },
        ...route
      } as any)
    }
  })
  t.after(() => h.close())
  return h
}

async function client (t: { after: (fn: () => unknown) => void }, h: TestApp, token?: string): Promise<TestClient> {
  const c = await connect(`${h.wsBase}/rt`, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } })
  t.after(() => { c.destroy() })
  return c
}

test('a ping at the app\'s rate limit is answered: control frames have their own budget and do not spend the app\'s', { timeout: 10000 }, async (t) => {
  const h = await laneApp(t, { auth: false, limits: { rate: 1, burst: 5 } })
  const c = await client(t, h)
  // Five pings first: on a shared budget they would leave nothing for the app's five messages.
  for (let i = 1; i <= 5; i++) c.sendJson({ type: 'ping', id: `p${i}` })
  for (let i = 1; i <= 5; i++) assert.deepEqual(await c.nextMessage(), { type: 'pong', id: `p${i}` })
  for (let i = 1; i <= 5; i++) c.sendJson({ type: 'echo', data: i, id: i })
  for (let i = 1; i <= 5; i++) assert.deepEqual(await c.nextMessage(), { type: 'reply', id: i, data: i })
  // The app's budget is spent: the app's next message is refused, a ping still gets its pong.
  c.sendJson({ type: 'echo', data: 6, id: 6 })
  assert.equal((await c.nextMessage()).error.code, 'RATE_LIMITED')
  c.sendJson({ type: 'ping', id: 'after' })
  assert.deepEqual(await c.nextMessage(), { type: 'pong', id: 'after' })
  // A flood of pings past the control budget falls back on the app's rate, and is refused there: not free.
  for (let i = 0; i < 30; i++) c.sendJson({ type: 'ping', id: `f${i}` })
  const answers = await Promise.all(Array.from({ length: 30 }, async () => await c.nextMessage()))
  assert.ok(answers.some((m) => m.type === 'error' && m.error.code === 'RATE_LIMITED'), 'a ping flood is limited')
  assert.ok(answers.filter((m) => m.type === 'pong').length <= 12, 'at most the control burst (and a token or two of refill) answered')
})

test('auth.refresh is answered while a slow handler runs, and the session it renews outlives the first token', { timeout: 15000 }, async (t) => {
  const h = await laneApp(t, {})
  const c = await client(t, h, h.sign({ sub: 'ada', exp: now() + 3 }))
  c.sendJson({ type: 'slow', data: 2500, id: 1 })
  await sleep(50)
  const exp = now() + 60
  c.sendJson({ type: 'auth.refresh', data: { token: h.sign({ sub: 'ada', exp }) }, id: 2 })
  const first = await c.nextMessage(1500)
  assert.deepEqual(first, { type: 'reply', id: 2, data: { exp } }, 'the renewal is not queued behind the handler')
  assert.deepEqual(await c.nextMessage(3000), { type: 'reply', id: 1, data: 2500 })
  await sleep(1500)
  assert.equal(c.ws.readyState, c.ws.OPEN, 'alive past the first token\'s expiry')
})

test('limits.handlerTimeout: a hung handler is answered HANDLER_TIMEOUT and the connection goes on; a late result is kept for its key', { timeout: 15000 }, async (t) => {
  const h = await laneApp(t, { auth: false, limits: { handlerTimeout: 300 } })
  const c = await client(t, h)
  c.sendJson({ type: 'hang', data: null, id: 1 })
  c.sendJson({ type: 'echo', data: 'next', id: 2 })
  const timedOut = await c.nextMessage(2000)
  assert.equal(timedOut.id, 1)
  assert.equal(timedOut.error.code, 'HANDLER_TIMEOUT')
  assert.deepEqual(await c.nextMessage(), { type: 'reply', id: 2, data: 'next' })

  // A keyed request whose handler settles after the timeout: the retry learns the real outcome.
  c.sendJson({ type: 'late', data: 600, id: 3, key: KEY })
  assert.equal((await c.nextMessage(2000)).error.code, 'HANDLER_TIMEOUT')
  await sleep(600)
  c.sendJson({ type: 'late', data: 600, id: 4, key: KEY })
  assert.deepEqual(await c.nextMessage(), { type: 'reply', id: 4, data: { late: 600 }, replayed: true })
})

test('limits.handlerTimeout is validated: a negative, NaN or over 2^31-1 ms is refused at register; 0 waits for ever', { timeout: 10000 }, async () => {
  for (const handlerTimeout of [-1, Number.NaN, 2 ** 31]) {
    await assert.rejects(startApp({ realtime: { auth: false, limits: { handlerTimeout } } }), /limits\.handlerTimeout/)
  }
  const h = await startApp({ realtime: { auth: false, limits: { handlerTimeout: 0 } } })
  await h.close()
})

test('onClose runs after an async onOpen finished, even when the client left while it ran', { timeout: 10000 }, async (t) => {
  const events: string[] = []
  const h = await laneApp(t, { auth: false }, {
    onOpen: async () => { events.push('open'); await sleep(400); events.push('opened') },
    onClose: () => { events.push('close') }
  })
  const c = await client(t, h)
  c.destroy()
  await waitFor(() => events.includes('close'), 3000, 'onClose')
  assert.deepEqual(events, ['open', 'opened', 'close'])
})

test('an onOpen that hangs past limits.handlerTimeout closes with 1011, and onClose still runs', { timeout: 10000 }, async (t) => {
  const closes: number[] = []
  const h = await laneApp(t, { auth: false, limits: { handlerTimeout: 300 } }, {
    onOpen: async () => await new Promise(() => {}),
    onClose: (_conn: unknown, code: number) => { closes.push(code) }
  })
  const c = await client(t, h)
  assert.equal((await c.closed).code, 1011)
  await waitFor(() => closes.length === 1, 3000, 'onClose')
  assert.deepEqual(closes, [1011])
})

test('with onSlowConsumer: drop, a reply that does not fit closes with 4408 instead of vanishing', { timeout: 20000 }, async (t) => {
  const closes: number[] = []
  const h = await laneApp(t, { auth: false, limits: { maxBufferedBytes: 64 * 1024, onSlowConsumer: 'drop' } }, {
    onClose: (_conn: unknown, code: number) => { closes.push(code) }
  })
  const c = await client(t, h)
  const raw = (c.ws as unknown as { _socket: { pause: () => void } })._socket
  raw.pause()
  const conn = [...h.app.realtime.connections.values()][0]
  assert.ok(conn)
  let dropped = false
  for (let i = 0; i < 2000 && !dropped; i++) {
    dropped = !conn.send('blob' as never, { text: 'z'.repeat(8 * 1024) } as never)
    if (i % 50 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  assert.ok(dropped, 'the backlog is full')
  assert.equal(conn.isOpen, true, 'an event dropped under drop keeps the connection')
  c.sendJson({ type: 'echo', data: 'x'.repeat(20_000), id: 1 })
  await waitFor(() => closes.length === 1, 5000, 'the close')
  assert.deepEqual(closes, [4408])
})

test('two renewals in flight finishing out of order leave the session of the one sent last', { timeout: 10000 }, async (t) => {
  const { signRaw } = await import('./helpers/jwt.js')
  const { SECRET } = await import('./helpers/app.js')
  // A secret looked up per token (as a JWKS client does): a token marked slow takes 400 ms to verify.
  const secret = async (_request: unknown, token: { slow?: boolean }): Promise<string> => {
    if (token.slow === true) await sleep(400)
    return SECRET
  }
  const h2 = await startApp({
    jwt: { secret },
    setup: (app) => { app.realtimeRoute({ url: '/rt', messages: { echo: { schema: Type.Any(), handler: (d: unknown) => d } } }) }
  })
  t.after(() => h2.close())
  const c = await client(t, h2, signRaw({ sub: 'ada', exp: now() + 30 }))
  const first = now() + 60
  const last = now() + 120
  c.sendJson({ type: 'auth.refresh', data: { token: signRaw({ sub: 'ada', exp: first, slow: true }) }, id: 1 })
  c.sendJson({ type: 'auth.refresh', data: { token: signRaw({ sub: 'ada', exp: last }) }, id: 2 })
  const answers = [await c.nextMessage(), await c.nextMessage()]
  assert.deepEqual(answers.map((a) => a.id), [2, 1], 'the slow one finished last')
  const conn = [...h2.app.realtime.connections.values()][0]
  assert.equal(conn?.expiresAt, last * 1000)
})
