import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import realtime from '../lib/index.js'
import { RECOVERY_REASONS } from '../lib/history/store.js'
import { historyApp, call, client, publish, take } from './helpers/history.js'
import type { TestClient } from './helpers/client.js'
import type { TestApp } from './helpers/app.js'

function cleanup (t: { after: (fn: () => Promise<void>) => void }, h: TestApp, clients: TestClient[]): void {
  t.after(async () => { for (const c of clients) c.destroy(); await h.close() })
}

/** Raw text frames as received, to compare bytes. */
function record (c: TestClient): string[] {
  const raws: string[] = []
  c.ws.on('message', (d) => { raws.push(d.toString()) })
  return raws
}

async function resumeJoin (h: TestApp, clients: TestClient[], room: string, since: unknown): Promise<{ c: TestClient, before: any[], reply: any }> {
  const c = await client(h)
  clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: { [room]: since } } })
  const { before, reply } = await call(c, 'join', { room })
  return { c, before, reply }
}

test('edge case 1 (basic) and 19 (wire order): 5 missed are replayed byte-identical after rt.position, before the reply; live goes on at top+1', { timeout: 15000 }, async (t) => {
  const h = await historyApp()
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const a = await client(h)
  const live = await client(h)
  clients.push(a, live)
  const liveRaw = record(live)
  const first = await call(a, 'join', { room: 'h:1' })
  await call(live, 'join', { room: 'h:1' })
  assert.equal(first.before.length, 1)
  const { epoch } = first.before[0].data
  assert.deepEqual(first.before[0], { type: 'rt.position', data: { room: 'h:1', epoch, offset: 0 } })
  assert.deepEqual(first.reply.data, { epoch, offset: 0 })
  assert.match(epoch, /^[\w-]{8}$/)

  publish(h, 'h:1', 1, 2)
  assert.deepEqual(await take(a, 2), [
    { type: 'said', data: { n: 1 }, room: 'h:1', offset: 1 },
    { type: 'said', data: { n: 2 }, room: 'h:1', offset: 2 }
  ])
  a.destroy()
  publish(h, 'h:1', 3, 5)
  await take(live, 7)

  const b = await client(h)
  clients.push(b)
  const bRaw = record(b)
  b.sendJson({ type: 'rt.resume', data: { rooms: { 'h:1': { epoch, offset: 2 } } } })
  const { before, reply } = await call(b, 'join', { room: 'h:1' })
  assert.deepEqual(before[0], { type: 'rt.position', data: { room: 'h:1', epoch, offset: 2, recovery: { recovered: true, missed: 5 } } })
  assert.deepEqual(before.slice(1).map((m) => m.offset), [3, 4, 5, 6, 7])
  assert.deepEqual(reply.data, { epoch, offset: 7, recovered: true, missed: 5 })
  // Byte for byte what the member who stayed got live.
  assert.deepEqual(bRaw.slice(1, 6), liveRaw.slice(-5))
  publish(h, 'h:1', 8, 1)
  assert.equal((await b.nextMessage()).offset, 8)
})

test('rooms without history are unchanged: no room, no offset, no rt.position, join resolves undefined', { timeout: 10000 }, async (t) => {
  const h = await historyApp()
  const c = await client(h)
  cleanup(t, h, [c])
  const raws = record(c)
  const { before, reply } = await call(c, 'join', { room: 'plain' })
  assert.deepEqual(before, [])
  assert.equal(reply.data, null)
  h.app.realtime.to('plain').send('said', { n: 1 })
  await c.nextMessage()
  assert.equal(raws.at(-1), '{"type":"said","data":{"n":1}}')
  await assert.rejects(h.app.realtime.to('plain').publish('said', { n: 1 }), /keeps no history/)
  await assert.rejects(h.app.realtime.history('plain').position(), /keeps no history/)
})

