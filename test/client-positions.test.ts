// Issue 21, client: positions in history rooms. The client never joins a room it knew without recovering or
// saying why not: a long outage forgets nothing, a dropped position is reported (`forgotten`) when the room is
// joined again, `unavailable` keeps the position, and hostile offsets are ignored.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { RecoveryEvent } from '../lib/client/index.js'
import { Positions } from '../lib/client/positions.js'
import { waitFor } from './helpers/client.js'
import { ScriptedServer, answer, type ScriptedSocket } from './helpers/scripted-server.js'
import { nextEvent, opened, typedClient } from './helpers/typed-client.js'

/** A history room's join as the server answers it: rt.position (epoch e1, `offset`), then the reply. */
function joinAt (socket: ScriptedSocket, frame: any, offset: number): void {
  socket.send({ type: 'rt.position', data: { room: frame.data, epoch: 'e1', offset } })
  socket.reply(frame, frame.data)
}

test('staleness counts connected time only: a position survives any outage, and goes after 30 s connected unjoined', () => {
  const positions = new Positions(30_000)
  positions.set('lobby', { epoch: 'e1', offset: 4 })
  assert.match(positions.resumeFrame(0) ?? '', /lobby/)
  // Connected 1 s without joining lobby, then offline for a day. (Called as optional so that the clock of a client
  // without it, which counted the day too, fails the assertion below rather than this call.)
  ;(positions as { closed?: (now: number) => void }).closed?.(1000)
  assert.deepEqual(JSON.parse(positions.resumeFrame(86_400_000) ?? '{}').data.rooms, { lobby: { epoch: 'e1', offset: 4 } })
  positions.closed(86_400_000 + 30_000) // 31 s connected in all without joining it
  assert.equal(positions.resumeFrame(90_000_000), undefined)
  assert.equal(positions.get('lobby'), undefined)
  // Joined again: the client says it had a position and lost it.
  assert.deepEqual(positions.position({ room: 'lobby', epoch: 'e1', offset: 9 }), { room: 'lobby', recovered: false, reason: 'forgotten' })
  assert.equal(positions.position({ room: 'lobby', epoch: 'e1', offset: 9 }), undefined)
})

test('a room whose position fell out (over 256 rooms) is joined again: recovery { recovered: false, reason: forgotten }', { timeout: 15000 }, async (t) => {
  const server = await ScriptedServer.start({ frame: (socket, frame) => { if (frame.type === 'join') joinAt(socket, frame, 5); else answer(socket, frame) } })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url)
  t.after(() => { c.close() })
  const recoveries: RecoveryEvent[] = []
  c.on('recovery', (e) => { recoveries.push(e) })
  await opened(c)
  for (let i = 0; i <= 256; i++) await c.request('join', `r${i}`)
  assert.equal(c.position('r0'), undefined)
  assert.deepEqual(recoveries, [])
  await c.request('join', 'r1')
  await c.request('join', 'r0')
  assert.deepEqual(recoveries, [{ room: 'r0', recovered: false, reason: 'forgotten' }])
})

test('unavailable (offset null) keeps the position: resumed after a reconnect; the first live event follows without a gap', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({
    frame: (socket, frame) => {
      if (frame.type === 'join' && socket.index === 0) {
        joinAt(socket, frame, 5)
        socket.send({ type: 'news', data: { headline: 'six' }, room: frame.data, offset: 6 })
        socket.send({ type: 'rt.position', data: { room: frame.data, offset: null, recovery: { recovered: false, reason: 'unavailable' } } })
        return
      }
      if (frame.type === 'note' && frame.data === 'drop') return socket.close(1012)
      answer(socket, frame)
    }
  })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url)
  t.after(() => { c.close() })
  const recoveries: RecoveryEvent[] = []
  c.on('recovery', (e) => { recoveries.push(e) })
  await opened(c)
  await c.request('join', 'lobby')
  assert.deepEqual(recoveries, [{ room: 'lobby', recovered: false, reason: 'unavailable' }])
  assert.deepEqual(c.position('lobby'), { epoch: 'e1', offset: 6 })
  c.send('note', 'drop')
  await nextEvent(c, 'open')
  await waitFor(() => (server.sockets[1]?.frames.length ?? 0) > 0, 3000, 'the first frame')
  const [resume] = server.sockets[1]?.frames ?? []
  assert.deepEqual(resume, { type: 'rt.resume', data: { rooms: { lobby: { epoch: 'e1', offset: 6 } } } })
  // Live events go on after unavailable: the first one is the position, the hole before it was reported already.
  const headlines: string[] = []
  c.on('news', ({ headline }) => { headlines.push(headline) })
  server.sockets[1]?.send({ type: 'rt.position', data: { room: 'lobby', offset: null, recovery: { recovered: false, reason: 'unavailable' } } })
  server.sockets[1]?.send({ type: 'news', data: { headline: 'nine' }, room: 'lobby', offset: 9 })
  server.sockets[1]?.send({ type: 'news', data: { headline: 'nine again' }, room: 'lobby', offset: 9 })
  await c.request('echo', { text: 'sync' })
  assert.deepEqual(headlines, ['nine'])
  assert.deepEqual(recoveries.map((r) => r.reason), ['unavailable', 'unavailable'])
  assert.deepEqual(c.position('lobby'), { epoch: 'e1', offset: 9 })
})

test('hostile offsets from the server are ignored: 1e300, negative, fractional, strings', { timeout: 10000 }, async (t) => {
  const server = await ScriptedServer.start({ frame: (socket, frame) => { if (frame.type === 'join') joinAt(socket, frame, 5); else answer(socket, frame) } })
  t.after(async () => { await server.stop() })
  const c = typedClient(server.url)
  t.after(() => { c.close() })
  const headlines: string[] = []
  c.on('news', ({ headline }) => { headlines.push(headline) })
  await opened(c)
  await c.request('join', 'lobby')
  const socket = server.sockets[0] as ScriptedSocket
  for (const offset of [1e300, -1, 5.5, 'NaN', '7', Number.MAX_SAFE_INTEGER + 2]) {
    socket.send({ type: 'rt.position', data: { room: 'lobby', epoch: 'e1', offset } })
    socket.send({ type: 'news', data: { headline: `hostile ${String(offset)}` }, room: 'lobby', offset })
  }
  socket.send({ type: 'news', data: { headline: 'six' }, room: 'lobby', offset: 6 })
  await c.request('echo', { text: 'sync' })
  assert.deepEqual(c.position('lobby'), { epoch: 'e1', offset: 6 })
  assert.equal(headlines.at(-1), 'six')
})
