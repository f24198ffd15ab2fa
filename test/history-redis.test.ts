// History rooms across instances on the real Redis: several instances in this process sharing a prefix.
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { redisBroker } from '../lib/redis.js'
import type { HistoryOptions } from '../lib/history/options.js'
import { historyApp, call, client, take } from './helpers/history.js'
import { REDIS_URL, redisTest, uniquePrefix } from './helpers/redis.js'
import { startRedisServer } from './helpers/redis-server.js'
import { waitFor, type TestClient } from './helpers/client.js'
import type { TestApp } from './helpers/app.js'

async function cluster (count: number, url = REDIS_URL, history: Partial<HistoryOptions> = {}): Promise<TestApp[]> {
  const prefix = uniquePrefix()
  const apps: TestApp[] = []
  for (let i = 0; i < count; i++) apps.push(await historyApp(history, { broker: redisBroker({ url, prefix }) }))
  return apps
}

function cleanup (t: { after: (fn: () => Promise<void>) => void }, apps: TestApp[], clients: TestClient[], extra?: () => Promise<void>): void {
  t.after(async () => {
    for (const c of clients) c.destroy()
    for (const h of apps) await h.close()
    await extra?.()
  })
}

async function resumeJoin (h: TestApp, clients: TestClient[], room: string, since: unknown): Promise<{ c: TestClient, before: any[], reply: any }> {
  const c = await client(h)
  clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: { [room]: since } } })
  return { c, ...await call(c, 'join', { room }) }
}

/** Reads a client's said frames and positions until `until` says stop; checks offsets go up by exactly one, a gap or epoch position aside. */
async function follow (c: TestClient, start: number, until: (last: number) => boolean, timeout = 10000): Promise<{ last: number, gaps: number, offsets: number[] }> {
  let last = start
  let gaps = 0
  const offsets: number[] = []
  while (!until(last)) {
    const m = await c.nextMessage(timeout)
    if (m.type === 'rt.position') {
      gaps++
      last = m.data.offset
      continue
    }
    assert.equal(m.offset, last + 1, `after ${last}`)
    last = m.offset
    offsets.push(last)
  }
  return { last, gaps, offsets }
}

redisTest('edge case 9 (cross-instance): leave through A, publish from C, recover through B from Redis; the publisher\'s own members get it from the subscription', { timeout: 20000 }, async (t) => {
  const apps = await cluster(3)
  const [a, b, c] = apps as [TestApp, TestApp, TestApp]
  const clients: TestClient[] = []
  cleanup(t, apps, clients)
  const ca = await client(a)
  const cc = await client(c)
  clients.push(ca, cc)
  const joined = await call(ca, 'join', { room: 'h:x' })
  const { epoch } = joined.reply.data
  assert.deepEqual(joined.before, [{ type: 'rt.position', data: { room: 'h:x', epoch, offset: 0 } }])
  assert.equal((await call(cc, 'join', { room: 'h:x' })).reply.data.epoch, epoch)
  ca.destroy()
  await waitFor(() => a.app.realtime.roomMembers('h:x').size === 0)
  for (let n = 1; n <= 3; n++) c.app.realtime.to('h:x').send('said', { n })
  assert.deepEqual(await c.app.realtime.to('h:x').publish('said', { n: 4 }), { epoch, offset: 4 })
  assert.deepEqual((await take(cc, 4)).map((m) => [m.data.n, m.offset]), [[1, 1], [2, 2], [3, 3], [4, 4]])
  const back = await resumeJoin(b, clients, 'h:x', { epoch, offset: 0 })
  assert.deepEqual(back.before[0].data, { room: 'h:x', epoch, offset: 0, recovery: { recovered: true, missed: 4 } })
  assert.deepEqual(back.before.slice(1).map((m) => m.offset), [1, 2, 3, 4])
  assert.deepEqual(await b.app.realtime.history('h:x').position(), { epoch, offset: 4 })
  a.app.realtime.to('h:x').send('said', { n: 5 })
  assert.equal((await back.c.nextMessage()).offset, 5)
  assert.equal((await cc.nextMessage()).offset, 5)
})