test('edge case 2 (zero events) and 14 (repeat recovery): recovered with missed 0, twice, no replay', { timeout: 10000 }, async (t) => {
  const h = await historyApp()
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const a = await client(h)
  clients.push(a)
  const { reply } = await call(a, 'join', { room: 'h:z' })
  a.destroy()
  for (let i = 0; i < 2; i++) {
    const { c, before, reply: r } = await resumeJoin(h, clients, 'h:z', { epoch: reply.data.epoch, offset: 0 })
    assert.deepEqual(before, [{ type: 'rt.position', data: { room: 'h:z', epoch: reply.data.epoch, offset: 0, recovery: { recovered: true, missed: 0 } } }])
    assert.equal(r.data.recovered, true)
    c.destroy()
  }
  publish(h, 'h:z', 1, 2)
  const { before } = await resumeJoin(h, clients, 'h:z', { epoch: reply.data.epoch, offset: 0 })
  assert.equal(before.length, 3)
  const again = await resumeJoin(h, clients, 'h:z', { epoch: reply.data.epoch, offset: 2 })
  assert.deepEqual(again.before.length, 1)
  assert.deepEqual(again.before[0].data.recovery, { recovered: true, missed: 0 })
})

test('edge case 3 (quiet room) and 5 (TTL expired): idle past ttl with nothing missed recovers; with 3 missed it is expired', { timeout: 10000 }, async (t) => {
  const h = await historyApp({ ttl: 150 })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  publish(h, 'h:q', 1, 2)
  const pos = await h.app.realtime.history('h:q').position()
  assert.equal(pos.offset, 2)
  publish(h, 'h:e', 1, 3)
  const e = await h.app.realtime.history('h:e').position()
  await new Promise((resolve) => setTimeout(resolve, 300))
  const quiet = await resumeJoin(h, clients, 'h:q', pos)
  assert.deepEqual(quiet.before[0].data.recovery, { recovered: true, missed: 0 })
  const expired = await resumeJoin(h, clients, 'h:e', { epoch: e.epoch, offset: 0 })
  assert.deepEqual(expired.before, [{ type: 'rt.position', data: { room: 'h:e', epoch: e.epoch, offset: 3, recovery: { recovered: false, reason: 'expired' } } }])
})

test('edge case 4 (trimmed): size 10 recovers 10 missed; 11 is trimmed, no replay, position = top, live at top+1', { timeout: 10000 }, async (t) => {
  const h = await historyApp({ size: 10 })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const { epoch } = await h.app.realtime.history('h:t').position()
  publish(h, 'h:t', 1, 11)
  const ten = await resumeJoin(h, clients, 'h:t', { epoch, offset: 1 })
  assert.deepEqual(ten.before[0].data.recovery, { recovered: true, missed: 10 })
  assert.deepEqual(ten.before.slice(1).map((m) => m.offset), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
  const eleven = await resumeJoin(h, clients, 'h:t', { epoch, offset: 0 })
  assert.deepEqual(eleven.before, [{ type: 'rt.position', data: { room: 'h:t', epoch, offset: 11, recovery: { recovered: false, reason: 'trimmed' } } }])
  publish(h, 'h:t', 12, 1)
  assert.equal((await eleven.c.nextMessage()).offset, 12)
})

test('edge case 6 (limits): over maxRecover or maxRecoverBytes is reason limit, and the socket stays open (no 4408)', { timeout: 10000 }, async (t) => {
  const h = await historyApp({ size: 50, maxRecover: 5, maxRecoverBytes: 400_000 }, { limits: { maxBufferedBytes: 1000 } })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const { epoch } = await h.app.realtime.history('h:l').position()
  publish(h, 'h:l', 1, 6)
  const count = await resumeJoin(h, clients, 'h:l', { epoch, offset: 0 })
  assert.deepEqual(count.before[0].data.recovery, { recovered: false, reason: 'limit' })
  // maxRecoverBytes is capped at half of maxBufferedBytes (500): 5 frames of ~120 bytes are over it.
  const big = 'x'.repeat(80)
  for (let i = 0; i < 5; i++) h.app.realtime.to('h:l').send('said', { n: i, big })
  const bytes = await resumeJoin(h, clients, 'h:l', { epoch, offset: 6 })
  assert.deepEqual(bytes.before[0].data.recovery, { recovered: false, reason: 'limit' })
  const ok = await resumeJoin(h, clients, 'h:l', { epoch, offset: 8 })
  assert.deepEqual(ok.before[0].data.recovery, { recovered: true, missed: 3 })
  for (const c of [count.c, bytes.c, ok.c]) assert.equal(c.ws.readyState, c.ws.OPEN)
  assert.equal(h.app.realtime.stats().closes['4408'], undefined)
})

test('edge case 6 (limits): rooms replayed together share the backlog; past half of maxBufferedBytes the rest are limit, never a 4408', { timeout: 10000 }, async (t) => {
  const h = await historyApp({}, { limits: { maxBufferedBytes: 2000 } })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const rooms = ['h:b0', 'h:b1', 'h:b2', 'h:b3']
  const positions: Record<string, unknown> = {}
  for (const room of rooms) {
    positions[room] = await h.app.realtime.history(room).position()
    for (let i = 0; i < 5; i++) h.app.realtime.to(room).send('said', { n: i, pad: 'x'.repeat(80) })
  }
  const c = await client(h)
  clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: positions } })
  const { before, reply } = await call(c, 'joinMany', { rooms })
  const recoveries = before.filter((m) => m.type === 'rt.position').map((m) => m.data.recovery)
  assert.deepEqual(recoveries[0], { recovered: true, missed: 5 })
  assert.ok(recoveries.slice(1).every((r) => r.recovered === false && r.reason === 'limit'), JSON.stringify(recoveries))
  assert.equal(reply.type, 'reply')
  assert.equal(c.ws.readyState, c.ws.OPEN)
  assert.equal(h.app.realtime.stats().closes['4408'], undefined)
})

