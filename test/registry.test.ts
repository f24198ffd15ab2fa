import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { Type } from '@sinclair/typebox'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, waitFor, type TestClient } from './helpers/client.js'
import type { Connection } from '../lib/connection.js'

async function roomsApp (extra: { onOpenThrows?: boolean, closes?: Array<[string, number]>, roomsAtClose?: Map<string, unknown> } = {}): Promise<TestApp> {
  return await startApp({
    realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user'] ?? 'anon') }) } },
    jwt: false,
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: {
          join: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.join(room); return [...conn.rooms] } },
          leave: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.leave(room); return [...conn.rooms] } },
          say: {
            schema: Type.Object({ room: Type.String(), text: Type.String() }),
            handler: ({ room, text }, conn) => app.realtime.to(room).send('said', { text }, { except: conn })
          },
          kick: { schema: Type.Null(), handler: (_data, conn) => { conn.close(4000, 'kicked') } }
        },
        events: { said: Type.Object({ text: Type.String() }) },
        onOpen: (conn) => { if (extra.onOpenThrows === true && conn.userId === 'bad') throw new Error('onOpen failed') },
        onClose: (conn, code) => {
          extra.closes?.push([conn.userId as string, code])
          // The rooms it was in, for telling their other members; the index has already forgotten it.
          extra.roomsAtClose?.set(conn.userId as string, [[...conn.rooms], app.realtime.roomMembers('r').has(conn)])
        }
      })
    }
  })
}

const as = (user: string) => ({ headers: { 'x-user': user } })

function assertEmpty (h: TestApp): void {
  const stats = h.app.realtime.stats()
  assert.equal(h.app.realtime.connections.size, 0)
  assert.deepEqual([stats.connections, stats.users, stats.rooms], [0, 0, 0])
}

test('room fan-out reaches exactly the members, encoded once; except skips the sender', { timeout: 15000 }, async (t) => {
  const h = await roomsApp()
  const clients: TestClient[] = []
  t.after(async () => { for (const c of clients) c.destroy(); await h.close() })
  for (let i = 0; i < 6; i++) clients.push(await connect(`${h.wsBase}/rt`, as(`u${i}`)))
  const [a, b, c, d, e, f] = clients as [TestClient, TestClient, TestClient, TestClient, TestClient, TestClient]
  for (const m of [a, b, c]) assert.equal((await m.request('join', { room: 'lobby' })).type, 'reply')
  await d.request('join', { room: 'other' })
  assert.deepEqual((await a.request('join', { room: 'other' })).data, ['lobby', 'other'])
  assert.equal(h.app.realtime.roomMembers('lobby').size, 3)
  assert.equal(await h.app.realtime.roomSize('lobby'), 3)

  assert.deepEqual(await a.request('say', { room: 'lobby', text: 'hi' }), { type: 'reply', id: 3, data: 2 })
  assert.deepEqual(await b.nextMessage(), { type: 'said', data: { text: 'hi' } })
  assert.deepEqual(await c.nextMessage(), { type: 'said', data: { text: 'hi' } })
  const stringify = JSON.stringify
  let encodes = 0
  JSON.stringify = ((...args: [unknown, never, never]) => { encodes++; return stringify(...args) }) as typeof stringify
  try {
    assert.equal(h.app.realtime.to('lobby').send('said', { text: 'all' }), 3)
  } finally {
    JSON.stringify = stringify
  }
  assert.equal(encodes, 1, 'the envelope is encoded once for all members')
  for (const m of [a, b, c]) assert.deepEqual(await m.nextMessage(), { type: 'said', data: { text: 'all' } })
  assert.equal(h.app.realtime.broadcast('said', { text: 'everyone' }, { except: [...h.app.realtime.byUser('u5')][0]?.id }), 5)
  for (const m of [a, b, c, d, e]) assert.deepEqual(await m.nextMessage(), { type: 'said', data: { text: 'everyone' } })
  await new Promise((resolve) => setTimeout(resolve, 50))
  for (const m of clients) assert.equal(m.pending, 0)
  assert.equal(f.pending, 0)

  assert.deepEqual((await a.request('leave', { room: 'other' })).data, ['lobby'])
  await d.request('leave', { room: 'other' })
  assert.equal(h.app.realtime.stats().rooms, 1, 'an empty room disappears')
  assert.equal(h.app.realtime.to('nobody-here').send('said', { text: 'x' }), 0)
})

