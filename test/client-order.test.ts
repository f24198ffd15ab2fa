// Issue 21, client: the order of what leaves across a reconnect. onReconnect's own frames first (it re-joins rooms),
// then the queue made while away, then what the app sent while onReconnect ran, each in call order.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from './helpers/client.js'
import { ScriptedServer, answer } from './helpers/scripted-server.js'
import { nextEvent, opened, typedClient } from './helpers/typed-client.js'

test('what is sent while onReconnect awaits leaves after it and after the queue made before it, in call order', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({
    frame: (socket, frame) => {
      if (frame.type === 'note' && frame.data === 'bye') return socket.close(1012)
      answer(socket, frame)
    }
  })
  t.after(async () => { await server.stop() })
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  let hookStarted = false
  const c = typedClient(server.url, {
    onReconnect: async (client) => {
      hookStarted = true
      await gate
      await client.request('join', 'lobby')
      client.send('note', 'hook')
    }
  })
  t.after(() => { c.close() })
  await opened(c)
  c.send('note', 'bye')
  await nextEvent(c, 'close')
  c.send('note', 'queued-1')
  c.send('note', 'queued-2')
  await waitFor(() => hookStarted, 3000, 'onReconnect')
  c.send('note', 'during-1')
  const during = c.request('echo', { text: 'during-2' })
  c.send('note', 'during-3')
  await new Promise((resolve) => setTimeout(resolve, 100))
  release()
  await during
  await waitFor(() => server.sockets[1]?.frames.some((f) => f.data === 'during-3') === true, 3000, 'the last frame')
  const second = server.sockets[1]?.frames.filter((f) => f.type !== 'ping').map((f) => typeof f.data === 'string' ? `${String(f.type)}:${f.data}` : f.type)
  assert.deepEqual(second, ['join:lobby', 'note:hook', 'note:queued-1', 'note:queued-2', 'note:during-1', 'echo', 'note:during-3'])
})

test('onReconnect awaiting a request sent through the client itself: it waits for the hook, and its TIMEOUT says so', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({
    frame: (socket, frame) => {
      if (frame.type === 'note' && frame.data === 'bye') return socket.close(1012)
      answer(socket, frame)
    }
  })
  t.after(async () => { await server.stop() })
  const errors: string[] = []
  const c = typedClient(server.url, { onReconnect: async () => { await c.request('join', 'lobby', { timeout: 300 }) } })
  t.after(() => { c.close() })
  c.on('error', (err) => { errors.push(`${err.code}: ${err.message}`) })
  await opened(c)
  c.send('note', 'bye')
  await waitFor(() => errors.length > 0, 3000, 'the hook failed')
  assert.match(errors[0] ?? '', /^TIMEOUT: .*inside the hook, send through the client it is given/)
  // The timed-out join left the queue with its TIMEOUT: nothing of it reaches the server late.
  assert.equal(c.state, 'open')
  assert.equal(server.sockets[1]?.frames.some((f) => f.type === 'join'), false)
})
