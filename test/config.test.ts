import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import jwt from '@fastify/jwt'
import websocket from '@fastify/websocket'
import { Type } from '@sinclair/typebox'
import realtime, { realtimePreClose, type RealtimeOptions } from '../lib/index.js'
import { SECRET } from './helpers/app.js'
import { connect } from './helpers/client.js'

const ok = { schema: Type.Object({}), handler: () => null }

async function readyError (build: (app: FastifyInstance) => Promise<void> | void, options: RealtimeOptions = {}): Promise<Error & { code?: string }> {
  const app = Fastify()
  try {
    await app.register(realtime, options)
    await build(app)
    await app.ready()
  } catch (err) {
    await app.close().catch(() => {})
    return err as Error & { code?: string }
  }
  await app.close()
  throw new Error('app.ready() succeeded')
}

test('a reserved message type fails at app.ready(), naming the route and the type', { timeout: 10000 }, async () => {
  for (const type of ['reply', 'error', 'ping', 'pong', 'auth.refresh']) {
    const err = await readyError((app) => { app.realtimeRoute({ url: '/chat', auth: false, messages: { [type]: ok } }) })
    assert.equal(err.code, 'RT_ERR_RESERVED_TYPE')
    assert.match(err.message, new RegExp(`route /chat declares the message type "${type.replace('.', '\\.')}"`))
  }
})

test('a schema that does not compile fails at app.ready(), naming the route and the type', { timeout: 10000 }, async () => {
  const err = await readyError((app) => {
    app.realtimeRoute({ url: '/chat', auth: false, messages: { 'chat.send': { schema: Type.Object({ a: Type.Ref('missing') }), handler: () => null } } })
  })
  assert.equal(err.code, 'RT_ERR_SCHEMA')
  assert.match(err.message, /route \/chat: the schema of message type "chat\.send" does not compile/)
})

test('a schema TypeBox 0.34 did not build says which builds the plugin compiles', { timeout: 10000 }, async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ type: 'object', properties: { a: { type: 'string' } } }, /it is a plain object \(a JSON schema\?\); build schemas with Type from @sinclair\/typebox 0\.34/],
    [Object.defineProperty({ type: 'string' }, '~kind', { value: 'String' }), /it comes from the `typebox` 1\.x package; build schemas with Type from @sinclair\/typebox 0\.34/],
    [undefined, /got undefined; build schemas/]
  ]
  for (const [schema, message] of cases) {
    const err = await readyError((app) => { app.realtimeRoute({ url: '/chat', auth: false, messages: { say: { schema: schema as never, handler: () => null } } }) })
    assert.equal(err.code, 'RT_ERR_SCHEMA')
    assert.match(err.message, message)
  }
})

test('an unknown option key fails, naming the closest valid one', { timeout: 10000 }, async () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ origin: ['https://a.example'] }, 'origin: unknown option (did you mean "origins"?)'],
    [{ limit: { rate: 5 } }, 'limit: unknown option (did you mean "limits"?)'],
    [{ limits: { maxPayLoad: 5 } }, 'limits.maxPayLoad: unknown option (did you mean "maxPayload"?)'],
    [{ auth: { source: ['header'] } }, 'auth.source: unknown option (did you mean "sources"?)'],
    [{ heartbeat: { intervall: 10 } }, 'heartbeat.intervall: unknown option (did you mean "interval"?)'],
    [{ history: { rooms: ['a'], maxRecovery: 5 } }, 'history.maxRecovery: unknown option (did you mean "maxRecover"?)'],
    [{ zzzzzz: true }, 'zzzzzz: unknown option; valid: origins,']
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    await assert.rejects(async () => { await app.register(realtime, options as RealtimeOptions) }, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'RT_ERR_OPTIONS')
      assert.ok(err.message.includes(message), `${err.message} includes ${message}`)
      return true
    })
    await app.close()
  }
  const route = await readyError((app) => { app.realtimeRoute({ url: '/chat', auth: false, origin: ['x'], messages: { a: ok } } as never) })
  assert.equal(route.code, 'RT_ERR_ROUTE')
  assert.match(route.message, /route \/chat: origin: unknown option \(did you mean "origins"\?\)/)
  const message = await readyError((app) => { app.realtimeRoute({ url: '/chat', auth: false, messages: { a: { ...ok, shcema: ok.schema } } } as never) })
  assert.match(message.message, /route \/chat: messages\["a"\]\.shcema: unknown option \(did you mean "schema"\?\)/)
})