redisTest('edge case 11 (subscribe window): a first member joining on B while C publishes every millisecond misses nothing', { timeout: 30000 }, async (t) => {
  const apps = await cluster(2)
  const [b, c] = apps as [TestApp, TestApp]
  const clients: TestClient[] = []
  let n = 0
  const timer = setInterval(() => { for (let r = 0; r < 10; r++) c.app.realtime.to(`h:w${r}`).send('said', { n: n++ }) }, 1)
  cleanup(t, apps, clients, async () => { clearInterval(timer) })
  for (let r = 0; r < 10; r++) {
    const cb = await client(b)
    clients.push(cb)
    const { before, reply } = await call(cb, 'join', { room: `h:w${r}` })
    // Everything after rt.position's offset, strictly one by one, before and after the reply.
    let last: number = before[0].data.offset
    for (const m of before.slice(1)) { assert.equal(m.offset, last + 1); last = m.offset }
    assert.equal(reply.data.offset, last)
    const target = last + 20
    await follow(cb, last, (l) => l >= target)
    cb.destroy()
  }
})

redisTest('edge case 8 (boundary, Redis): publishing every millisecond from C while a client re-joins on A and B in turn, 100 rounds, offsets strictly +1', { timeout: 90000 }, async (t) => {
  const apps = await cluster(3, REDIS_URL, { size: 2000, maxRecover: 2000 })
  const [a, b, c] = apps as [TestApp, TestApp, TestApp]
  const clients: TestClient[] = []
  let n = 0
  const timer = setInterval(() => { c.app.realtime.to('h:seam').send('said', { n: n++ }) }, 1)
  cleanup(t, apps, clients, async () => { clearInterval(timer) })
  let cl = await client(a)
  clients.push(cl)
  const first = await call(cl, 'join', { room: 'h:seam' })
  const epoch: string = first.reply.data.epoch
  let last: number = first.reply.data.offset
  let seen = 0
  for (let round = 0; round < 100; round++) {
    await new Promise((resolve) => setTimeout(resolve, 3))
    while (cl.pending > 0) {
      const m = await cl.nextMessage()
      assert.equal(m.offset, last + 1, `round ${round}`)
      last = m.offset
      seen++
    }
    cl.destroy()
    const next = await resumeJoin(round % 2 === 0 ? b : a, clients, 'h:seam', { epoch, offset: last })
    cl = next.c
    assert.equal(next.before[0].data.recovery.recovered, true, `round ${round}`)
    for (const m of next.before.slice(1)) { assert.equal(m.offset, last + 1, `round ${round}`); last = m.offset; seen++ }
  }
  assert.ok(seen > 100, `saw ${seen}`)
})

redisTest('edge case 10 (self-heal): CLIENT KILL TYPE pubsub while C publishes; B\'s member still gets every offset once, in order', { timeout: 30000 }, async (t) => {
  const server = await startRedisServer()
  const apps = await cluster(2, server.url, { size: 1000, maxRecover: 1000 })
  const [b, c] = apps as [TestApp, TestApp]
  const admin = new Redis(server.url)
  const clients: TestClient[] = []
  cleanup(t, apps, clients, async () => { admin.disconnect(); await server.stop() })
  const cb = await client(b)
  clients.push(cb)
  await call(cb, 'join', { room: 'h:heal' })
  let n = 0
  const timer = setInterval(() => { if (n < 400) c.app.realtime.to('h:heal').send('said', { n: n++ }) }, 1)
  t.after(() => { clearInterval(timer) })
  await waitFor(() => n > 100)
  const killed = await admin.client('KILL', 'TYPE', 'pubsub')
  assert.ok(Number(killed) >= 2)
  await waitFor(() => n >= 400, 10000)
  const { offsets, gaps } = await follow(cb, 0, (l) => l >= 400)
  assert.equal(gaps, 0)
  assert.deepEqual(offsets, Array.from({ length: 400 }, (_, i) => i + 1))
})

