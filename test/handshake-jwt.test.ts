// Tokens are verified as @fastify/jwt verifies them on the app's own routes: every option the app gave it applies
// to the handshake and to auth.refresh (trusted, formatUser, verify options, decoratorName, a namespace).
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import jwt from '@fastify/jwt'
import cookie from '@fastify/cookie'
import type { FastifyInstance } from 'fastify'
import { startApp, SECRET, type TestApp } from './helpers/app.js'
import { connect, refusalOf } from './helpers/client.js'
import { signRaw } from './helpers/jwt.js'
import { createHmac } from 'node:crypto'
import { setImmediate as setImmediatePromise } from 'node:timers/promises'

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

/** An app whose verifier caches (fast-jwt's `verify.cache`), with the cache's key lookups counted. */
async function cachingApp (t: TestContext, jwtOptions: Record<string, unknown> = {}, realtime: Record<string, unknown> = {}, setup?: (app: FastifyInstance) => void): Promise<{ h: TestApp, lookups: string[] }> {
  const lookups: string[] = []
  // fast-jwt builds the key on every lookup and again to store a miss: a hit costs one call, a miss two. (It warns
  // about custom key builders; this one is the token itself, as the default.)
  const h = await startApp({
    jwt: { ...jwtOptions, verify: { cache: true, cacheKeyBuilder: (token: string) => { lookups.push(token); return token } } },
    realtime,
    setup: (app) => {
      setup?.(app)
      app.realtimeRoute(route)
    }
  })
  t.after(() => h.close())
  return { h, lookups }
}

test('the app\'s own verifier checks every handshake: with verify.cache, the same token again is a cache hit', { timeout: 10000 }, async (t) => {
  const { h, lookups } = await cachingApp(t)
  const token = h.sign({ sub: 'alice' })
  for (let i = 0; i < 3; i++) {
    const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` } })
    assert.equal((await c.request('whoami', null)).data.userId, 'alice')
    c.destroy()
  }
  // A verifier made for each call has a cache of its own, empty: two lookups each time.
  assert.equal(lookups.length, 2 + 1 + 1)
})

test('tokens from the subprotocol and the query go through the app\'s verifier too, and the Authorization header is left as it was', { timeout: 10000 }, async (t) => {
  const seen: Array<string | undefined> = []
  const headerObjects: object[] = []
  const { h, lookups } = await cachingApp(t, {}, { auth: { sources: ['protocol', 'query', 'header'] } }, (app) => {
    app.addHook('onRequest', async (request) => {
      if (request.headers.upgrade === undefined) return
      seen.push(request.headers.authorization)
      headerObjects.push(request.raw.headers)
    })
  })
  const token = h.sign({ sub: 'bob' })
  const fromProtocol = await connect(`${h.wsBase}/rt`, { protocols: ['realtime.v1', `bearer.${token}`] })
  t.after(() => { fromProtocol.destroy() })
  const fromQuery = await connect(`${h.wsBase}/rt?token=${token}`, { headers: { authorization: 'Basic something-else' } })
  t.after(() => { fromQuery.destroy() })
  for (const c of [fromProtocol, fromQuery]) {
    const { data } = await c.request('whoami', null)
    assert.equal(data.userId, 'bob')
  }
  assert.equal(lookups.length, 2 + 1, 'the second handshake hit the cache the first filled')
  const requests = [...h.app.realtime.connections.values()].map((conn) => conn.request)
  const headers = requests.map((r) => r.headers.authorization)
  assert.deepEqual(headers.sort(), ['Basic something-else', undefined].sort())
  assert.ok(requests.some((r) => !('authorization' in r.raw.headers)), 'no Authorization key left behind where there was none')
  assert.deepEqual(seen, [undefined, 'Basic something-else'])
  assert.ok(requests.every((r) => headerObjects.includes(r.raw.headers)), 'each request keeps its own headers object')
})

test('trusted runs on every handshake, cache hit or not: a token revoked after it was cached is refused', { timeout: 10000 }, async (t) => {
  const revokedNow = new Set<string>()
  const { h, lookups } = await cachingApp(t, { trusted: (_request: unknown, decoded: { jti: string }) => !revokedNow.has(decoded.jti) })
  const token = h.sign({ sub: 'carol', jti: 'j1' })
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` } })
  t.after(() => { c.destroy() })
  revokedNow.add('j1')
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` } }))
  assert.deepEqual([refusal.statusCode, refusal.body.code], [401, 'INVALID_TOKEN'])
  assert.equal(lookups.length, 2 + 1, 'the refused handshake was a cache hit')
  assert.equal((await c.request('auth.refresh', { token })).error?.code, 'INVALID_TOKEN')
})

test('an app that finds tokens itself (verify.extractToken): the token fastify-realtime found is the one verified', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    jwt: { verify: { extractToken: (request: { headers: Record<string, string | undefined> }) => request.headers['x-app-token'] } },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'dave' })}`, 'x-app-token': h.sign({ sub: 'mallory' }) } })
  t.after(() => { c.destroy() })
  assert.equal((await c.request('whoami', null)).data.userId, 'dave')
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: 'Bearer not.a.token', 'x-app-token': h.sign({ sub: 'mallory' }) } }))
  assert.equal(refusal.body.code, 'INVALID_TOKEN')
})