test('edge case 7 (epoch, memory store): a restart or an expired meta is a new epoch; offsets start again at 1', { timeout: 15000 }, async (t) => {
  const h1 = await historyApp()
  publish(h1, 'h:r', 1, 3)
  const old = await h1.app.realtime.history('h:r').position()
  await h1.close()
  const h = await historyApp({ ttl: 50, metaTtl: 100 })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  publish(h, 'h:r', 1, 1)
  const { before, reply } = await resumeJoin(h, clients, 'h:r', old)
  assert.notEqual(reply.data.epoch, old.epoch)
  assert.deepEqual(before, [{ type: 'rt.position', data: { room: 'h:r', epoch: reply.data.epoch, offset: 1, recovery: { recovered: false, reason: 'epoch' } } }])
  publish(h, 'h:r', 2, 1)
  assert.equal((await clients[0]!.nextMessage()).offset, 2)
  clients[0]!.destroy()
  // Unused past metaTtl: the room's meta is gone, so is its epoch.
  await new Promise((resolve) => setTimeout(resolve, 200))
  const later = await h.app.realtime.history('h:r').position()
  assert.notEqual(later.epoch, reply.data.epoch)
  assert.equal(later.offset, 0)
})

test('edge case 7 (epoch, memory store): a meta that expired under connected members: they hear reason epoch, then offset 1 is delivered', { timeout: 10000 }, async (t) => {
  const h = await historyApp({ ttl: 50, metaTtl: 100 })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const a = await client(h)
  const b = await client(h)
  clients.push(a, b)
  const { epoch } = (await call(a, 'join', { room: 'h:m' })).reply.data
  await call(b, 'join', { room: 'h:m' })
  publish(h, 'h:m', 1, 2)
  for (const c of [a, b]) assert.deepEqual((await take(c, 2)).map((m) => m.offset), [1, 2])
  await new Promise((resolve) => setTimeout(resolve, 200))
  publish(h, 'h:m', 3, 1)
  for (const c of [a, b]) {
    const [position, frame] = await take(c, 2)
    assert.notEqual(position.data.epoch, epoch)
    assert.deepEqual(position.data, { room: 'h:m', epoch: position.data.epoch, offset: 0, recovery: { recovered: false, reason: 'epoch' } })
    assert.deepEqual([frame.data.n, frame.offset], [3, 1])
  }
  // A join that finds the new epoch first tells the members already there, not itself twice.
  await new Promise((resolve) => setTimeout(resolve, 200))
  const c = await client(h)
  clients.push(c)
  const joined = await call(c, 'join', { room: 'h:m' })
  assert.equal(joined.before.length, 1)
  assert.equal(joined.before[0].data.recovery, undefined)
  assert.deepEqual((await a.nextMessage()).data, { room: 'h:m', epoch: joined.reply.data.epoch, offset: 0, recovery: { recovered: false, reason: 'epoch' } })
})

