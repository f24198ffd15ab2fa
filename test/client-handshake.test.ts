// The typed client's handshakes: the subprotocols and token it offers, the diagnosis of a failed connect over plain
// HTTP (what each answer makes it do), and session renewal over the open socket.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { diagnose } from '../lib/client/diagnose.js'
import { connect, refusalOf, waitFor } from './helpers/client.js'
import { startApp } from './helpers/app.js'
import { nextEvent, opened, serveChat, sleep, typedClient } from './helpers/typed-client.js'

async function listening (server: Server | WebSocketServer): Promise<number> {
  if (server instanceof WebSocketServer) await once(server, 'listening')
  else await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as { port: number }).port
}

/** An HTTP server that refuses every upgrade by dropping it and answers GETs with `answer`. */
async function refusingServer (answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string, gets: IncomingMessage[], close: () => void }> {
  const gets: IncomingMessage[] = []
  const sockets = new Set<Socket>()
  const server = createServer((req, res) => { gets.push(req); answer(req, res) })
  server.on('connection', (socket) => { sockets.add(socket) })
  server.on('upgrade', (_req, socket: Socket) => { socket.destroy() })
  const port = await listening(server)
  return { url: `ws://127.0.0.1:${port}/chat`, gets, close: () => { for (const s of sockets) s.destroy(); server.close() } }
}

const json = (res: ServerResponse, statusCode: number, code?: string): void => {
  res.writeHead(statusCode, { 'content-type': 'application/json' }).end(JSON.stringify({ statusCode, code, message: `said ${statusCode}` }))
}

test('the subprotocols: bearer.<token> before realtime.v1 with a token, realtime.v1 alone without, ?token= for the query source', { timeout: 10000 }, async (t) => {
  const offers: Array<{ url: string, protocols: string[] }> = []
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (offered) => offered.has('realtime.v1') ? 'realtime.v1' : false })
  wss.on('connection', (_ws, req) => { offers.push({ url: req.url ?? '', protocols: String(req.headers['sec-websocket-protocol']).split(/, */) }) })
  const port = await listening(wss)
  t.after(() => { for (const ws of wss.clients) ws.terminate(); wss.close() })
  const url = `ws://127.0.0.1:${port}/chat`
  const clients = [typedClient(url, { token: 'abc' }), typedClient(url), typedClient(url, { token: 'abc', tokenSource: 'query' }), typedClient(url, { getToken: async () => 'fresh' })]
  t.after(() => { for (const c of clients) c.close() })
  for (const c of clients) await opened(c)
  assert.deepEqual(offers.sort((a, b) => a.url.localeCompare(b.url) || a.protocols[0]!.localeCompare(b.protocols[0]!)), [
    { url: '/chat', protocols: ['bearer.abc', 'realtime.v1'] },
    { url: '/chat', protocols: ['bearer.fresh', 'realtime.v1'] },
    { url: '/chat', protocols: ['realtime.v1'] },
    { url: '/chat?token=abc', protocols: ['realtime.v1'] }
  ])
})

test('the query token source against the plugin: the token reaches the session check', { timeout: 10000 }, async (t) => {
  const h = await serveChat({ auth: { sources: ['query'] } })
  t.after(() => h.close())
  const c = typedClient(h.url, { token: h.sign({ sub: 'carol' }), tokenSource: 'query' })
  t.after(() => { c.close() })
  assert.equal(await c.request('whoami', null), 'carol')
})

test('a 401 at the handshake ends it: the refusal\'s code, learned over plain HTTP, rejects what was queued', { timeout: 10000 }, async (t) => {
  const h = await serveChat({})
  t.after(() => h.close())
  const c = typedClient(h.url, { token: 'not-a-jwt' })
  t.after(() => { c.close() })
  let reconnecting = 0
  c.on('reconnecting', () => { reconnecting++ })
  const queued = c.request('echo', { text: 'queued' })
  const err = await nextEvent(c, 'offline')
  assert.deepEqual([err.code, err.status], ['INVALID_TOKEN', 401])
  await assert.rejects(queued, { code: 'INVALID_TOKEN', status: 401 })
  assert.equal(c.state, 'closed')
  assert.equal(reconnecting, 0)
  const none = typedClient(h.url)
  t.after(() => { none.close() })
  const missing = await nextEvent(none, 'offline')
  assert.deepEqual([missing.code, missing.status], ['MISSING_TOKEN', 401])
})

test('a 403 at the handshake ends it with FORBIDDEN_ORIGIN', { timeout: 10000 }, async (t) => {
  const h = await serveChat({ auth: false, origins: ['http://good.example'] })
  t.after(() => h.close())
  // A page on another origin: its socket and its fetch both carry that Origin (a browser sets it; here, by hand).
  const origin = 'http://evil.example'
  class ForeignWebSocket extends WebSocket {
    constructor (url: string, protocols?: string | string[]) { super(url, protocols, { origin }) }
  }
  const c = typedClient(h.url, {
    WebSocket: ForeignWebSocket as never,
    fetch: async (url, init) => await fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), origin } })
  })
  t.after(() => { c.close() })
  const err = await nextEvent(c, 'offline')
  assert.deepEqual([err.code, err.status], ['FORBIDDEN_ORIGIN', 403])
})