test('byUser: a user with two tabs; toUser reaches both', { timeout: 10000 }, async (t) => {
  const h = await roomsApp()
  const tab1 = await connect(`${h.wsBase}/rt`, as('alice'))
  const tab2 = await connect(`${h.wsBase}/rt`, as('alice'))
  const bob = await connect(`${h.wsBase}/rt`, as('bob'))
  t.after(async () => { for (const c of [tab1, tab2, bob]) c.destroy(); await h.close() })
  assert.equal(h.app.realtime.byUser('alice').length, 2)
  assert.deepEqual(h.app.realtime.byUser('carol'), [])
  assert.equal(await h.app.realtime.online('alice'), true)
  assert.equal(h.app.realtime.toUser('alice').send('said', { text: 'dm' }), 2)
  assert.deepEqual(await tab1.nextMessage(), { type: 'said', data: { text: 'dm' } })
  assert.deepEqual(await tab2.nextMessage(), { type: 'said', data: { text: 'dm' } })
  assert.equal(bob.pending, 0)
  await tab1.close()
  await waitFor(() => h.app.realtime.byUser('alice').length === 1)
  assert.equal(h.app.realtime.stats().users, 2)
})

test('every way out empties the registry, rooms and user index; onClose runs once each', { timeout: 20000 }, async (t) => {
  const closes: Array<[string, number]> = []
  const roomsAtClose = new Map<string, unknown>()
  const h = await roomsApp({ onOpenThrows: true, closes, roomsAtClose })
  t.after(() => h.close())
  async function joined (user: string): Promise<TestClient> {
    const c = await connect(`${h.wsBase}/rt`, as(user))
    await c.request('join', { room: 'r' })
    return c
  }
  // A close frame from the client.
  await (await joined('clean')).close()
  // An abrupt TCP reset.
  const reset = await joined('reset')
  ;(reset.ws as unknown as { _socket: net.Socket })._socket.resetAndDestroy()
  // A client that vanishes (destroy without a close frame).
  const vanished = await joined('vanished');
  (vanished.ws as unknown as { _socket: net.Socket })._socket.destroy()
  // A server-side close.
  const kicked = await joined('kicked')
  kicked.sendJson({ type: 'kick', data: null })
  assert.equal((await kicked.closed).code, 4000)
  // An exception in onOpen: closed with 1011, onClose still runs.
  const bad = await connect(`${h.wsBase}/rt`, as('bad'))
  assert.deepEqual(await bad.closed, { code: 1011, reason: 'internal error' })
  // A server-side terminate (what the heartbeat does to a dead peer).
  const dead = await joined('dead')
  h.app.realtime.byUser('dead')[0]?.terminate()
  assert.equal((await dead.closed).code, 1006)

  await waitFor(() => closes.length === 6, 5000, 'six onClose calls')
  assertEmpty(h)
  assert.deepEqual(closes.map(([u]) => u).sort(), ['bad', 'clean', 'dead', 'kicked', 'reset', 'vanished'])
  assert.deepEqual(Object.fromEntries(closes), { clean: 1005, reset: 1006, vanished: 1006, kicked: 4000, bad: 1011, dead: 1006 })
  assert.deepEqual(h.app.realtime.stats().closes, { 1005: 1, 1006: 3, 4000: 1, 1011: 1 })
  for (const user of ['clean', 'reset', 'vanished', 'kicked', 'dead']) assert.deepEqual(roomsAtClose.get(user), [['r'], false], user)
  assert.deepEqual(roomsAtClose.get('bad'), [[], false])
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal(closes.length, 6, 'onClose ran exactly once each')
})

test('stats count messages and bytes in and out', { timeout: 10000 }, async (t) => {
  const h = await roomsApp()
  const c = await connect(`${h.wsBase}/rt`, as('s'))
  t.after(async () => { c.destroy(); await h.close() })
  const before = h.app.realtime.stats()
  await c.request('join', { room: 'x' })
  const after = h.app.realtime.stats()
  assert.equal(after.messagesIn - before.messagesIn, 1)
  assert.equal(after.messagesOut - before.messagesOut, 1)
  assert.equal(after.bytesIn - before.bytesIn, Buffer.byteLength(JSON.stringify({ type: 'join', data: { room: 'x' }, id: 1 })))
  assert.equal(after.bytesOut - before.bytesOut, Buffer.byteLength(JSON.stringify({ type: 'reply', id: 1, data: ['x'] })))
  assert.deepEqual([after.connections, after.users, after.rooms], [1, 1, 1])
})

