import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { Type } from '@sinclair/typebox'
import cookie from '@fastify/cookie'
import { signRaw } from './helpers/jwt.js'
import { startApp, type StartOptions } from './helpers/app.js'
import { connect, refusalOf } from './helpers/client.js'
import { rawRequest } from './helpers/raw.js'

const echoRoute = {
  url: '/rt',
  messages: { echo: { schema: Type.Object({ text: Type.String() }), handler: ({ text }: { text: string }) => ({ text }) } }
}

async function appWith (options: StartOptions['realtime'] = {}, extra: Partial<StartOptions> = {}) {
  return await startApp({ realtime: options, setup: (app) => { app.realtimeRoute(echoRoute) }, ...extra })
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } })

test('origins: same-origin by default, exact matches after normalization, never a suffix', { timeout: 10000 }, async (t) => {
  const h = await appWith({ auth: false })
  t.after(() => h.close())
  const same = await connect(`${h.wsBase}/rt`, { origin: `http://127.0.0.1:${h.port}` })
  await same.close()
  const other = await refusalOf(connect(`${h.wsBase}/rt`, { origin: 'http://evil.example' }))
  assert.equal(other.statusCode, 403)
  assert.deepEqual(other.body, { statusCode: 403, code: 'FORBIDDEN_ORIGIN', message: 'origin not allowed by the server\'s `origins` option' })
  const noOrigin = await connect(`${h.wsBase}/rt`)
  await noOrigin.close()

  const listed = await appWith({ auth: false, origins: ['https://chat.example.com', 'http://localhost:8080'] })
  t.after(() => listed.close())
  for (const ok of ['https://chat.example.com', 'HTTPS://CHAT.EXAMPLE.COM', 'https://chat.example.com:443', 'http://localhost:8080']) {
    const c = await connect(`${listed.wsBase}/rt`, { origin: ok })
    await c.close()
  }
  for (const bad of ['https://chat.example.com.evil.com', 'https://evilchat.example.com', 'http://chat.example.com', 'null', 'https://chat.example.com:8443', 'not an origin']) {
    const r = await refusalOf(connect(`${listed.wsBase}/rt`, { origin: bad }))
    assert.equal(r.body.code, 'FORBIDDEN_ORIGIN', bad)
  }
})

test('origins: RegExp, function, wildcard, requireOrigin and per-route override', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    realtime: { auth: false, origins: /^https:\/\/[a-z]+\.example\.com$/, requireOrigin: true },
    setup: (app) => {
      app.realtimeRoute(echoRoute)
      app.realtimeRoute({ ...echoRoute, url: '/fn', origins: (origin) => origin.endsWith('.test'), requireOrigin: false })
      app.realtimeRoute({ ...echoRoute, url: '/any', origins: '*' })
    }
  })
  t.after(() => h.close())
  await (await connect(`${h.wsBase}/rt`, { origin: 'https://app.example.com' })).close()
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, { origin: 'https://app.example.com.evil.org' }))).body.code, 'FORBIDDEN_ORIGIN')
  const missing = await refusalOf(connect(`${h.wsBase}/rt`))
  assert.equal(missing.statusCode, 403)
  assert.equal(missing.body.message, 'an Origin header is required')
  await (await connect(`${h.wsBase}/fn`, { origin: 'http://a.test' })).close()
  await (await connect(`${h.wsBase}/fn`)).close()
  assert.equal((await refusalOf(connect(`${h.wsBase}/fn`, { origin: 'http://a.example' }))).statusCode, 403)
  await (await connect(`${h.wsBase}/any`, { origin: 'http://anything.example' })).close()
})

test('session: missing, invalid, expired, garbage and oversized tokens are 401 with distinct codes', { timeout: 10000 }, async (t) => {
  const h = await appWith()
  t.after(() => h.close())
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['no token', {}, 'MISSING_TOKEN'],
    ['bad signature', bearer(signRaw({ sub: 'a' }, { key: 'another-secret-another-secret-123' })), 'INVALID_TOKEN'],
    ['expired', bearer(h.sign({ sub: 'a', exp: Math.floor(Date.now() / 1000) - 10 })), 'TOKEN_EXPIRED'],
    ['garbage', bearer('garbage.garbage.garbage'), 'INVALID_TOKEN'],
    ['10 KB', bearer('a'.repeat(10 * 1024)), 'INVALID_TOKEN'],
    ['alg none', bearer(signRaw({ sub: 'a' }, { alg: 'none' })), 'INVALID_TOKEN'],
    ['future nbf', bearer(h.sign({ sub: 'a', nbf: Math.floor(Date.now() / 1000) + 3600 })), 'INVALID_TOKEN'],
    ['exp as a string', bearer(signRaw({ sub: 'a', exp: String(Math.floor(Date.now() / 1000) + 3600) })), 'INVALID_TOKEN']
  ]
  for (const [name, options, code] of cases) {
    const r = await refusalOf(connect(`${h.wsBase}/rt`, options))
    assert.equal(r.statusCode, 401, name)
    assert.equal(r.body.code, code, name)
    assert.equal(r.body.statusCode, 401, name)
  }
  // 16 KB passes Node's own header limit: Node answers 431 before any hook, and no socket is opened either.
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, bearer('a'.repeat(16 * 1024))))).statusCode, 431)
  assert.deepEqual(h.app.realtime.stats().refused, { MISSING_TOKEN: 1, INVALID_TOKEN: 6, TOKEN_EXPIRED: 1 })
  const ok = await connect(`${h.wsBase}/rt`, bearer(h.sign({ sub: 'alice' })))
  assert.equal(h.app.realtime.byUser('alice').length, 1)
  await ok.close()
})

