// Issue 21, client: requests that happen once. Every request carries an idempotency key, the same on each try; with
// `retry`, a request cut off by a disconnect is sent again after the reconnect instead of rejected, and
// REQUEST_IN_PROGRESS / STORE_UNAVAILABLE are asked again later. Against the real server (the handler runs once)
// and a scripted one (the exact frames).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { RealtimeClientError } from '../lib/client/index.js'
import { waitFor } from './helpers/client.js'
import { LinkProxy } from './helpers/link-proxy.js'
import { ScriptedServer, answer } from './helpers/scripted-server.js'
import { nextEvent, opened, serveChat, sleep, typedClient } from './helpers/typed-client.js'

const KEY = /^[A-Za-z0-9_-]{16,64}$/

test('retry: the link cut while the handler runs; the request is sent again with its key, the handler ran once', { timeout: 15000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  const proxy = new LinkProxy({ host: '127.0.0.1', port: h.port })
  await proxy.start()
  t.after(() => proxy.stop())
  const c = typedClient(`ws://127.0.0.1:${proxy.port}/chat`, { retry: true })
  t.after(() => { c.close() })
  await opened(c)
  const reply = c.request('slow', 500, { timeout: 10000 })
  await waitFor(() => h.seen.notes.includes('slow'), 3000, 'the handler started')
  await proxy.cut()
  await nextEvent(c, 'close')
  await sleep(100)
  await proxy.restore()
  assert.equal(await reply, 1)
  assert.deepEqual(h.seen.notes, ['slow'])
})

test('without retry: DISCONNECTED carries the request\'s own key, and a retry with it gets the first answer', { timeout: 15000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  const proxy = new LinkProxy({ host: '127.0.0.1', port: h.port })
  await proxy.start()
  t.after(() => proxy.stop())
  const c = typedClient(`ws://127.0.0.1:${proxy.port}/chat`)
  t.after(() => { c.close() })
  await opened(c)
  const reply = c.request('slow', 300, { key: 'order-0123456789abcdef' })
  const unkeyed = c.request('echo', { text: 'no key' })
  await waitFor(() => h.seen.notes.includes('slow'), 3000, 'the handler started')
  await proxy.cut()
  const err = await reply.then(() => undefined, (e: RealtimeClientError) => e)
  assert.equal(err?.code, 'DISCONNECTED')
  assert.equal(err?.key, 'order-0123456789abcdef')
  assert.match(err?.message ?? '', /its key \(err\.key\) is safe/)
  // A request without retry or key carries none: nothing says a retry of it would be safe.
  await assert.rejects(unkeyed, (e: RealtimeClientError) => e.code === 'DISCONNECTED' && e.key === undefined && /may have run/.test(e.message))
  await proxy.restore()
  await opened(c)
  assert.equal(await c.request('slow', 300, { key: err?.key }), 1)
  assert.deepEqual(h.seen.notes, ['slow'])
  await assert.rejects(c.request('slow', 1, { key: 'short' }), TypeError)
})

test('retried requests go again first after the reconnect, in call order, same id and key; others are rejected', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({
    frame: (socket, frame) => {
      if (socket.index > 0) return answer(socket, frame)
      // The first connection answers nothing and drops once three requests are in.
      if (socket.frames.filter((f) => f.id !== undefined).length === 3) socket.close(1012)
    }
  })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url, { retry: ['slow'] })
  t.after(() => { c.close() })
  await opened(c)
  const first = c.request('slow', 1)
  const echo = c.request('echo', { text: 'not retried' })
  const third = c.request('slow', 3)
  await assert.rejects(echo, (err: RealtimeClientError) => err.code === 'DISCONNECTED' && err.key === undefined)
  c.send('note', 'queued while away')
  assert.equal(await first, null)
  assert.equal(await third, null)
  const [before, after] = server.sockets.map((s) => s.frames.filter((f) => f.type !== 'ping')) as [any[], any[]]
  assert.deepEqual(after.map((f) => f.data), [1, 3, 'queued while away'])
  assert.deepEqual(before.map((f) => f.type === 'slow' ? KEY.test(f.key) : f.key), [true, undefined, true])
  assert.deepEqual(after.slice(0, 2).map((f) => [f.id, f.key]), [before[0], before[2]].map((f) => [f.id, f.key]))
  assert.equal(after[2].key, undefined)
})

test('REQUEST_IN_PROGRESS and STORE_UNAVAILABLE: asked again later with the same key when retry is on, else rejected', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({
    frame: (socket, frame) => {
      if (frame.type !== 'slow') return answer(socket, frame)
      const tries = socket.frames.filter((f) => f.key === frame.key).length
      if (tries === 1) socket.send({ type: 'error', id: frame.id, error: { code: 'REQUEST_IN_PROGRESS', message: 'still running' } })
      else if (tries === 2) socket.send({ type: 'error', id: frame.id, error: { code: 'STORE_UNAVAILABLE', message: 'no store' } })
      else socket.send({ type: 'reply', id: frame.id, data: tries, replayed: true })
    }
  })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url)
  t.after(() => { c.close() })
  await opened(c)
  assert.equal(await c.request('slow', 1, { retry: true }), 3)
  const keys = server.frames.filter(({ frame }) => frame.type === 'slow').map(({ frame }) => frame.key)
  assert.equal(keys.length, 3)
  assert.equal(new Set(keys).size, 1)
  const key = 'mine-0123456789abcdef'
  await assert.rejects(c.request('slow', 2, { key }), (err: RealtimeClientError) => err.code === 'REQUEST_IN_PROGRESS' && err.key === key)
})
