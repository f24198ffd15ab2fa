// Tokens are verified as @fastify/jwt verifies them on the app's own routes: every option the app gave it applies
// to the handshake and to auth.refresh (trusted, formatUser, verify options, decoratorName, a namespace).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import jwt from '@fastify/jwt'
import { startApp, SECRET } from './helpers/app.js'
import { connect, refusalOf } from './helpers/client.js'

const revoked = new Set<string>()
const route = {
  url: '/rt',
  messages: {
    whoami: { schema: Type.Null(), handler: (_d: null, conn: any) => ({ user: conn.user, userId: conn.userId, expiresAt: conn.expiresAt ?? null }) }
  }
}
const now = (): number => Math.floor(Date.now() / 1000)

test('trusted: a revoked token gets 401 at the handshake as on a route, and auth.refresh with it changes nothing', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    jwt: { trusted: async (_request: unknown, decoded: { jti?: string }) => decoded.jti === undefined || !revoked.has(decoded.jti) },
    setup: (app) => {
      app.realtimeRoute(route)
      app.get('/http', { onRequest: async (request) => { await request.jwtVerify() } }, async () => 'ok')
    }
  })
  t.after(() => h.close())
  revoked.add('r1')
  const bad = h.sign({ sub: 'alice', jti: 'r1' })
  assert.equal((await fetch(`${h.httpBase}/http`, { headers: { authorization: `Bearer ${bad}` } })).status, 401, 'the app\'s own route refuses it')
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${bad}` } }))
  assert.deepEqual([refusal.statusCode, refusal.body.code], [401, 'INVALID_TOKEN'])

  const exp = now() + 60
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'alice', jti: 'ok', exp })}` } })
  t.after(() => { c.destroy() })
  const answer = await c.request('auth.refresh', { token: h.sign({ sub: 'alice', jti: 'r1' }) })
  assert.equal(answer.error?.code, 'INVALID_TOKEN', JSON.stringify(answer))
  assert.equal((await c.request('whoami', null)).data.expiresAt, exp * 1000, 'the old expiry stands (a token without exp did not remove it)')
})

test('formatUser: conn.user is what formatUser returns; a decoratorName other than user changes nothing here', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    jwt: { formatUser: (payload: { sub: string, name: string }) => ({ id: payload.sub, display: payload.name.toUpperCase() }), decoratorName: 'account' },
    realtime: { auth: { userId: (user: { id: string }) => user.id } },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'u1', name: 'ada' })}` } })
  t.after(() => { c.destroy() })
  const { data } = await c.request('whoami', null)
  assert.deepEqual([data.user, data.userId], [{ id: 'u1', display: 'ADA' }, 'u1'])
})

test('verify options (allowedIss, allowedAud) apply to the handshake and to auth.refresh', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    jwt: { verify: { allowedIss: 'https://issuer.example', allowedAud: 'chat' } },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  const wrongIss = h.sign({ sub: 'alice', iss: 'https://evil.example', aud: 'chat' })
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${wrongIss}` } }))).body.code, 'INVALID_TOKEN')
  const wrongAud = h.sign({ sub: 'alice', iss: 'https://issuer.example', aud: 'billing' })
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${wrongAud}` } }))).body.code, 'INVALID_TOKEN')
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'alice', iss: 'https://issuer.example', aud: 'chat', exp: now() + 60 })}` } })
  t.after(() => { c.destroy() })
  assert.equal((await c.request('auth.refresh', { token: wrongIss })).error?.code, 'INVALID_TOKEN')
})

test('auth.namespace: tokens are verified by that @fastify/jwt instance; the default one\'s tokens are refused', { timeout: 10000 }, async (t) => {
  const other = 'another-secret-that-is-long-enough-for-hs256'
  const h = await startApp({
    realtime: { auth: { namespace: 'partner' } },
    setup: async (app) => {
      await app.register(jwt, { secret: other, namespace: 'partner' })
      app.realtimeRoute(route)
    }
  })
  t.after(() => h.close())
  const partnerToken = (h.app as any).jwt.partner.sign({ sub: 'p1' }) as string
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${partnerToken}` } })
  t.after(() => { c.destroy() })
  assert.equal((await c.request('whoami', null)).data.userId, 'p1')
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'p1' })}` } }))
  assert.deepEqual([refusal.statusCode, refusal.body.code], [401, 'INVALID_TOKEN'])
  assert.notEqual(SECRET, other)
})