test('the handle realtimeRoute returns can be registered again elsewhere: its fan-outs are not definition keys', { timeout: 10000 }, async (t) => {
  const app = Fastify()
  await app.register(realtime, { auth: false })
  const handle = app.realtimeRoute({ url: '/a', messages: { a: ok } })
  app.realtimeRoute({ ...handle, url: '/b' })
  await app.register(async (child) => { child.realtimeRoute(handle) }, { prefix: '/v2' })
  await app.ready()
  t.after(() => app.close())
  assert.equal(typeof handle.to, 'function')
  assert.deepEqual(Object.keys(handle).sort(), ['messages', 'url'])
})

test('a route inside a plugin fails the same way', { timeout: 10000 }, async () => {
  const err = await readyError(async (app) => {
    await app.register(async (child) => { child.realtimeRoute({ url: '/in', auth: false, messages: { pong: ok } }) })
  })
  assert.equal(err.code, 'RT_ERR_RESERVED_TYPE')
})

test('auth on without @fastify/jwt or authenticate fails at app.ready()', { timeout: 10000 }, async () => {
  const err = await readyError((app) => { app.realtimeRoute({ url: '/chat', messages: { a: ok } }) })
  assert.equal(err.code, 'RT_ERR_NO_AUTH')
  assert.match(err.message, /route \/chat checks sessions/)
  // auth: false, a route-level authenticate, or @fastify/jwt registered later all pass.
  const app = Fastify()
  await app.register(realtime)
  app.realtimeRoute({ url: '/a', auth: false, messages: { a: ok } })
  app.realtimeRoute({ url: '/b', auth: { authenticate: () => ({ sub: 'x' }) }, messages: { a: ok } })
  await app.register(async (child) => {
    await child.register(jwt, { secret: SECRET })
    child.realtimeRoute({ url: '/c', messages: { a: ok } })
  })
  await app.ready()
  await app.close()
})

test('bad options fail at registration with RT_ERR_OPTIONS', { timeout: 10000 }, async () => {
  const bad: RealtimeOptions[] = [
    { limits: { rate: -1 } },
    { limits: { maxBufferedBytes: 0 } },
    { limits: { onSlowConsumer: 'block' as never } },
    { heartbeat: { interval: Number.NaN } },
    { origins: ['not-an-origin'] },
    { origins: 42 as never },
    { auth: { sources: ['url' as never] } },
    { auth: { algorithms: ['none'] } }
  ]
  for (const options of bad) {
    const err = await readyError(() => {}, options)
    assert.equal(err.code, 'RT_ERR_OPTIONS', JSON.stringify(options))
  }
})

test('@fastify/websocket registered by the app: a clear error, or a hand-over through realtimePreClose', { timeout: 10000 }, async (t) => {
  const app = Fastify()
  await app.register(websocket)
  await assert.rejects(async () => { await app.register(realtime, { auth: false }) }, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'RT_ERR_WEBSOCKET_REGISTERED')
    assert.match(err.message, /realtimePreClose/)
    return true
  })
  await app.close().catch(() => {})

  const handed = Fastify()
  await handed.register(websocket, { preClose: realtimePreClose, options: { maxPayload: 1024 } })
  await handed.register(realtime, { auth: false, externalWebsocket: true })
  handed.realtimeRoute({ url: '/rt', messages: { a: ok } })
  await handed.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => handed.close())
  const port = (handed.server.address() as { port: number }).port
  const c = await connect(`ws://127.0.0.1:${port}/rt`)
  const closing = handed.close()
  assert.equal((await c.closed).code, 1001)
  await closing
})
