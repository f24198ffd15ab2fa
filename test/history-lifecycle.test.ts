// One lifecycle per history room (lib/room-life.ts): async work that comes back after its room, its join or its
// epoch is gone changes nothing. Each test forces the race with a Redis that stops answering for a moment (the
// proxy holds requests; replies and pub/sub messages already on their way still arrive).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { redisBroker } from '../lib/redis.js'
import { RoomCursor, type StreamMessage } from '../lib/history/cursor.js'
import { MemoryHistoryStore } from '../lib/history/memory.js'
import type { HistoryPolicy } from '../lib/history/options.js'
import type { RoomHistory } from '../lib/history/rooms.js'
import { historyApp, call, client } from './helpers/history.js'
import { REDIS_URL, RedisProxy, redisTest, uniquePrefix } from './helpers/redis.js'
import { waitFor, type TestClient } from './helpers/client.js'
import type { TestApp } from './helpers/app.js'
import { settledHeap } from './helpers/gc.js'

const historyOf = (h: TestApp): RoomHistory => (h.app.realtime as unknown as { roomHistory: RoomHistory }).roomHistory
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Messages that arrive within `ms`. */
async function drain (c: TestClient, ms: number): Promise<any[]> {
  const out: any[] = []
  const until = Date.now() + ms
  for (;;) {
    const left = until - Date.now()
    if (left <= 0) return out
    try {
      out.push(await c.nextMessage(left))
    } catch {
      return out
    }
  }
}

interface Pair { a: TestApp, b: TestApp, proxy: RedisProxy, clients: TestClient[] }

/** Instance A reaches Redis through a proxy the test can stall; B reaches it directly. */
async function pair (t: { after: (fn: () => Promise<void>) => void }, limits: Record<string, number> = {}): Promise<Pair> {
  const prefix = uniquePrefix()
  const proxy = new RedisProxy()
  const url = await proxy.start()
  const a = await historyApp({}, { broker: redisBroker({ url, prefix }), limits })
  const b = await historyApp({}, { broker: redisBroker({ url: REDIS_URL, prefix }) })
  const p: Pair = { a, b, proxy, clients: [] }
  t.after(async () => {
    proxy.resume()
    for (const c of p.clients) c.destroy()
    await a.close()
    await b.close()
    await proxy.cut()
  })
  return p
}

redisTest('a member that closes while its join reads Redis leaves nothing behind; the next joiner recovers without a false gap', { timeout: 30000 }, async (t) => {
  const p = await pair(t)
  const room = 'h:late-read'
  const feeder = await client(p.b)
  p.clients.push(feeder)
  await call(feeder, 'join', { room })
  for (let n = 1; n <= 3; n++) p.b.app.realtime.to(room).send('said', { n })
  await sleep(100)

  for (let round = 0; round < 20; round++) {
    const c = await client(p.a)
    p.proxy.stall()
    c.sendJson({ type: 'joinNoWait', data: { room } })
    await waitFor(() => p.a.app.realtime.roomMembers(room).size === 1, 3000, 'the member indexed')
    c.destroy()
    await waitFor(() => p.a.app.realtime.roomMembers(room).size === 0, 3000, 'the member gone')
    p.proxy.resume()
  }
  await sleep(300)
  assert.equal(historyOf(p.a).rooms, 0, 'no history room state is kept on A once its last member left')

  // Events A never saw (no member, no subscription); then a member resumes from offset 3 and live events follow.
  for (let n = 4; n <= 6; n++) p.b.app.realtime.to(room).send('said', { n })
  await sleep(100)
  const r = await client(p.a)
  p.clients.push(r)
  const epoch = (await p.a.app.realtime.history(room).position()).epoch
  r.sendJson({ type: 'rt.resume', data: { rooms: { [room]: { epoch, offset: 3 } } } })
  const { before, reply } = await call(r, 'join', { room })
  assert.equal(reply.data.recovered, true)
  assert.deepEqual(before.filter((m) => m.type === 'said').map((m) => m.offset), [4, 5, 6])
  for (let n = 7; n <= 9; n++) p.b.app.realtime.to(room).send('said', { n })
  const live = await drain(r, 500)
  assert.deepEqual(live.filter((m) => m.type === 'rt.position'), [], 'no rt.position (a false gap) after the recovery')
  assert.deepEqual(live.map((m) => m.offset), [7, 8, 9])
})

