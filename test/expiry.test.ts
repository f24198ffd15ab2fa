import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import { startApp } from './helpers/app.js'
import { connect, waitFor } from './helpers/client.js'

const route = { url: '/rt', messages: { echo: { schema: Type.Any(), handler: (d: unknown) => d } } }
const now = () => Math.floor(Date.now() / 1000)

test('a session closes with 4401 when its token expires', { timeout: 10000 }, async (t) => {
  const h = await startApp({ setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  // Two seconds: one could pass before the handshake on a loaded machine, and the token would be refused instead.
  const exp = now() + 2
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'alice', exp })}` } })
  const closed = await c.closed
  assert.deepEqual(closed, { code: 4401, reason: 'session expired' })
  const late = Date.now() - exp * 1000
  assert.ok(late >= 0 && late < 1500, `closed ${late} ms after expiry`)
  await waitFor(() => h.app.realtime.connections.size === 0)
  assert.deepEqual(h.app.realtime.stats().closes, { 4401: 1 })
})

test('auth.refresh extends the session; a token of another user or an expired one does not', { timeout: 15000 }, async (t) => {
  const h = await startApp({ setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'alice', exp: now() + 3 })}` } })
  t.after(() => { c.destroy() })
  assert.deepEqual(await c.request('auth.refresh', { token: h.sign({ sub: 'mallory', exp: now() + 60 }) }),
    { type: 'error', id: 1, error: { code: 'INVALID_TOKEN', message: 'the token belongs to another user' } })
  assert.deepEqual(await c.request('auth.refresh', { token: h.sign({ sub: 'alice', exp: now() - 5 }) }),
    { type: 'error', id: 2, error: { code: 'TOKEN_EXPIRED', message: 'session token expired' } })
  assert.equal((await c.request('auth.refresh', { token: 'garbage' })).error.code, 'INVALID_TOKEN')
  assert.equal((await c.request('auth.refresh', {})).error.code, 'INVALID_TOKEN')
  const exp = now() + 8
  assert.deepEqual(await c.request('auth.refresh', { token: h.sign({ sub: 'alice', exp }) }), { type: 'reply', id: 5, data: { exp } })
  // Past the first expiry, the connection lives on.
  await new Promise((resolve) => setTimeout(resolve, 4000))
  assert.equal(c.ws.readyState, c.ws.OPEN)
  assert.equal((await c.request('echo', 'still here')).data, 'still here')
})

test('closeOnExpiry: false keeps an expired session open', { timeout: 10000 }, async (t) => {
  const h = await startApp({ realtime: { auth: { closeOnExpiry: false } }, setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  const exp = now() + 2
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'alice', exp })}` } })
  t.after(() => { c.destroy() })
  await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 1200))
  assert.equal((await c.request('echo', 1)).data, 1)
})

test('auth.refresh of a session without a user id is refused: two undefined ids do not make the same user', { timeout: 10000 }, async (t) => {
  const h = await startApp({ setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  const exp = now() + 30
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ name: 'no sub', exp })}` } })
  t.after(() => { c.destroy() })
  const answer = await c.request('auth.refresh', { token: h.sign({ name: 'someone else', exp: now() + 3600 }) })
  assert.equal(answer.type, 'error')
  assert.equal(answer.error.code, 'INVALID_TOKEN')
  assert.match(answer.error.message, /no user id/)
  const unchanged = [...h.app.realtime.connections.values()][0]
  assert.equal(unchanged?.expiresAt, exp * 1000, 'the old expiry stands')
})
