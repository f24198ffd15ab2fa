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
    app.realtimeRoute({ url: '/chat', auth: false, messages: { 'chat.send': { schema: { type: 'object', properties: { a: { $ref: 'missing' } } } as never, handler: () => null } } })
  })
  assert.equal(err.code, 'RT_ERR_SCHEMA')
  assert.match(err.message, /route \/chat: the schema of message type "chat\.send" does not compile/)
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