redisTest('join, leave and join again while the first read is in flight: one rt.position, one answer, one recovery counted', { timeout: 30000 }, async (t) => {
  const p = await pair(t)
  const room = 'h:rejoin'
  for (let n = 1; n <= 3; n++) p.b.app.realtime.to(room).send('said', { n })
  const { epoch } = await p.b.app.realtime.history(room).position()
  const c = await client(p.a)
  p.clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: { [room]: { epoch, offset: 1 } } } })
  await sleep(50)
  p.proxy.stall()
  c.sendJson({ type: 'joinNoWait', data: { room } })
  c.sendJson({ type: 'leave', data: { room } })
  c.sendJson({ type: 'joinNoWait', data: { room } })
  await waitFor(() => p.a.app.realtime.roomMembers(room).size === 1, 3000, 'the second join indexed')
  await sleep(100)
  p.proxy.resume()
  const frames = await drain(c, 1000)
  const positions = frames.filter((m) => m.type === 'rt.position' && m.data.offset !== null)
  assert.equal(positions.length, 1, `one rt.position for the join that stands, got ${JSON.stringify(positions)}`)
  assert.equal(frames.filter((m) => m.type === 'said').length, 0, 'the second join is fresh: nothing replayed')
  const recoveries = p.a.app.realtime.stats().recoveries
  assert.equal(Object.values(recoveries).reduce((a, b) => a + b, 0), 0, `the stale join counts no recovery: ${JSON.stringify(recoveries)}`)
})

redisTest('live frames held while a join reads are bounded by the replay budget (a stalled read in a busy room): the join says limit, goes on after them, and never trips 4408', { timeout: 30000 }, async (t) => {
  // maxBufferedBytes 200 KB, so the replay budget is 100 KB; 250 frames of ~1 KB arrive while the join reads.
  const p = await pair(t, { maxBufferedBytes: 200_000 })
  const room = 'h:busy'
  const keeper = await client(p.a)
  p.clients.push(keeper)
  await call(keeper, 'join', { room })
  const { epoch, offset } = await p.b.app.realtime.history(room).position()
  const c = await client(p.a)
  p.clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: { [room]: { epoch, offset } } } })
  await sleep(50)
  p.proxy.stall()
  c.sendJson({ type: 'joinNoWait', data: { room } })
  await waitFor(() => p.a.app.realtime.roomMembers(room).size === 2, 3000, 'the join indexed')
  const pad = 'x'.repeat(1000)
  for (let n = 1; n <= 250; n++) p.b.app.realtime.to(room).send('said', { n, pad })
  await drain(keeper, 1500)
  p.proxy.resume()
  const frames = await drain(c, 1500)
  const position = frames.find((m) => m.type === 'rt.position')
  assert.equal(position?.data.recovery?.reason, 'limit', `rt.position: ${JSON.stringify(position)}`)
  assert.equal(position.data.offset, offset + 250, 'the member goes on after the last frame it was not sent')
  p.b.app.realtime.to(room).send('said', { n: 251 })
  const next = await c.nextMessage(3000)
  assert.equal(next.offset, offset + 251)
  assert.equal(c.ws.readyState, c.ws.OPEN, 'the connection stays open (no 4408)')
})