test('a fan-out frame built once is a valid WebSocket frame at every length class', { timeout: 10000 }, async (t) => {
  const h = await roomsApp()
  const c = await connect(`${h.wsBase}/rt`, as('frames'))
  t.after(async () => { c.destroy(); await h.close() })
  // Envelope sizes just under and over the 7-bit, 16-bit and 64-bit length encodings.
  for (const size of [10, 125 - 28, 126 - 28, 65535 - 28, 65536 - 28, 200000]) {
    const text = 'x'.repeat(size)
    h.app.realtime.broadcast('said', { text })
    const m = await c.nextMessage()
    assert.equal(m.data.text.length, size)
  }
})

test('a fan-out keeps its place among the other writes to a member: sends before and after it, a reply, a backlog the reader has not taken', { timeout: 20000 }, async (t) => {
  const h = await startApp({
    realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user'] ?? 'anon') }) }, limits: { maxBufferedBytes: 256 * 1024 * 1024 } },
    jwt: false,
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: { join: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.join(room); return [...conn.rooms] } } },
        events: { said: Type.Object({ text: Type.String() }) }
      })
    }
  })
  const c = await connect(`${h.wsBase}/rt`, as('order'))
  t.after(async () => { c.destroy(); await h.close() })
  await c.request('join', { room: 'r' })
  const conn = h.app.realtime.byUser('order')[0]
  assert.ok(conn)
  const tcp = (c.ws as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
  tcp.pause()
  // A backlog first (the kernel's buffers full, the rest in the socket), so that the fan-out's frames queue too.
  const filler = 'f'.repeat(64 * 1024)
  let fillers = 0
  while (conn.socket.bufferedAmount === 0 && fillers < 4000) {
    conn.send('said' as never, { text: filler } as never)
    if (++fillers % 16 === 0) await new Promise((resolve) => setTimeout(resolve, 1))
  }
  assert.ok(conn.socket.bufferedAmount > 0, 'the reader has a backlog')
  for (let round = 0; round < 40; round++) {
    conn.send('said' as never, { text: `${round}.send` } as never)
    assert.equal(h.app.realtime.to('r').send('said', { text: `${round}.fanout` }), 1)
    conn.send('said' as never, { text: `${round}.after` } as never)
    if (round === 20) {
      // A reply goes behind the fan-outs written before it was computed, and ahead of those after.
      c.sendJson({ type: 'join', data: { room: 'r' }, id: 99 })
      await waitFor(() => h.app.realtime.stats().messagesIn >= 2, 3000, 'the request to be handled')
    }
  }
  tcp.resume()
  for (let i = 0; i < fillers; i++) assert.equal((await c.nextMessage()).data.text, filler)
  const seen: string[] = []
  for (let i = 0; i < 40 * 3 + 1; i++) {
    const m = await c.nextMessage()
    seen.push(m.type === 'reply' ? 'reply' : m.data.text)
  }
  const expected = Array.from({ length: 40 }, (_, round) => [`${round}.send`, `${round}.fanout`, `${round}.after`, ...round === 20 ? ['reply'] : []]).flat()
  assert.deepEqual(seen, expected)
})

test('a fan-out does not overtake a frame ws still holds for the member (a Blob being read)', { timeout: 10000 }, async (t) => {
  const h = await roomsApp()
  const c = await connect(`${h.wsBase}/rt`, as('held'))
  t.after(async () => { c.destroy(); await h.close() })
  await c.request('join', { room: 'r' })
  const conn = h.app.realtime.byUser('held')[0]
  assert.ok(conn)
  // ws reads a Blob's bytes asynchronously and queues what is sent meanwhile: the fan-out must queue behind it.
  conn.socket.send(new Blob([Buffer.from('first')]))
  assert.equal(h.app.realtime.to('r').send('said', { text: 'second' }), 1)
  const first = await c.nextMessage()
  assert.ok(Buffer.isBuffer(first), 'the Blob arrives first')
  assert.equal(first.toString(), 'first')
  assert.deepEqual(await c.nextMessage(), { type: 'said', data: { text: 'second' } })
})