test('edge case 8 (boundary): publishing every millisecond while a client re-joins, 100 rounds, offsets strictly +1', { timeout: 60000 }, async (t) => {
  const h = await historyApp({ size: 1000, maxRecover: 1000 })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  let n = 0
  const timer = setInterval(() => { h.app.realtime.to('h:seam').send('said', { n: n++ }) }, 1)
  t.after(() => { clearInterval(timer) })
  let c = await client(h)
  clients.push(c)
  const first = await call(c, 'join', { room: 'h:seam' })
  const epoch: string = first.reply.data.epoch
  let last: number = first.reply.data.offset
  const seen: number[] = []
  for (let round = 0; round < 100; round++) {
    // Read what arrived live up to now, then drop the connection and resume from the last offset seen.
    await new Promise((resolve) => setTimeout(resolve, 3))
    while (c.pending > 0) {
      const m = await c.nextMessage()
      if (m.type === 'said') { assert.equal(m.offset, last + 1, `round ${round}`); last = m.offset; seen.push(m.offset) }
    }
    c.destroy()
    await new Promise((resolve) => setTimeout(resolve, 2))
    const next = await resumeJoin(h, clients, 'h:seam', { epoch, offset: last })
    c = next.c
    assert.equal(next.before[0].type, 'rt.position')
    assert.equal(next.before[0].data.recovery.recovered, true, `round ${round}`)
    for (const m of next.before.slice(1)) { assert.equal(m.offset, last + 1, `round ${round}`); last = m.offset; seen.push(m.offset) }
  }
  clearInterval(timer)
  await new Promise((resolve) => setTimeout(resolve, 20))
  while (c.pending > 0) {
    const m = await c.nextMessage()
    if (m.type === 'said') { assert.equal(m.offset, last + 1); last = m.offset }
  }
  assert.equal(last, (await h.app.realtime.history('h:seam').position()).offset)
  assert.ok(seen.length > 100, `saw ${seen.length} events`)
})

test('edge case 15 (forged positions): offset > top is invalid; malformed entries and unjoined rooms are ignored, never a crash', { timeout: 15000 }, async (t) => {
  const h = await historyApp({}, { limits: { maxPayload: 1024 * 1024 } })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  publish(h, 'h:f', 1, 2)
  const { epoch } = await h.app.realtime.history('h:f').position()
  const invalid = await resumeJoin(h, clients, 'h:f', { epoch, offset: 3 })
  assert.deepEqual(invalid.before, [{ type: 'rt.position', data: { room: 'h:f', epoch, offset: 2, recovery: { recovered: false, reason: 'invalid' } } }])
  for (const bad of [{ epoch, offset: -1 }, { epoch, offset: 1.5 }, { epoch, offset: 2 ** 53 }, { epoch: 'x'.repeat(10_000), offset: 1 }, { epoch: 5, offset: 1 }, null, 'x']) {
    const r = await resumeJoin(h, clients, 'h:f', bad)
    assert.deepEqual(r.before, [{ type: 'rt.position', data: { room: 'h:f', epoch, offset: 2 } }], JSON.stringify(bad).slice(0, 40))
  }
  for (const data of [null, 'x', [], { rooms: [] }, { rooms: 'x' }, { rooms: { ['__proto__']: { epoch, offset: 1 } } }]) {
    const c = await client(h)
    clients.push(c)
    c.sendJson({ type: 'rt.resume', data })
    const r = await call(c, 'join', { room: 'h:f' })
    const positions = r.before.filter((m) => m.type === 'rt.position')
    assert.equal(positions.length, 1)
    assert.equal(positions[0].data.recovery, undefined)
  }
  // 10,000 rooms: the first 256 are kept, nothing is answered for rooms never joined.
  const many: Record<string, unknown> = {}
  for (let i = 0; i < 10_000; i++) many[`h:${i}`] = { epoch, offset: 0 }
  const c = await client(h)
  clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: many } })
  const r = await call(c, 'join', { room: 'plain' })
  assert.deepEqual(r.before, [])
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal(c.pending, 0)
  const kept = await call(c, 'join', { room: 'h:1' })
  assert.deepEqual(kept.before[0].data.recovery, { recovered: false, reason: 'epoch' })
  const dropped = await call(c, 'join', { room: 'h:9999' })
  assert.equal(dropped.before[0].data.recovery, undefined)
})

