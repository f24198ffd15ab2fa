// Issue 21, client: the edges of its life. close() while onReconnect awaits reports nothing; a getToken that never
// settles is bounded by connectTimeout; a refreshToken raced by a 4401 close is not lost.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { RealtimeClientError } from '../lib/client/index.js'
import { waitFor } from './helpers/client.js'
import { ScriptedServer, answer } from './helpers/scripted-server.js'
import { nextEvent, opened, sleep, typedClient } from './helpers/typed-client.js'

test('close() while onReconnect awaits a request: no error event, the client is closed', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({
    frame: (socket, frame) => {
      if (frame.type === 'note' && frame.data === 'bye') return socket.close(1012)
      if (frame.type === 'hang') return // never answered
      answer(socket, frame)
    }
  })
  t.after(async () => { await server.stop() })
  let hookStarted = false
  const c = typedClient(server.url, { onReconnect: async (client) => { hookStarted = true; await client.request('hang', 1) } })
  t.after(() => { c.close() })
  const errors: RealtimeClientError[] = []
  c.on('error', (err) => { errors.push(err) })
  await opened(c)
  c.send('note', 'bye')
  await waitFor(() => hookStarted, 3000, 'onReconnect')
  c.close()
  await sleep(200)
  assert.deepEqual(errors.map((e) => e.code), [])
  assert.equal(c.state, 'closed')
})

test('a getToken that never settles: bounded by connectTimeout, an error event, a failed attempt, backoff, then it connects', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start()
  t.after(async () => { await server.stop() })
  let calls = 0
  const c = typedClient(server.url, {
    connectTimeout: 200,
    getToken: async () => await (++calls === 1 ? new Promise<string>(() => {}) : Promise.resolve('a-token'))
  })
  t.after(() => { c.close() })
  const [error, reconnecting] = await Promise.all([nextEvent(c, 'error', 3000), nextEvent(c, 'reconnecting', 3000)])
  assert.equal(error.code, 'GET_TOKEN_FAILED')
  assert.match(error.message, /200 ms/)
  assert.equal(reconnecting.attempt, 1)
  await opened(c, 3000)
  assert.equal(calls, 2)
  assert.deepEqual(server.sockets[0]?.protocols, ['bearer.a-token', 'realtime.v1'])
})

for (const withGetToken of [false, true]) {
  test(`refreshToken raced by a 4401 close: the reconnect uses the refreshed token (${withGetToken ? 'with' : 'without'} getToken)`, { timeout: 10000 }, async (t) => {
    const server = await ScriptedServer.start({
      frame: (socket, frame) => {
        // The session expires just as the refresh arrives: closed with 4401, the refresh unanswered.
        if (frame.type === 'auth.refresh' && socket.index === 0) return socket.close(4401, 'session expired')
        if (frame.type === 'auth.refresh') return socket.reply(frame, { exp: null })
        answer(socket, frame)
      }
    })
    t.after(async () => { await server.stop() })
    const c = typedClient(server.url, withGetToken ? { getToken: () => 'stale' } : { token: 'stale' })
    t.after(() => { c.close() })
    await opened(c)
    const refreshed = c.refreshToken('fresh')
    await assert.rejects(refreshed, (err: RealtimeClientError) => err.code === 'DISCONNECTED')
    await nextEvent(c, 'open', 3000)
    assert.deepEqual(server.sockets[1]?.protocols, ['bearer.fresh', 'realtime.v1'])
    assert.deepEqual(await c.refreshToken('fresh'), { exp: null })
  })
}
