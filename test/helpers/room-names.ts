// Issue 19, item 9: every room name the app accepts works on the Redis broker, a cluster's included, where a
// `}`, an empty name or a `%` once split a room's keys over slots (CROSSSLOT on publish, `unavailable` on join).
import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import type { Broker } from '../../lib/broker/types.js'
import type { TestApp } from './app.js'
import type { TestClient } from './client.js'
import { call, client, historyApp } from './history.js'

/** 200 characters: CJK, an emoji (two code units), and the characters the hash tag escapes. */
const LONG = Array.from({ length: 196 }, (_, i) => String.fromCodePoint(0x4e00 + i * 7)).join('') + '🎉}%'

// The empty name is no room a client can join (`INVALID_ROOM`, see limits.maxRoomNameLength); its keys (`{%}`) are
// checked in test/redis-faults.test.ts's codec tests.
export const AWKWARD_ROOMS = ['}', '}x{', 'a}b', '%', '{}', '%7D', LONG]

/**
 * Two instances with history on every room: for each awkward name, a member on B joins, A publishes with history
 * (B's member gets it, numbered), `roomSize` from A counts B's member, and a client back on A recovers what it missed.
 */
export async function checkRoomNames (t: TestContext, broker: () => Broker): Promise<void> {
  assert.equal(LONG.length, 200)
  const apps: TestApp[] = []
  const clients: TestClient[] = []
  t.after(async () => {
    for (const c of clients) c.destroy()
    await Promise.all(apps.map(async (h) => { await h.close() }))
  })
  for (let i = 0; i < 2; i++) apps.push(await historyApp({ rooms: () => true }, { broker: broker() }))
  const [a, b] = apps as [TestApp, TestApp]
  const listener = await client(b)
  clients.push(listener)
  for (const room of AWKWARD_ROOMS) {
    const joined = await call(listener, 'join', { room })
    assert.equal(joined.reply.type, 'reply', `join ${JSON.stringify(room)}: ${JSON.stringify(joined.reply)}`)
    const { epoch } = joined.reply.data as { epoch: string, offset: number }
    assert.equal(joined.reply.data.offset, 0, room)
    assert.deepEqual(await a.app.realtime.to(room).publish('said', { n: 1 }), { epoch, offset: 1 }, room)
    assert.deepEqual(await listener.nextMessage(), { type: 'said', data: { n: 1 }, room, offset: 1 }, room)
    assert.equal(await a.app.realtime.roomSize(room), 1, `roomSize(${JSON.stringify(room)})`)
    const back = await client(a)
    clients.push(back)
    const { before, reply } = await call(back, 'join', { room, since: { epoch, offset: 0 } })
    assert.deepEqual(before, [
      { type: 'rt.position', data: { room, epoch, offset: 0, recovery: { recovered: true, missed: 1 } } },
      { type: 'said', data: { n: 1 }, room, offset: 1 }
    ], room)
    assert.deepEqual(reply.data, { epoch, offset: 1, recovered: true, missed: 1 }, room)
    assert.equal(await b.app.realtime.roomSize(room), 2, room)
  }
  // Each room is its own: '%7D' and '}' (and '%' and '') never share keys or a channel.
  assert.deepEqual(apps.map((h) => h.app.realtime.stats().brokerFailures), [0, 0])
}