test('a missing Origin refused at the upgrade is not refused to the diagnosis GET (same-origin fetches send none)', { timeout: 10000 }, async (t) => {
  const h = await serveChat({ auth: false, requireOrigin: true }) // ws on Node sends no Origin
  t.after(() => h.close())
  const c = typedClient(h.url, { maxAttempts: 2 })
  t.after(() => { c.close() })
  // The GET says the endpoint is up (426), so the client retries as after a network failure, up to maxAttempts.
  const err = await nextEvent(c, 'offline')
  assert.equal(err.code, 'CLOSED')
  assert.match(err.message, /gave up after 2 attempts/)
})

test('an expired token at the handshake: with getToken it is asked again and the retry succeeds; without, it ends', { timeout: 10000 }, async (t) => {
  const h = await serveChat({})
  t.after(() => h.close())
  const now = Math.floor(Date.now() / 1000)
  let calls = 0
  const c = typedClient(h.url, { getToken: () => h.sign({ sub: 'alice', exp: now + (++calls === 1 ? -30 : 60) }) })
  t.after(() => { c.close() })
  await opened(c)
  assert.equal(calls, 2)
  assert.equal(await c.request('whoami', null), 'alice')
  const fixed = typedClient(h.url, { token: h.sign({ sub: 'alice', exp: now - 30 }) })
  t.after(() => { fixed.close() })
  const err = await nextEvent(fixed, 'offline')
  assert.deepEqual([err.code, err.status], ['TOKEN_EXPIRED', 401])
})

test('a 429 at the handshake means back off and retry: the client gets in once a slot is free', { timeout: 10000 }, async (t) => {
  const h = await serveChat({ limits: { maxConnectionsPerUser: 1 } })
  t.after(() => h.close())
  const token = h.sign({ sub: 'dave' })
  const first = typedClient(h.url, { token })
  t.after(() => { first.close() })
  await opened(first)
  const second = typedClient(h.url, { token })
  t.after(() => { second.close() })
  await waitFor(() => second.state === 'reconnecting', 3000, 'a retry')
  await sleep(100)
  assert.equal(second.state, 'reconnecting')
  first.close()
  await opened(second)
})

test('a 426 from the diagnosis (the endpoint is fine; the failure was the way there) means retry; the GET carries the token', { timeout: 10000 }, async (t) => {
  const server = await refusingServer((_req, res) => { json(res, 426, 'UPGRADE_REQUIRED') })
  t.after(server.close)
  const c = typedClient(server.url, { token: 'tok' })
  t.after(() => { c.close() })
  let offline = false
  c.on('offline', () => { offline = true })
  await waitFor(() => server.gets.length >= 3, 5000, 'three diagnosed attempts')
  assert.equal(offline, false)
  assert.equal(server.gets[0]!.headers.authorization, 'Bearer tok')
  assert.equal(server.gets[0]!.url, '/chat')
})

