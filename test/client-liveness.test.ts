// Issue 21, client: what proves the link alive. Any frame answers the ping, not only the pong: on a throttled link
// the pong waits behind events, and a rate-limited ping is answered with RATE_LIMITED (no id) instead.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ScriptedServer } from './helpers/scripted-server.js'
import { nextEvent, opened, sleep, typedClient } from './helpers/typed-client.js'

test('a ping answered late but with events flowing meanwhile: the link is alive, no reconnect', { timeout: 10000 }, async (t) => {
  const timers = new Set<ReturnType<typeof setInterval>>()
  t.after(() => { for (const timer of timers) clearInterval(timer) })
  const server = await ScriptedServer.start({
    // Events every 40 ms; the pong never comes (it waits behind a backlog on a throttled link).
    open: (socket) => { timers.add(setInterval(() => { socket.send({ type: 'news', data: { headline: 'tick' } }) }, 40)) },
    frame: () => {}
  })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url, { pingInterval: 100, pingTimeout: 150 })
  t.after(() => { c.close() })
  let news = 0
  const closes: number[] = []
  c.on('news', () => { news++ })
  c.on('close', ({ code }) => { closes.push(code) })
  await opened(c)
  await sleep(800)
  assert.ok(server.frames.filter(({ frame }) => frame.type === 'ping').length >= 3, 'pings were sent')
  assert.ok(news >= 10, `events arrived (${news})`)
  assert.deepEqual(closes, [])
  assert.equal(server.sockets.length, 1)
  assert.equal(c.state, 'open')
})

test('a rate-limited ping (RATE_LIMITED without id instead of the pong) does not count against the link', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({
    frame: (socket, frame) => {
      if (frame.type === 'ping') socket.send({ type: 'error', error: { code: 'RATE_LIMITED', message: 'rate limit exceeded' } })
    }
  })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url, { pingInterval: 100, pingTimeout: 150 })
  t.after(() => { c.close() })
  const errors: string[] = []
  const closes: number[] = []
  c.on('error', (err) => { errors.push(err.code) })
  c.on('close', ({ code }) => { closes.push(code) })
  await opened(c)
  await sleep(800)
  assert.ok(errors.length >= 3 && errors.every((code) => code === 'RATE_LIMITED'), errors.join())
  assert.deepEqual(closes, [])
  assert.equal(server.sockets.length, 1)
})

test('a link where nothing at all comes back after a ping is still dropped and reconnected', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({ frame: () => {} })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url, { pingInterval: 100, pingTimeout: 150 })
  t.after(() => { c.close() })
  await opened(c)
  const closed = await nextEvent(c, 'close', 3000)
  assert.equal(closed.code, 1006)
  await nextEvent(c, 'open', 3000)
  assert.equal(server.sockets.length, 2)
})