test('session: the app\'s iss and aud apply', { timeout: 10000 }, async (t) => {
  const h = await appWith({}, { jwt: { verify: { allowedIss: 'me', allowedAud: 'chat' } } })
  t.after(() => h.close())
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, bearer(h.sign({ sub: 'a', iss: 'other', aud: 'chat' }))))).body.code, 'INVALID_TOKEN')
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, bearer(h.sign({ sub: 'a', iss: 'me', aud: 'other' }))))).body.code, 'INVALID_TOKEN')
  await (await connect(`${h.wsBase}/rt`, bearer(h.sign({ sub: 'a', iss: 'me', aud: 'chat' })))).close()
})

test('session: a bearer. protocol entry is read and never echoed; the other protocol is selected', { timeout: 10000 }, async (t) => {
  const h = await appWith()
  t.after(() => h.close())
  const token = h.sign({ sub: 'alice' })
  const c = await connect(`${h.wsBase}/rt`, { protocols: [`bearer.${token}`, 'chat.v1'] })
  assert.equal(c.ws.protocol, 'chat.v1')
  assert.equal(h.app.realtime.byUser('alice').length, 1)
  await c.close()
})

test('session: a route can restrict its protocols', { timeout: 10000 }, async (t) => {
  const h = await startApp({ realtime: { auth: false }, setup: (app) => { app.realtimeRoute({ ...echoRoute, protocols: ['b.v2'] }) } })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/rt`, { protocols: ['a.v1', 'b.v2'] })
  assert.equal(c.ws.protocol, 'b.v2')
  await c.close()
})

test('session: a cookie session needs an Origin (cross-site hijacking)', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    realtime: { auth: { cookieName: 'session' } },
    setup: async (app) => { await app.register(cookie); app.realtimeRoute(echoRoute) }
  })
  t.after(() => h.close())
  const headers = { cookie: `session=${h.sign({ sub: 'alice' })}` }
  const r = await refusalOf(connect(`${h.wsBase}/rt`, { headers }))
  assert.equal(r.statusCode, 403)
  assert.equal(r.body.code, 'FORBIDDEN_ORIGIN')
  await (await connect(`${h.wsBase}/rt`, { headers, origin: `http://127.0.0.1:${h.port}` })).close()
})

test('session: ?token= only when listed, and never in a log line', { timeout: 10000 }, async (t) => {
  const lines: string[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  const h = await startApp({
    fastify: { logger: { level: 'trace', stream } },
    realtime: { auth: { sources: ['query'] } },
    setup: (app) => { app.realtimeRoute(echoRoute) }
  })
  t.after(() => h.close())
  const token = h.sign({ sub: 'alice' })
  const c = await connect(`${h.wsBase}/rt?room=lobby&token=${token}`)
  const reply = await c.request('echo', { text: 'hi' })
  assert.equal(reply.type, 'reply')
  await c.close()
  // The header source is not listed: a header token alone is not enough.
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, bearer(token)))).body.code, 'MISSING_TOKEN')
  // A plain GET with the token: 426, also logged without it.
  const res = await fetch(`${h.httpBase}/rt?token=${token}`)
  assert.equal(res.status, 426)
  assert.ok(lines.length > 3)
  const leaked = lines.filter((l) => l.includes(token) || l.includes(token.split('.')[2] as string))
  assert.deepEqual(leaked, [])
  assert.ok(lines.some((l) => l.includes('/rt?room=lobby')), 'the rest of the URL is kept')
})