test('a reply or an event written by the connection does not overtake a frame ws still holds (a Blob being read)', { timeout: 10000 }, async (t) => {
  const h = await roomsApp()
  const c = await connect(`${h.wsBase}/rt`, as('held-reply'))
  t.after(async () => { c.destroy(); await h.close() })
  await c.request('join', { room: 'r' })
  const conn = h.app.realtime.byUser('held-reply')[0]
  assert.ok(conn)
  conn.socket.send(new Blob([Buffer.from('first')]))
  assert.equal(conn.send('said', { text: 'second' }), true)
  const first = await c.nextMessage()
  assert.ok(Buffer.isBuffer(first), 'the Blob arrives first')
  assert.equal(first.toString(), 'first')
  assert.deepEqual(await c.nextMessage(), { type: 'said', data: { text: 'second' } })
  // And once ws is idle again, the connection's own frames go in the order written.
  for (let i = 0; i < 50; i++) conn.send('said', { text: String(i) })
  for (let i = 0; i < 50; i++) assert.deepEqual(await c.nextMessage(), { type: 'said', data: { text: String(i) } })
})

test('with permessage-deflate negotiated, the connection leaves its frames to ws, which compresses them', { timeout: 10000 }, async (t) => {
  const big = 'x'.repeat(4000)
  const h = await startApp({
    jwt: false,
    realtime: { auth: false, websocket: { options: { perMessageDeflate: { threshold: 0 } } } },
    setup: (app) => { app.realtimeRoute({ url: '/rt', messages: { big: { schema: Type.Null(), handler: () => big } } }) }
  })
  const deflating = await connect(`${h.wsBase}/rt`, { perMessageDeflate: true })
  const plain = await connect(`${h.wsBase}/rt`, { perMessageDeflate: false })
  t.after(async () => { deflating.destroy(); plain.destroy(); await h.close() })
  // The bytes on the wire, as the client's TCP socket read them.
  const wire = (c: typeof plain): { bytes: number } => {
    const counted = { bytes: 0 }
    ;(c.ws as unknown as { _socket: NodeJS.EventEmitter })._socket.on('data', (chunk: Buffer) => { counted.bytes += chunk.length })
    return counted
  }
  const [deflated, raw] = [wire(deflating), wire(plain)]
  assert.equal((await deflating.request('big', null)).data, big)
  assert.equal((await plain.request('big', null)).data, big)
  assert.ok(deflated.bytes < 500, `compressed: ${deflated.bytes} bytes`)
  assert.ok(raw.bytes > 4000, `not compressed: ${raw.bytes} bytes`)
})

// A connection in one room keeps the room's name alone (lib/connection.ts): joins, leaves and the close behave as
// with the Set, and `conn.rooms`, once read, is the connection's own live Set.
test('a connection in one room: joins, leaves, fan-outs and the close as with several; conn.rooms read later is live', { timeout: 10000 }, async (t) => {
  let conn: Connection<any, any> | undefined
  const atClose: string[][] = []
  const h = await startApp({
    realtime: { auth: false },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: {
          // Neither reads conn.rooms: the single room stays a name.
          join: { schema: Type.String(), handler: (room: string, c) => { conn = c; c.join(room); return null } },
          leave: { schema: Type.String(), handler: (room: string, c) => { c.leave(room); return null } }
        },
        events: { said: Type.Null() },
        onClose: (c) => { atClose.push([...c.rooms]) }
      })
    }
  })
  const members = (room: string): number => h.app.realtime.roomMembers(room).size
  const a = await connect(`${h.wsBase}/rt`)
  t.after(async () => { a.destroy(); await h.close() })
  await a.request('join', 'x')
  await a.request('join', 'x')
  assert.equal(members('x'), 1)
  assert.equal(h.app.realtime.to('x').send('said', null), 1)
  assert.deepEqual(await a.nextMessage(), { type: 'said', data: null })
  await a.request('leave', 'y')
  assert.equal(members('x'), 1, 'leaving a room it is not in changes nothing')
  await a.request('leave', 'x')
  assert.equal(members('x'), 0)
  const rooms = (conn as Connection<any, any>).rooms
  assert.deepEqual([...rooms], [])
  await a.request('join', 'y')
  assert.deepEqual([...rooms], ['y'], 'conn.rooms, read after a leave, sees the later join')
  await a.request('join', 'z')
  assert.deepEqual([...(conn as Connection<any, any>).rooms], ['y', 'z'])
  assert.equal((conn as Connection<any, any>).rooms, rooms)

  // One room, never read: the close leaves it, and onClose sees it.
  const b = await connect(`${h.wsBase}/rt`)
  t.after(() => { b.destroy() })
  await b.request('join', 'w')
  assert.equal(members('w'), 1)
  b.destroy()
  await waitFor(() => atClose.length === 1)
  assert.deepEqual(atClose[0], ['w'])
  assert.equal(members('w'), 0)
  assert.equal(h.app.realtime.stats().rooms, 2)
})
