// Fastify's own way to test a WebSocket route, `app.injectWS`, against realtime routes, the way docs/11-testing.md shows.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import Fastify from 'fastify'
import jwt from '@fastify/jwt'
import { Type } from '@sinclair/typebox'
import type WebSocket from 'ws'
import realtime from '../lib/index.js'
import { SECRET } from './helpers/app.js'

const ORIGIN = 'http://localhost:3000'

async function buildApp () {
  const app = Fastify()
  await app.register(jwt, { secret: SECRET })
  await app.register(realtime, { origins: [ORIGIN], heartbeat: false, shutdown: { timeout: 500 } })
  const chat = app.realtimeRoute({
    url: '/chat',
    messages: {
      'room.join': {
        schema: Type.Object({ room: Type.String() }),
        handler: ({ room }, conn) => { conn.join(room); return { joined: room } }
      },
      'chat.send': {
        schema: Type.Object({ room: Type.String(), text: Type.String() }),
        handler: ({ room, text }, conn) => { chat.to(room).send('chat.message', { from: conn.userId ?? '', text }) }
      }
    },
    events: { 'chat.message': Type.Object({ from: Type.String(), text: Type.String() }) }
  })
  await app.ready()
  return app
}

const nextJson = async (ws: WebSocket): Promise<unknown> => {
  const [data] = await once(ws, 'message') as [Buffer]
  return JSON.parse(data.toString())
}

test('injectWS with the Origin and the token as headers: requests, replies and fan-out', { timeout: 10000 }, async (t) => {
  const app = await buildApp()
  t.after(() => app.close())
  const token = app.jwt.sign({ sub: 'alice' })
  const ws = await app.injectWS('/chat', { headers: { origin: ORIGIN, authorization: `Bearer ${token}` } })
  t.after(() => { ws.terminate() })
  ws.send(JSON.stringify({ type: 'room.join', data: { room: 'lobby' }, id: 1 }))
  assert.deepEqual(await nextJson(ws), { type: 'reply', id: 1, data: { joined: 'lobby' } })
  ws.send(JSON.stringify({ type: 'chat.send', data: { room: 'lobby', text: 'hi' } }))
  assert.deepEqual(await nextJson(ws), { type: 'chat.message', data: { from: 'alice', text: 'hi' } })
  assert.equal(app.realtime.stats().connections, 1)
})

test('injectWS with the token as a bearer. subprotocol entry', { timeout: 10000 }, async (t) => {
  const app = await buildApp()
  t.after(() => app.close())
  const token = app.jwt.sign({ sub: 'bob' })
  const ws = await app.injectWS('/chat', { headers: { origin: ORIGIN, 'sec-websocket-protocol': `bearer.${token}, realtime.v1` } })
  t.after(() => { ws.terminate() })
  ws.send(JSON.stringify({ type: 'room.join', data: { room: 'r' }, id: 7 }))
  assert.deepEqual(await nextJson(ws), { type: 'reply', id: 7, data: { joined: 'r' } })
  assert.deepEqual([...app.realtime.connections.values()].map((c) => c.userId), ['bob'])
})

test('a refused handshake: injectWS rejects with the status, app.inject of the same URL gives the code', { timeout: 10000 }, async (t) => {
  const app = await buildApp()
  t.after(() => app.close())
  await assert.rejects(app.injectWS('/chat', { headers: { origin: ORIGIN } }), /Unexpected server response: 401/)
  const res = await app.inject({ url: '/chat', headers: { origin: ORIGIN } })
  assert.equal(res.statusCode, 401)
  assert.equal(res.json().code, 'MISSING_TOKEN')
  const foreign = await app.inject({ url: '/chat', headers: { origin: 'http://evil.example', authorization: `Bearer ${app.jwt.sign({ sub: 'a' })}` } })
  assert.deepEqual([foreign.statusCode, foreign.json().code], [403, 'FORBIDDEN_ORIGIN'])
  assert.deepEqual(app.realtime.stats().refused, { MISSING_TOKEN: 1 })
  assert.deepEqual(app.realtime.stats().diagnoses, { MISSING_TOKEN: 1, FORBIDDEN_ORIGIN: 1 })
})