redisTest('a join that answered unavailable gets the room\'s position once Redis answers again, and its instance follows the room from there', { timeout: 30000 }, async (t) => {
  const p = await pair(t)
  const room = 'h:outage-join'
  p.b.app.realtime.to(room).send('said', { n: 1 })
  const c = await client(p.a)
  p.clients.push(c)
  await p.proxy.cut()
  await sleep(300)
  const { before } = await call(c, 'join', { room }, 10000)
  assert.deepEqual(before.map((m) => m.data?.recovery?.reason), ['unavailable'])
  assert.equal(before[0].data.offset, null)
  await p.proxy.restore()
  let position: any
  for (const deadline = Date.now() + 10000; position === undefined && Date.now() < deadline;) {
    const m = await c.nextMessage(10000)
    if (m.type === 'rt.position') position = m
  }
  const { epoch, offset } = await p.b.app.realtime.history(room).position()
  assert.deepEqual(position?.data, { room, epoch, offset, recovery: { recovered: false, reason: 'unavailable' } })
  for (let n = 2; n <= 4; n++) p.b.app.realtime.to(room).send('said', { n })
  const live = await drain(c, 800)
  assert.deepEqual(live.map((m) => m.offset), [offset + 1, offset + 2, offset + 3])
})

test('a frame of an epoch the room already left (still in flight) does not take the cursor back', () => {
  const delivered: StreamMessage[] = []
  const notices: Array<[string, number, string]> = []
  const cursor = new RoomCursor({
    deliver: (m) => { delivered.push(m) },
    notify: (epoch, offset, reason) => { notices.push([epoch, offset, reason]) },
    read: async () => await Promise.reject(new Error('not read in this test'))
  })
  const frame = (epoch: string, offset: number): StreamMessage => ({ epoch, offset, frame: Buffer.from(`${epoch}${offset}`), except: undefined })
  cursor.seed('E1', 5)
  cursor.received(frame('E1', 6))
  assert.equal(cursor.seed('E2', 0), true, 'a join read the new epoch first')
  cursor.received(frame('E1', 7))
  cursor.received(frame('E2', 1))
  cursor.received(frame('E2', 2))
  assert.deepEqual(delivered.map((m) => `${m.epoch}:${m.offset}`), ['E1:6', 'E2:1', 'E2:2'])
  assert.deepEqual(notices, [], 'the epoch change was told by the join that found it; nothing flips back and forth')
  cursor.stop()
  cursor.received(frame('E2', 3))
  assert.equal(delivered.length, 3, 'a stopped cursor delivers nothing')
})

test('in-memory history: rooms that are joined and never published keep no ring, and their metas count against memoryBudget', async () => {
  const policy: HistoryPolicy = { size: 100, ttl: 120000, metaTtl: 86400000, maxRecover: 100, maxRecoverBytes: 524288 }
  const roomCount = 20_000
  const before = await settledHeap()
  const store = new MemoryHistoryStore(64 * 1024 * 1024)
  for (let i = 0; i < roomCount; i++) store.read(`h:room-${i}`, policy, undefined)
  const grown = await settledHeap() - before
  assert.equal(store.metas.rooms, roomCount)
  assert.ok(store.metas.bytes >= roomCount * 256, `metas are counted: ${store.metas.bytes}`)
  // A ring of 100 slots per room was 20,000 × ~1 KB and more; what stays is the meta alone.
  assert.ok(grown < 12 * 1024 * 1024, `20,000 joined rooms keep ${(grown / 1048576).toFixed(1)} MB`)
  store.close()

  const small = new MemoryHistoryStore(1024 * 1024)
  small.append('h:kept', policy, '{"type":"t","data":1,"room":"h:kept","offset":')
  for (let i = 0; i < roomCount; i++) small.read(`h:room-${i}`, policy, undefined)
  assert.ok(small.metas.bytes + small.size <= 1024 * 1024, `within the budget: ${small.metas.bytes + small.size}`)
  assert.ok(small.metas.rooms < roomCount, 'metas of never-published rooms were let go, oldest first')
  assert.equal(small.read('h:kept', policy, 0).entries.length, 1, 'a published room keeps its entries')
  small.close()
})