test('edge case 16 (leave and rejoin): a leave answers offset null; the rejoin is fresh', { timeout: 10000 }, async (t) => {
  const h = await historyApp()
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  publish(h, 'h:lv', 1, 2)
  const { epoch } = await h.app.realtime.history('h:lv').position()
  const { c } = await resumeJoin(h, clients, 'h:lv', { epoch, offset: 1 })
  const left = await call(c, 'leave', { room: 'h:lv' })
  assert.deepEqual(left.before, [{ type: 'rt.position', data: { room: 'h:lv', offset: null } }])
  const again = await call(c, 'join', { room: 'h:lv' })
  assert.deepEqual(again.before, [{ type: 'rt.position', data: { room: 'h:lv', epoch, offset: 2 } }])
  assert.deepEqual((await call(c, 'leave', { room: 'plain' })).before, [])
})

test('edge case 17 (except, volatile): a reconnecting sender gets its own frame byte-identical; volatile frames are not numbered or kept', { timeout: 10000 }, async (t) => {
  const h = await historyApp()
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const a = await client(h)
  const b = await client(h)
  clients.push(a, b)
  const bRaw = record(b)
  const { reply } = await call(a, 'join', { room: 'h:x' })
  await call(b, 'join', { room: 'h:x' })
  assert.equal((await call(a, 'say', { room: 'h:x', n: 1 })).reply.data, 1)
  assert.equal((await call(a, 'say', { room: 'h:x', n: 2, volatile: true })).reply.data, 1)
  assert.deepEqual(await take(b, 2), [{ type: 'said', data: { n: 1 }, room: 'h:x', offset: 1 }, { type: 'said', data: { n: 2 } }])
  assert.equal(a.pending, 0)
  a.destroy()
  const back = await resumeJoin(h, clients, 'h:x', { epoch: reply.data.epoch, offset: 0 })
  assert.equal(back.before.length, 2)
  assert.deepEqual(back.before[1], { type: 'said', data: { n: 1 }, room: 'h:x', offset: 1 })
  assert.equal(JSON.stringify(back.before[1]), bRaw.find((raw) => raw.includes('"offset":1')))
  assert.deepEqual(await h.app.realtime.to('h:x').publish('said', { n: 3 }), { epoch: reply.data.epoch, offset: 2 })
})