test('session: auth.authenticate replaces JWT; false turns the check off', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    jwt: false,
    realtime: {
      auth: {
        authenticate: (request) => {
          const key = request.headers['x-api-key']
          if (key === undefined) return undefined
          if (key !== 'k1') throw new Error('bad key')
          return { id: 'svc', name: 'service' }
        },
        userId: (user: { id: string }) => user.id
      }
    },
    setup: (app) => {
      app.realtimeRoute(echoRoute)
      app.realtimeRoute({ ...echoRoute, url: '/open', auth: false })
    }
  })
  t.after(() => h.close())
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`))).body.code, 'MISSING_TOKEN')
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, { headers: { 'x-api-key': 'k2' } }))).body.code, 'INVALID_TOKEN')
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-api-key': 'k1' } })
  const [conn] = h.app.realtime.byUser('svc')
  assert.deepEqual(conn?.user, { id: 'svc', name: 'service' })
  await c.close()
  await (await connect(`${h.wsBase}/open`)).close()
})

test('a plain GET gets 426 after the Origin and session checks', { timeout: 10000 }, async (t) => {
  const h = await appWith()
  t.after(() => h.close())
  assert.equal((await fetch(`${h.httpBase}/rt`)).status, 401)
  const res = await fetch(`${h.httpBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'a' })}` } })
  assert.equal(res.status, 426)
  assert.deepEqual(await res.json(), { statusCode: 426, code: 'UPGRADE_REQUIRED', message: 'this endpoint speaks WebSocket; send an upgrade request' })
  assert.equal(res.headers.get('upgrade'), 'websocket', 'RFC 9110: a 426 names the protocol')
  const forbidden = await fetch(`${h.httpBase}/rt`, { headers: { origin: 'http://evil.example' } })
  assert.equal(forbidden.status, 403)
})

test('upgradeHeaders reach the 101 response; prefixes of the calling context apply', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    realtime: { auth: false },
    setup: async (app) => {
      await app.register(async (child) => {
        child.realtimeRoute({ ...echoRoute, upgradeHeaders: (request) => ({ 'set-cookie': `seen=${request.url.length}`, 'x-realtime': ['a', 'b'] }) })
      }, { prefix: '/v1' })
    }
  })
  t.after(() => h.close())
  const seen = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    import('ws').then(({ default: WebSocket }) => {
      const ws = new WebSocket(`${h.wsBase}/v1/rt`)
      ws.on('upgrade', (res) => { resolve(res); ws.close() })
      ws.on('error', reject)
    }, reject)
  })
  assert.deepEqual(seen.headers['set-cookie'], ['seen=6'])
  assert.equal(seen.headers['x-realtime'], 'a, b')
})

test('shutting down: new upgrades get 503 SHUTTING_DOWN, whatever return503OnClosing says', { timeout: 10000 }, async (t) => {
  for (const return503OnClosing of [false, true]) {
    const h = await appWith({ auth: false, shutdown: { timeout: 2000 } }, { fastify: { return503OnClosing } })
    const c = await connect(`${h.wsBase}/rt`)
    // The client holds its close frame unanswered for a moment, which keeps the server closing.
    c.ws.pause()
    const closing = h.app.close()
    t.after(() => closing)
    const r = await refusalOf(connect(`${h.wsBase}/rt`))
    assert.equal(r.statusCode, 503)
    assert.equal(r.body.code, 'SHUTTING_DOWN')
    c.ws.resume()
    assert.equal((await c.closed).code, 1001)
    await closing
  }
})

test('the diagnosis GET: a same-origin fetch (no Origin) and a header token are heard even where upgrades need more', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    realtime: { requireOrigin: true, auth: { sources: ['protocol'] } },
    setup: (app) => { app.realtimeRoute(echoRoute) }
  })
  t.after(() => h.close())
  const token = h.sign({ sub: 'a' })
  // The upgrade itself still needs an Origin and a token from its own sources.
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, { protocols: [`bearer.${token}`, 'x'] }))).body.code, 'FORBIDDEN_ORIGIN')
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, { origin: `http://127.0.0.1:${h.port}`, headers: { authorization: `Bearer ${token}` } }))).body.code, 'MISSING_TOKEN')
  // A plain GET learns the truth: the endpoint would take this token (426), or why not.
  assert.equal((await fetch(`${h.httpBase}/rt`, { headers: { authorization: `Bearer ${token}` } })).status, 426)
  const expired = await fetch(`${h.httpBase}/rt`, { headers: { authorization: `Bearer ${h.sign({ sub: 'a', exp: Math.floor(Date.now() / 1000) - 10 })}` } })
  assert.equal(((await expired.json()) as { code: string }).code, 'TOKEN_EXPIRED')
})