test('a hook that replaced request.headers cannot slip its Authorization in: the token found is the one verified', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    realtime: { auth: { sources: ['query'] } },
    setup: (app) => {
      app.addHook('onRequest', async (request) => { request.headers = { authorization: `Bearer ${h.sign({ sub: 'mallory' })}` } })
      app.realtimeRoute(route)
    }
  })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt?token=${h.sign({ sub: 'erin' })}`)
  t.after(() => { c.destroy() })
  assert.equal((await c.request('whoami', null)).data.userId, 'erin')
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt?token=garbage.garbage.garbage`))).body.code, 'INVALID_TOKEN')
})

test('the algorithm pin is remembered by header, and holds for headers a client makes up by the hundred', { timeout: 20000 }, async (t) => {
  const h = await startApp({ realtime: { auth: { algorithms: ['HS256'] } }, setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  const part = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const good = signRaw({ sub: 'frank' })
  // Headers that differ by a made-up field, more than the pin remembers, each with a valid HS256 signature but one.
  for (let i = 0; i < 80; i++) {
    const header = part({ alg: i % 2 === 0 ? 'HS384' : 'HS256', typ: 'JWT', kid: `k${i}` })
    const body = `${header}.${part({ sub: 'frank' })}`
    const token = `${body}.${createHmac(i % 2 === 0 ? 'sha384' : 'sha256', SECRET).update(body).digest('base64url')}`
    const outcome = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` } }).then((c) => { c.destroy(); return 'open' }, () => 'refused')
    assert.equal(outcome, i % 2 === 0 ? 'refused' : 'open', `header ${i}`)
  }
  for (const token of [good, signRaw({ sub: 'frank' }, { alg: 'none' }), good]) {
    const outcome = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` } }).then((c) => { c.destroy(); return 'open' }, () => 'refused')
    assert.equal(outcome, token === good ? 'open' : 'refused')
  }
})

