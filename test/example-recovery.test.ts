// The example chat's recovery, driven by the typed client on Node (the browser test covers the page).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { buildExample, type Example } from '../example/app.js'
import type { ChatRoute } from '../example/chat-route.js'
import { createClient, type RealtimeClient, type RecoveryEvent } from '../lib/client/index.js'
import { waitFor } from './helpers/client.js'

async function start (port = 0): Promise<{ example: Example, port: number, base: string }> {
  const example = await buildExample({ logger: false, shutdownTimeout: 500 })
  const actual = await example.listen(port)
  return { example, port: actual, base: `127.0.0.1:${actual}` }
}

async function login (base: string, name: string): Promise<{ token: string, cookie: string }> {
  const res = await fetch(`http://${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) })
  const { token } = await res.json() as { token: string }
  return { token, cookie: (res.headers.get('set-cookie') ?? '').split(';')[0] as string }
}

function chatClient (base: string, token: string): RealtimeClient<ChatRoute> {
  return createClient<ChatRoute>(`ws://${base}/chat`, {
    WebSocket: WebSocket as never,
    token,
    backoff: { base: 20, cap: 100 },
    onReconnect: async (c) => { await c.request('room.join', { room: 'lobby' }) }
  })
}

test('example: a page cut off while three messages are sent gets them once, in order; a restarted store says epoch and the snapshot endpoint reloads', { timeout: 30000 }, async (t) => {
  let server = await start()
  const alice = await login(server.base, 'alice')
  const bob = await login(server.base, 'bob')
  const a = chatClient(server.base, alice.token)
  const b = chatClient(server.base, bob.token)
  t.after(async () => { a.close(); b.close(); await server.example.app.close() })
  const texts: string[] = []
  const recoveries: RecoveryEvent[] = []
  a.on('chat.message', ({ text }) => { texts.push(text) })
  a.on('recovery', (e) => { recoveries.push(e) })
  await a.request('room.join', { room: 'lobby' })
  await b.request('room.join', { room: 'lobby' })
  for (const conn of server.example.app.realtime.byUser('alice')) conn.terminate()
  for (const text of ['one', 'two', 'three']) await b.request('chat.send', { room: 'lobby', text })
  await waitFor(() => texts.length === 3, 10000)
  assert.deepEqual(recoveries, [{ room: 'lobby', recovered: true, missed: 3 }])
  await b.request('chat.send', { room: 'lobby', text: 'four' })
  await waitFor(() => texts.length === 4)
  assert.deepEqual(texts, ['one', 'two', 'three', 'four'])

  const snapshot = await fetch(`http://${server.base}/rooms/lobby/messages`, { headers: { cookie: alice.cookie } })
  const body = await snapshot.json() as { position: { offset: number }, messages: Array<{ text: string }> }
  assert.equal(body.position.offset, 4)
  assert.deepEqual(body.messages.map((m) => m.text), ['one', 'two', 'three', 'four'])
  assert.equal((await fetch(`http://${server.base}/rooms/lobby/messages`)).status, 401)

  const { port } = server
  await server.example.app.close()
  server = await start(port)
  await waitFor(() => recoveries.length === 2, 15000)
  assert.deepEqual(recoveries[1], { room: 'lobby', recovered: false, reason: 'epoch' })
})