test('refusals say how to fix them: the offending Origin in the log, where the token was looked for', { timeout: 10000 }, async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(JSON.parse(chunk.toString())); cb() } })
  const h = await startApp({
    fastify: { logger: { level: 'info', stream } },
    realtime: { origins: ['https://app.example'], auth: { sources: ['header', 'protocol'], cookieName: 'sid' }, refusalLogLevel: 'info' },
    setup: (app) => { app.realtimeRoute(echoRoute) }
  })
  t.after(() => h.close())
  const foreign = await refusalOf(connect(`${h.wsBase}/rt`, { origin: 'https://evil.example', ...bearer(h.sign({ sub: 'a' })) }))
  assert.equal(foreign.body.message, 'origin not allowed by the server\'s `origins` option')
  const line = lines.find((l) => l.code === 'FORBIDDEN_ORIGIN')
  assert.equal(line?.origin, 'https://evil.example')
  assert.equal(line?.msg, 'realtime handshake refused: FORBIDDEN_ORIGIN, https://evil.example is not in the `origins` option')

  const missing = await refusalOf(connect(`${h.wsBase}/rt`))
  assert.equal(missing.body.message, 'no session token; looked in the Authorization header (Bearer), a `bearer.<token>` Sec-WebSocket-Protocol entry')
  const inQuery = await refusalOf(connect(`${h.wsBase}/rt?token=${h.sign({ sub: 'a' })}`))
  assert.equal(inQuery.body.code, 'MISSING_TOKEN')
  assert.match(inQuery.body.message, /; a \?token= was sent, but `query` is not in auth\.sources$/)
})

test('an upgrade request with a body is refused with 400 before ws sees the body as frames', { timeout: 10000 }, async (t) => {
  const h = await appWith({ auth: false })
  t.after(() => h.close())
  const head = (extra: string): string => 'GET /rt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`
  const frame = Buffer.from([0x81, 0x85, 0, 0, 0, 0]).toString('latin1') + 'hello'
  for (const extra of [`Content-Length: ${frame.length}\r\n`, 'Transfer-Encoding: chunked\r\n']) {
    const res = await rawRequest(h.port, head(extra) + frame)
    assert.equal(res.status, 400, extra)
    assert.deepEqual(JSON.parse(res.body), { statusCode: 400, code: 'BODY_NOT_ALLOWED', message: 'an upgrade request carries no body' })
  }
  assert.equal(h.app.realtime.connections.size, 0)
  assert.deepEqual(h.app.realtime.stats().refused, { BODY_NOT_ALLOWED: 2 })
  // Without a body the same request upgrades.
  const ok = await rawRequest(h.port, head(''))
  assert.equal(ok.status, 101)
})

test('CORS for the handshake diagnosis: the preflight and the plain GET are readable by allowed origins only', { timeout: 10000 }, async (t) => {
  const h = await appWith({ origins: ['https://spa.example'] })
  t.after(() => h.close())
  const preflight = (origin: string) => fetch(`${h.httpBase}/rt`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } })
  const allowed = await preflight('https://spa.example')
  assert.equal(allowed.status, 204)
  assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://spa.example')
  assert.equal(allowed.headers.get('access-control-allow-headers'), 'authorization, x-realtime-protocol')
  assert.equal(allowed.headers.get('access-control-allow-methods'), 'GET')
  const foreign = await preflight('https://evil.example')
  assert.equal(foreign.headers.get('access-control-allow-origin'), null)

  const get = (origin: string, token = 'garbage') => fetch(`${h.httpBase}/rt`, { headers: { origin, authorization: `Bearer ${token}` } })
  const refused = await get('https://spa.example')
  assert.deepEqual([refused.status, (await refused.json() as { code: string }).code, refused.headers.get('access-control-allow-origin')], [401, 'INVALID_TOKEN', 'https://spa.example'])
  const accepted = await get('https://spa.example', h.sign({ sub: 'a' }))
  assert.deepEqual([accepted.status, accepted.headers.get('access-control-allow-origin')], [426, 'https://spa.example'])
  const evil = await get('https://evil.example')
  assert.deepEqual([evil.status, evil.headers.get('access-control-allow-origin')], [403, null])
  // An allowed origin still gets a socket only through a real upgrade with a valid token.
  assert.equal((await refusalOf(connect(`${h.wsBase}/rt`, { origin: 'https://spa.example', ...bearer('garbage') }))).body.code, 'INVALID_TOKEN')
  assert.deepEqual(h.app.realtime.stats().refused, { INVALID_TOKEN: 1 })
  assert.deepEqual(h.app.realtime.stats().diagnoses, { INVALID_TOKEN: 1, UPGRADE_REQUIRED: 1, FORBIDDEN_ORIGIN: 1 })
})