test('edge case 19 (wire order): a join that is not awaited still writes rt.position and the replay before any later frame', { timeout: 10000 }, async (t) => {
  const h = await historyApp()
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  publish(h, 'h:o', 1, 3)
  const { epoch } = await h.app.realtime.history('h:o').position()
  const c = await client(h)
  clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: { 'h:o': { epoch, offset: 1 } } } })
  const { before, reply } = await call(c, 'joinNoWait', { room: 'h:o' })
  assert.deepEqual(before.map((m) => m.type === 'rt.position' ? 'position' : m.offset), ['position', 2, 3])
  assert.equal(reply.data, null)
  // A resume position waits resumeWindow at most.
  const h2 = await historyApp({ resumeWindow: 50 })
  t.after(async () => { await h2.close() })
  const d = await client(h2)
  clients.push(d)
  d.sendJson({ type: 'rt.resume', data: { rooms: { 'h:o': { epoch: 'abcdefgh', offset: 1 } } } })
  await new Promise((resolve) => setTimeout(resolve, 120))
  assert.equal((await call(d, 'join', { room: 'h:o' })).before[0].data.recovery, undefined)
})

test('rt.resume and rt.position are reserved; history options are checked at registration', { timeout: 10000 }, async () => {
  for (const type of ['rt.resume', 'rt.position']) {
    const app = Fastify()
    await app.register(realtime, { auth: false })
    app.realtimeRoute({ url: '/x', messages: { [type]: { schema: Type.Null(), handler: () => null } } })
    await assert.rejects(async () => { await app.ready() }, { code: 'RT_ERR_RESERVED_TYPE' })
    await app.close()
  }
  for (const history of [{ rooms: 5 }, { rooms: [], size: 0 }, { rooms: [], ttl: 1.5 }, { rooms: [], resumeWindow: -1 }]) {
    const app = Fastify()
    await assert.rejects(async () => { await app.register(realtime, { auth: false, history: history as any }) }, { code: 'RT_ERR_OPTIONS' })
    await app.close()
  }
  const broker = { start () {}, publish () {}, membership () {}, close () {} }
  const app = Fastify()
  await assert.rejects(async () => { await app.register(realtime, { auth: false, broker, history: { rooms: [] } }) }, /keeps no history/)
  await app.close()
})

test('a predicate policy overrides the numbers per room; the memory budget trims the least recently written rooms', { timeout: 10000 }, async (t) => {
  const h = await historyApp({ rooms: (room: string) => room === 'small' ? { size: 2 } : room.startsWith('h:'), memoryBudget: 2000 })
  const clients: TestClient[] = []
  cleanup(t, h, clients)
  const small = await h.app.realtime.history('small').position()
  publish(h, 'small', 1, 3)
  assert.deepEqual((await resumeJoin(h, clients, 'small', { epoch: small.epoch, offset: 0 })).before[0].data.recovery, { recovered: false, reason: 'trimmed' })
  assert.deepEqual((await resumeJoin(h, clients, 'small', { epoch: small.epoch, offset: 1 })).before[0].data.recovery, { recovered: true, missed: 2 })
  const old = await h.app.realtime.history('h:old').position()
  publish(h, 'h:old', 1, 5)
  // ~50 bytes a frame: 50 frames elsewhere pass the 2,000-byte budget, and h:old was written least recently.
  publish(h, 'h:new', 1, 50)
  assert.deepEqual((await resumeJoin(h, clients, 'h:old', { epoch: old.epoch, offset: 0 })).before[0].data.recovery, { recovered: false, reason: 'trimmed' })
})

test('the docs document every history option (the reference) and every recovery reason (delivery guarantees)', async () => {
  const { readFile } = await import('node:fs/promises')
  const { docsPage } = await import('./helpers/readme.js')
  const reference = await docsPage('reference')
  const guarantees = await docsPage('delivery-guarantees')
  const source = await readFile(new URL('../lib/history/options.ts', import.meta.url), 'utf8')
  for (const name of ['HistoryPolicy', 'HistoryOptions']) {
    const start = source.indexOf(`export interface ${name} `)
    const block = source.slice(start, source.indexOf('\n}\n', start))
    for (const [, key] of block.matchAll(/^ {2}(\w+)\??:/gm)) assert.ok(reference.includes(`| \`history.${key as string}\` |`), `history.${key as string}`)
  }
  assert.equal(RECOVERY_REASONS.length, 7)
  for (const reason of RECOVERY_REASONS) assert.ok(guarantees.includes(`| \`${reason}\` |`), reason)
})