redisTest('edge case 7 (epoch, Redis): FLUSHALL under connected clients: rt.position reason epoch, then the new epoch\'s offsets 1, 2, 3 are delivered', { timeout: 30000 }, async (t) => {
  const server = await startRedisServer()
  const apps = await cluster(2, server.url)
  const [a, c] = apps as [TestApp, TestApp]
  const admin = new Redis(server.url)
  const clients: TestClient[] = []
  cleanup(t, apps, clients, async () => { admin.disconnect(); await server.stop() })
  const ca = await client(a)
  clients.push(ca)
  const { epoch } = (await call(ca, 'join', { room: 'h:e' })).reply.data
  for (let n = 1; n <= 3; n++) c.app.realtime.to('h:e').send('said', { n })
  assert.deepEqual((await take(ca, 3)).map((m) => m.offset), [1, 2, 3])
  await admin.flushall()
  for (let n = 4; n <= 6; n++) await c.app.realtime.to('h:e').publish('said', { n })
  const [position, ...frames] = await take(ca, 4)
  assert.equal(position.type, 'rt.position')
  assert.notEqual(position.data.epoch, epoch)
  assert.deepEqual(position.data, { room: 'h:e', epoch: position.data.epoch, offset: 0, recovery: { recovered: false, reason: 'epoch' } })
  assert.deepEqual(frames.map((m) => [m.data.n, m.offset]), [[4, 1], [5, 2], [6, 3]])
  const stale = await resumeJoin(a, clients, 'h:e', { epoch, offset: 3 })
  assert.deepEqual(stale.before[0].data.recovery, { recovered: false, reason: 'epoch' })
})