test('a load balancer\'s 404 during a deploy is not final: the client keeps trying and gets in once the server is back', { timeout: 15000 }, async (t) => {
  const balancer = await refusingServer((_req, res) => { res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>404 Not Found</h1>') })
  const port = Number(new URL(balancer.url).port)
  const c = typedClient(balancer.url, { backoff: { base: 50, cap: 200 } })
  let offline = false
  c.on('offline', () => { offline = true })
  t.after(() => { c.close() })
  await waitFor(() => balancer.gets.length >= 3, 5000, 'three diagnosed attempts')
  assert.equal(offline, false)
  balancer.close()
  const h = await serveChat({ auth: false }, port)
  t.after(() => h.close())
  await opened(c, 5000)
  assert.equal(offline, false)
})

test('a subprotocol the route does not speak is refused before the upgrade (400 UNSUPPORTED_PROTOCOL) and ends the client: no open, no retry loop', { timeout: 10000 }, async (t) => {
  let opens = 0
  const h = await startApp({
    jwt: false,
    realtime: { auth: false },
    setup: (app) => { app.realtimeRoute({ url: '/chat', protocols: ['realtime.v1'], messages: {}, onOpen: () => { opens++ } }) }
  })
  t.after(() => h.close())
  const c = typedClient(`${h.wsBase}/chat`, { protocol: 'chat.v9' })
  t.after(() => { c.close() })
  const err = await nextEvent(c, 'offline')
  assert.deepEqual([err.code, err.status], ['UNSUPPORTED_PROTOCOL', 400])
  assert.equal(opens, 0)
  assert.equal(h.app.realtime.stats().refused.UNSUPPORTED_PROTOCOL, 1)
  // An offer of a bearer. entry alone names no protocol at all: refused the same way, the token never echoed.
  const raw = await refusalOf(connect(`${h.wsBase}/chat`, { protocols: ['bearer.secret-token'] }))
  assert.equal(raw.statusCode, 400)
  assert.equal(raw.body.code, 'UNSUPPORTED_PROTOCOL')
  assert.doesNotMatch(JSON.stringify(raw.body), /secret-token/)
  const ok = typedClient(`${h.wsBase}/chat`)
  t.after(() => { ok.close() })
  await opened(ok)
  assert.equal(opens, 1)
})

test('the diagnosis: each answer to the plain GET and what it means', { timeout: 15000 }, async (t) => {
  const server = await refusingServer((req, res) => {
    const [status, code] = (req.url ?? '').slice(1).split('/')
    if (status === 'html') res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>Bad Gateway</h1>')
    else if (status === 'spa') res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><div id="app"></div>')
    else if (status !== 'never') json(res, Number(status), code)
  })
  t.after(server.close)
  const base = server.url.replace('/chat', '')
  const ask = async (path: string, options: { token?: string, canRenewToken?: boolean, query?: boolean, timeout?: number } = {}) => {
    const v = await diagnose(`${base}/${path}`, {
      token: options.token,
      tokenSource: options.query === true ? 'query' : 'protocol',
      canRenewToken: options.canRenewToken ?? false,
      fetch: globalThis.fetch,
      controller: new AbortController(),
      timeout: options.timeout ?? 2000
    })
    return [v.retry, v.code, v.status]
  }
  assert.deepEqual(await ask('426/UPGRADE_REQUIRED'), [true, 'UPGRADE_REQUIRED', 426])
  assert.deepEqual(await ask('401/INVALID_TOKEN', { token: 't' }), [false, 'INVALID_TOKEN', 401])
  assert.deepEqual(await ask('401/MISSING_TOKEN'), [false, 'MISSING_TOKEN', 401])
  // A token was sent and the server says none came: it does not read the header, so the answer says nothing.
  assert.deepEqual(await ask('401/MISSING_TOKEN', { token: 't' }), [true, 'MISSING_TOKEN', 401])
  assert.deepEqual(await ask('401/TOKEN_EXPIRED', { token: 't' }), [false, 'TOKEN_EXPIRED', 401])
  assert.deepEqual(await ask('401/TOKEN_EXPIRED', { token: 't', canRenewToken: true }), [true, 'TOKEN_EXPIRED', 401])
  assert.deepEqual(await ask('403/FORBIDDEN_ORIGIN'), [false, 'FORBIDDEN_ORIGIN', 403])
  assert.deepEqual(await ask('429/TOO_MANY_CONNECTIONS'), [true, 'TOO_MANY_CONNECTIONS', 429])
  assert.deepEqual(await ask('503/SHUTTING_DOWN'), [true, 'SHUTTING_DOWN', 503])
  // Not the plugin's refusal (a load balancer during a deploy, an SPA's fallback page, a proxy's 403): try again.
  assert.deepEqual(await ask('404'), [true, undefined, 404])
  assert.deepEqual(await ask('html'), [true, undefined, 502])
  assert.deepEqual(await ask('spa'), [true, undefined, 200])
  assert.deepEqual(await ask('403/WAF_BLOCKED'), [true, 'WAF_BLOCKED', 403])
  assert.deepEqual(await ask('400/UNSUPPORTED_PROTOCOL'), [false, 'UNSUPPORTED_PROTOCOL', 400])
  assert.deepEqual(await ask('never', { timeout: 100 }), [true, undefined, undefined])
  assert.deepEqual(await diagnose('ws://127.0.0.1:9/chat', { token: undefined, tokenSource: 'protocol', canRenewToken: false, fetch: globalThis.fetch, controller: new AbortController(), timeout: 2000 }).then((v) => v.retry), true)
  await ask('426/UPGRADE_REQUIRED', { token: 'a b', query: true })
  const last = server.gets.at(-1)!
  assert.deepEqual([last.url, last.headers.authorization], ['/426/UPGRADE_REQUIRED?token=a+b', 'Bearer a b'])
})

test('refreshToken renews the session over the open socket, with a token or from getToken', { timeout: 10000 }, async (t) => {
  const h = await serveChat({})
  t.after(() => h.close())
  const exp = Math.floor(Date.now() / 1000) + 120
  const c = typedClient(h.url, { token: h.sign({ sub: 'bob', exp: exp - 60 }) })
  t.after(() => { c.close() })
  await opened(c)
  assert.deepEqual(await c.refreshToken(h.sign({ sub: 'bob', exp })), { exp })
  await assert.rejects(c.refreshToken(h.sign({ sub: 'mallory' })), { code: 'INVALID_TOKEN' })
  await assert.rejects(c.refreshToken(), { code: 'NO_TOKEN' })
  const g = typedClient(h.url, { getToken: () => h.sign({ sub: 'bob', exp: exp + 1 }) })
  t.after(() => { g.close() })
  await opened(g)
  assert.deepEqual(await g.refreshToken(), { exp: exp + 1 })
})