test('a secret callback picks the key by the token\'s kid, given the handshake\'s request, whichever source the token came from', { timeout: 10000 }, async (t) => {
  const urls: string[] = []
  const keys: Record<string, string> = { k1: SECRET, k2: 'another-secret-that-is-long-enough-for-hs256' }
  const h = await startApp({
    jwt: {
      // `complete`: the secret callback gets the token's header too.
      decode: { complete: true },
      secret: async (request: { url: string }, token: { header: { kid?: string } }) => {
        urls.push(request.url)
        return keys[token.header.kid ?? ''] ?? 'no-such-key-no-such-key-no-such-key'
      }
    },
    realtime: { auth: { sources: ['header', 'query'] } },
    setup: (app) => { app.realtimeRoute(route) }
  })
  t.after(() => h.close())
  const part = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const signed = (kid: string, key: string): string => {
    const body = `${part({ alg: 'HS256', typ: 'JWT', kid })}.${part({ sub: 'grace' })}`
    return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`
  }
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${signed('k2', keys.k2 as string)}` } })
  t.after(() => { c.destroy() })
  assert.equal((await c.request('whoami', null)).data.userId, 'grace')
  const q = await connect(`${h.wsBase}/rt?token=${signed('k1', SECRET)}`)
  t.after(() => { q.destroy() })
  assert.equal((await q.request('whoami', null)).data.userId, 'grace')
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${signed('k1', keys.k2 as string)}` } }))
  assert.deepEqual([refusal.statusCode, refusal.body.code], [401, 'INVALID_TOKEN'])
  assert.deepEqual(urls, ['/rt', '/rt', '/rt'], 'the handshake\'s request, the query token already out of its URL')
})

test('an app whose @fastify/jwt reads only its cookie (verify.onlyCookie): the token fastify-realtime found is the one verified', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    jwt: { cookie: { cookieName: 'jwt', signed: false }, verify: { onlyCookie: true } },
    setup: async (app) => {
      await app.register(cookie)
      app.realtimeRoute(route)
    }
  })
  t.after(() => h.close())
  const headers = { authorization: `Bearer ${h.sign({ sub: 'ivan' })}`, cookie: `jwt=${h.sign({ sub: 'mallory' })}` }
  const c = await connect(`${h.wsBase}/rt`, { headers })
  t.after(() => { c.destroy() })
  assert.equal((await c.request('whoami', null)).data.userId, 'ivan')
})

test('checks that wait (a key fetched for the token, an async trusted, an async origins, an async authenticate) admit when they answer, and refuse with their codes', { timeout: 15000 }, async (t) => {
  const origins = ['http://app.test']
  const setup = (app: FastifyInstance): void => { app.realtimeRoute(route) }
  const waiting: Array<{ name: string, start: () => Promise<TestApp> }> = [
    { name: 'secret lookup', start: async () => await startApp({ jwt: { secret: async () => { await setImmediatePromise(); return SECRET } }, realtime: { origins }, setup }) },
    { name: 'async trusted', start: async () => await startApp({ jwt: { trusted: async () => { await setImmediatePromise(); return true } }, realtime: { origins }, setup }) },
    { name: 'async origins', start: async () => await startApp({ realtime: { origins: async (origin: string) => { await setImmediatePromise(); return origin === 'http://app.test' } }, setup }) },
    { name: 'async authenticate', start: async () => await startApp({ realtime: { origins, auth: { authenticate: async () => { await setImmediatePromise(); return { sub: 'quick' } } } }, setup }) }
  ]
  for (const { name, start } of waiting) {
    const h = await start()
    t.after(() => h.close())
    const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${signRaw({ sub: 'quick' })}`, origin: 'http://app.test' } })
    t.after(() => { c.destroy() })
    assert.equal((await c.request('whoami', null)).data.userId, 'quick', name)
    // `authenticate` here lets everyone in.
    if (name === 'async authenticate') continue
    const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${signRaw({ sub: 'quick' }, { key: 'another-secret-another-secret-another' })}`, origin: name === 'async origins' ? 'http://evil.test' : 'http://app.test' } }))
    assert.deepEqual([refusal.statusCode, refusal.body.code], name === 'async origins' ? [403, 'FORBIDDEN_ORIGIN'] : [401, 'INVALID_TOKEN'], name)
  }
})

test('a cached token is refused once its exp has passed: the cache is no way around the expiry (docs/12)', { timeout: 10000 }, async (t) => {
  const { h, lookups } = await cachingApp(t)
  const token = h.sign({ sub: 'judy', exp: now() + 2 })
  const c = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` } })
  c.destroy()
  const cached = lookups.length
  await new Promise((resolve) => setTimeout(resolve, 2600))
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token}` } }))
  assert.deepEqual([refusal.statusCode, refusal.body.code], [401, 'TOKEN_EXPIRED'])
  assert.ok(lookups.length > cached, 'the second handshake went through the cache')
})