redisTest('edge case 7 (epoch, Redis restart without persistence): connected members are told reason epoch once Redis is back, then get offsets 1, 2', { timeout: 40000 }, async (t) => {
  let server = await startRedisServer()
  const apps = await cluster(2, server.url)
  const [a, c] = apps as [TestApp, TestApp]
  const clients: TestClient[] = []
  cleanup(t, apps, clients, async () => { await server.stop() })
  const ca = await client(a)
  clients.push(ca)
  const { epoch } = (await call(ca, 'join', { room: 'h:rs' })).reply.data
  for (let n = 1; n <= 2; n++) await c.app.realtime.to('h:rs').publish('said', { n })
  assert.deepEqual((await take(ca, 2)).map((m) => m.offset), [1, 2])
  await server.stop()
  server = await startRedisServer([], server.port)
  // The subscriber comes back, reads the room again, finds a new epoch and says so.
  const position = await ca.nextMessage(20000)
  assert.equal(position.type, 'rt.position')
  assert.notEqual(position.data.epoch, epoch)
  assert.deepEqual(position.data.recovery, { recovered: false, reason: 'epoch' })
  // C's publisher may still be reconnecting: its publishes fail (and are counted) until it is back.
  for (let tries = 0; ; tries++) {
    try {
      await c.app.realtime.to('h:rs').publish('said', { n: 3 })
      break
    } catch (err) {
      if (tries > 200) throw err
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  await c.app.realtime.to('h:rs').publish('said', { n: 4 })
  assert.deepEqual((await take(ca, 2)).map((m) => [m.data.n, m.offset]), [[3, 1], [4, 2]])
})

redisTest('edge case 18 (Redis down): publish() rejects, send() counts a failure and delivers nothing, a join answers unavailable and the socket stays open', { timeout: 30000 }, async (t) => {
  const server = await startRedisServer()
  const apps = await cluster(1, server.url)
  const [a] = apps as [TestApp]
  const clients: TestClient[] = []
  cleanup(t, apps, clients)
  const ca = await client(a)
  clients.push(ca)
  await call(ca, 'join', { room: 'h:d' })
  await server.stop()
  await waitFor(() => a.app.realtime.stats().brokerFailures >= 0 && ca.ws.readyState === ca.ws.OPEN)
  await assert.rejects(a.app.realtime.to('h:d').publish('said', { n: 1 }))
  const before = a.app.realtime.stats().brokerFailures
  a.app.realtime.to('h:d').send('said', { n: 2 })
  await waitFor(() => a.app.realtime.stats().brokerFailures === before + 1)
  const cb = await client(a)
  clients.push(cb)
  const started = Date.now()
  cb.sendJson({ type: 'rt.resume', data: { rooms: { 'h:d2': { epoch: 'aZkQpLmx', offset: 3 } } } })
  const { before: frames } = await call(cb, 'join', { room: 'h:d2' })
  assert.deepEqual(frames, [{ type: 'rt.position', data: { room: 'h:d2', offset: null, recovery: { recovered: false, reason: 'unavailable' } } }])
  assert.ok(Date.now() - started < 6000)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal(ca.pending, 0)
  assert.equal(ca.ws.readyState, ca.ws.OPEN)
  assert.equal(cb.ws.readyState, cb.ws.OPEN)
})

redisTest('edge case 12 (many rooms): a client in 50 rooms, some overflowed, gets 50 right answers with one store read per room', { timeout: 30000 }, async (t) => {
  const server = await startRedisServer()
  const apps = await cluster(2, server.url, { size: 5 })
  const [a, b] = apps as [TestApp, TestApp]
  const admin = new Redis(server.url)
  const clients: TestClient[] = []
  cleanup(t, apps, clients, async () => { admin.disconnect(); await server.stop() })
  const positions: Record<string, unknown> = {}
  for (let r = 0; r < 50; r++) {
    const room = `h:m${r}`
    positions[room] = await a.app.realtime.history(room).position()
    for (let n = 0; n < (r % 5 === 0 ? 6 : 3); n++) a.app.realtime.to(room).send('said', { n })
  }
  assert.equal((await b.app.realtime.history('h:m49').position()).offset, 3)
  // HMGET is the read script's alone: one a room.
  const calls = async (): Promise<number> => Number(/cmdstat_hmget:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0)
  const c = await client(b)
  clients.push(c)
  c.sendJson({ type: 'rt.resume', data: { rooms: positions } })
  const scripts = await calls()
  for (let r = 0; r < 50; r++) {
    const { before } = await call(c, 'join', { room: `h:m${r}` })
    const expected = r % 5 === 0 ? { recovered: false, reason: 'trimmed' } : { recovered: true, missed: 3 }
    assert.deepEqual(before[0].data.recovery, expected, `room ${r}`)
    assert.deepEqual(before.slice(1).map((m) => m.offset), r % 5 === 0 ? [] : [1, 2, 3])
  }
  assert.equal(await calls() - scripts, 50, 'one read per room')
})

redisTest('a stalled Redis: history appends past maxPendingBytes fail at once and are counted instead of piling up', { timeout: 30000 }, async (t) => {
  const server = await startRedisServer()
  const admin = new Redis(server.url)
  const h = await historyApp({}, { broker: redisBroker({ url: server.url, prefix: uniquePrefix(), maxPendingBytes: 2000 }) })
  t.after(async () => { await admin.client('UNPAUSE').catch(() => {}); admin.disconnect(); await h.close(); await server.stop() })
  await h.app.realtime.to('h:p').publish('said', { n: 0 })
  await admin.client('PAUSE', 3000, 'ALL')
  const settled = Array.from({ length: 40 }, async (_, n) => await h.app.realtime.to('h:p').publish('said', { n, pad: 'x'.repeat(50) }).then(() => 'ok', () => 'failed'))
  const failedAtOnce = await Promise.race([Promise.all(settled.slice(30)), new Promise((resolve) => setTimeout(resolve, 500, 'waited'))])
  assert.deepEqual(failedAtOnce, Array(10).fill('failed'))
  await admin.client('UNPAUSE')
  const all = await Promise.all(settled)
  assert.ok(all.includes('ok'))
  assert.equal(h.app.realtime.stats().brokerFailures, all.filter((r) => r === 'failed').length)
})
