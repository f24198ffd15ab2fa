// The Redis broker on a real Redis Cluster of the test's own (3 masters, 1 replica each) with sharded pub/sub:
// delivery, subscriptions on the shard that owns each channel, cluster-wide counts with one slot per script, a
// master killed and its replica promoted, and `{ client: Cluster }`.
import { after, before, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, Redis } from 'ioredis'
import { Type } from '@sinclair/typebox'
import { redisBroker, type RedisBrokerOptions } from '../lib/redis.js'
import { startApp, type TestApp } from './helpers/app.js'
import { drain, eventually, member } from './helpers/members.js'
import type { TestClient } from './helpers/client.js'
import { redisTest, uniquePrefix } from './helpers/redis.js'
import { startRedisCluster, type TestRedisCluster } from './helpers/redis-cluster.js'
import { call, client as historyClient, historyApp } from './helpers/history.js'
import { checkRoomNames } from './helpers/room-names.js'
import { StreamClient } from './helpers/stream.js'

let cluster: TestRedisCluster
let admin: Cluster
before(async () => {
  cluster = await startRedisCluster()
  admin = new Cluster(cluster.nodes, { lazyConnect: true })
  await admin.connect()
}, { timeout: 60_000 })
after(async () => {
  admin?.disconnect()
  await cluster?.stop()
  // Should anything keep this file's process alive past its tests, say what (the runner's timeout says only that).
  setTimeout(() => { process.stderr.write(`redis-cluster.test.ts: still running 10 s after its tests: ${JSON.stringify(process.getActiveResourcesInfo())}\n`) }, 10_000).unref()
})

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

const keyslot = async (key: string): Promise<number> => await admin.cluster('KEYSLOT', key)

/** Instances subscribed to a shard channel, asked of the master that owns its slot. */
async function shardSubscribers (channel: string): Promise<number> {
  const port = await cluster.masterOf(await keyslot(channel))
  const node = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 })
  try {
    await node.connect()
    const reply = await node.call('PUBSUB', 'SHARDNUMSUB', channel) as [string, number]
    return Number(reply[1])
  } finally {
    node.disconnect()
  }
}

/** `size` instances on one prefix, each with a route: join and say (to a room, except the sender). */
async function instances (t: TestContext, size: number, broker: (prefix: string) => RedisBrokerOptions): Promise<{ apps: TestApp[], prefix: string }> {
  const prefix = uniquePrefix()
  const apps: TestApp[] = []
  t.after(async () => { await Promise.all(apps.map(async (h) => { await h.close() })) })
  for (let i = 0; i < size; i++) {
    apps.push(await startApp({
      jwt: false,
      realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user'] ?? `anon-${i}`) }) }, broker: redisBroker(broker(prefix)) },
      setup: (app) => {
        const route = app.realtimeRoute({
          url: '/rt',
          messages: {
            join: { schema: Type.String(), handler: (room, conn) => { conn.join(room); return room } },
            say: { schema: Type.String(), handler: (room, conn): number => route.to(room).send('said', { room, from: conn.userId ?? '' }, { except: conn }) }
          },
          events: { said: Type.Object({ room: Type.String(), from: Type.String() }) }
        })
      }
    }))
  }
  return { apps, prefix }
}

const onCluster = (prefix: string, extra: Partial<RedisBrokerOptions> = {}): RedisBrokerOptions =>
  ({ cluster: { nodes: cluster.nodes, options: { slotsRefreshInterval: 500 } }, prefix, onlineTtl: 2, ...extra }) as RedisBrokerOptions

/** Room names whose slots fall on three different masters. */
async function roomsOnEveryShard (namePrefix = ''): Promise<string[]> {
  const byMaster = new Map<number, string>()
  for (let i = 0; byMaster.size < 3 && i < 200; i++) {
    const name = `${namePrefix}room-${i}`
    const master = await cluster.masterOf(await keyslot(`{${name}}`))
    if (!byMaster.has(master)) byMaster.set(master, name)
  }
  return [...byMaster.values()]
}

redisTest('sharded: room, user and broadcast fan-outs reach every member on every instance exactly once, each room channel on its own shard', { timeout: 30000 }, async (t) => {
  const { apps: [a, b, c], prefix } = await instances(t, 3, (p) => onCluster(p))
  assert.ok(a !== undefined && b !== undefined && c !== undefined)
  const rooms = await roomsOnEveryShard()
  assert.equal(rooms.length, 3)
  const members = []
  for (const room of rooms) {
    members.push(await member(t, a, 'alice', room), await member(t, b, 'bob', room), await member(t, c, 'carol', room))
  }
  for (const room of rooms) await eventually(async () => await shardSubscribers(`${prefix}room:{${room}}`) === 3, `3 subscribers of ${room}`)
  // The three room channels live on three different masters: the fan-out traffic is spread.
  const masters = await Promise.all(rooms.map(async (room) => await cluster.masterOf(await keyslot(`${prefix}room:{${room}}`))))
  assert.equal(new Set(masters).size, 3)

  for (const [i, room] of rooms.entries()) {
    assert.equal(b.app.realtime.to(room).send('news', { i }), 1)
    for (const m of members.slice(i * 3, i * 3 + 3)) assert.deepEqual(await drain(m), [{ type: 'news', data: { i } }])
  }
  c.app.realtime.toUser('alice').send('dm', 'hi')
  for (const [i, m] of members.entries()) assert.deepEqual(await drain(m, i === 0 ? 150 : 0), i % 3 === 0 ? [{ type: 'dm', data: 'hi' }] : [])
  await eventually(async () => await shardSubscribers(`${prefix}{all}`) === 3, 'the broadcast channel')
  a.app.realtime.broadcast('all', 1)
  for (const [i, m] of members.entries()) assert.deepEqual(await drain(m, i === 0 ? 150 : 0), [{ type: 'all', data: 1 }])
  // except crosses instances; the typed route handle publishes through the same broker.
  const [, bob] = members
  assert.equal((await bob?.request('say', rooms[0]))?.data, 0)
  assert.deepEqual(await drain(members[0] as TestClient), [{ type: 'said', data: { room: rooms[0], from: 'bob' } }])
  assert.deepEqual(await drain(bob as TestClient, 0), [])
  assert.deepEqual([a, b, c].map((h) => h.app.realtime.stats().brokerFailures), [0, 0, 0])
})

redisTest('keys carry the room as a hash tag: every presence script touches one slot, counts are cluster-wide', { timeout: 30000 }, async (t) => {
  const { apps: [a, b], prefix } = await instances(t, 2, (p) => onCluster(p))
  assert.ok(a !== undefined && b !== undefined)
  const rooms = await roomsOnEveryShard()
  for (const room of rooms) {
    await member(t, a, 'alice', room)
    await member(t, b, 'bob', room)
    await member(t, b, 'bob', room)
  }
  for (const room of rooms) {
    await eventually(async () => await a.app.realtime.roomSize(room) === 3, `roomSize(${room})`)
    assert.equal(await b.app.realtime.roomSize(room), 3)
    const key = `${prefix}presence:room:{${room}}`
    assert.equal(await admin.exists(key), 1)
    assert.equal(await keyslot(key), await keyslot(`${prefix}room:{${room}}`), 'the key and the channel share a slot')
  }
  assert.equal(await a.app.realtime.online('bob'), true)
  assert.equal(await a.app.realtime.online('nobody'), false)
  // The periodic refresh (every third of the TTL) writes keys of every shard without a cross-slot error.
  await sleep(800)
  for (const room of rooms) assert.equal(await a.app.realtime.roomSize(room), 3)
})

redisTest('{ client: Cluster } duplicates the app\'s cluster client and leaves it open; sharded: false uses classic pub/sub', { timeout: 30000 }, async (t) => {
  const own = new Cluster(cluster.nodes, { lazyConnect: true })
  await own.connect()
  t.after(() => { own.disconnect() })
  const { apps: [a, b], prefix } = await instances(t, 2, (p) => ({ client: own, prefix: p, sharded: false, onlineTtl: 2 }))
  assert.ok(a !== undefined && b !== undefined)
  const m1 = await member(t, a, 'alice', 'hall')
  const m2 = await member(t, b, 'bob', 'hall')
  // A classic SUBSCRIBE on a cluster lands on whichever node ioredis picked: send until the other instance hears.
  let n = 0
  await eventually(async () => { a.app.realtime.to('hall').send('hi', ++n); await sleep(50); return m2.pending > 0 }, 'classic subscriptions')
  await sleep(100)
  const got = (await drain(m2, 0)).map((m) => (m as { data: number }).data)
  assert.ok(got.length >= 1 && got.every((v, i) => i === 0 || v === (got[i - 1] as number) + 1), `in order, once: ${got.join()}`)
  assert.equal(got.at(-1), n)
  assert.equal((await drain(m1, 0)).length, n, 'the local member gets every one')
  await a.close()
  await b.close()
  assert.equal(own.status, 'ready', 'the app\'s own client stays open')
  assert.equal(await own.exists(`${prefix}presence:room:{hall}`), 0, 'a clean shutdown removes its presence')
})

redisTest('history rooms on the cluster: the append script (keys and SPUBLISH in one slot) numbers and delivers, the read script recovers', { timeout: 30000 }, async (t) => {
  const prefix = uniquePrefix()
  const apps = await Promise.all([0, 1].map(async () => await historyApp({}, { broker: redisBroker(onCluster(prefix)) })))
  t.after(async () => { await Promise.all(apps.map(async (h) => { await h.close() })) })
  const [a, b] = apps as [TestApp, TestApp]
  const rooms = await roomsOnEveryShard('h:')
  assert.equal(rooms.length, 3)
  const listener = await historyClient(b)
  t.after(() => { listener.destroy() })
  const joined = []
  for (const room of rooms) joined.push((await call(listener, 'join', { room })).reply.data)
  for (const room of rooms) {
    for (let n = 1; n <= 3; n++) await a.app.realtime.to(room).publish('said', { n })
  }
  for (const [i, room] of rooms.entries()) {
    const got = [await listener.nextMessage(), await listener.nextMessage(), await listener.nextMessage()]
    assert.deepEqual(got, [1, 2, 3].map((n) => ({ type: 'said', data: { n }, room, offset: n })), room)
    assert.equal((joined[i] as { offset: number }).offset, 0)
    assert.equal(await keyslot(`${prefix}hist:{${room}}`), await keyslot(`${prefix}room:{${room}}`))
  }
  // A client back with offset 1 of the first room gets the two it missed, from the stream on that room's shard.
  const back = await historyClient(a)
  t.after(() => { back.destroy() })
  const epoch = (joined[0] as { epoch: string }).epoch
  const { before, reply } = await call(back, 'join', { room: rooms[0], since: { epoch, offset: 1 } })
  assert.deepEqual(before, [
    { type: 'rt.position', data: { room: rooms[0], epoch, offset: 1, recovery: { recovered: true, missed: 2 } } },
    { type: 'said', data: { n: 2 }, room: rooms[0], offset: 2 },
    { type: 'said', data: { n: 3 }, room: rooms[0], offset: 3 }
  ])
  assert.deepEqual(reply.data, { epoch, offset: 3, recovered: true, missed: 2 })
  assert.deepEqual(apps.map((h) => h.app.realtime.stats().brokerFailures), [0, 0])
})

redisTest('a master killed: its replica is promoted, subscriptions move over, delivery resumes; publishes in the gap are counted as failed', { timeout: 60000 }, async (t) => {
  const { apps: [a, b], prefix } = await instances(t, 2, (p) => onCluster(p))
  assert.ok(a !== undefined && b !== undefined)
  const [room] = await roomsOnEveryShard()
  assert.ok(room !== undefined)
  const sender = await member(t, a, 'alice', room)
  const receiver = await member(t, b, 'bob', room)
  const channel = `${prefix}room:{${room}}`
  await eventually(async () => await shardSubscribers(channel) === 2, 'subscribers')
  a.app.realtime.to(room).send('before', 1)
  assert.deepEqual(await drain(receiver), [{ type: 'before', data: 1 }])

  const master = await cluster.masterOf(await keyslot(channel))
  cluster.servers.find((s) => s.port === master)?.kill()
  // Publish every 50 ms until the receiver on the other instance gets one again: the replica took over.
  let sent = 0
  await eventually(async () => {
    a.app.realtime.to(room).send('during', ++sent)
    return receiver.pending > 0
  }, 'delivery to resume after the failover', 30_000)
  const promoted = await cluster.masterOf(await keyslot(channel))
  assert.notEqual(promoted, master)
  await sleep(300)
  const got = (await drain(receiver, 0)).map((m) => (m as { data: number }).data)
  // Whatever crossed arrived once and in order; what did not was counted by the publisher.
  assert.deepEqual(got, [...got].sort((x, y) => x - y))
  assert.equal(new Set(got).size, got.length)
  const failures = a.app.realtime.stats().brokerFailures
  assert.ok(failures > 0, 'publishes to the dead master were counted as failed')
  // None is both delivered and counted. (A publish that reached some instances but not yet others, while they
  // resubscribe on the promoted master, cannot be told apart by its publisher: docs/07-scaling-out.md says so.)
  assert.ok(got.length + failures <= sent, `delivered ${got.length} + failed ${failures} of ${sent}`)
  // And a fresh fan-out goes through on the new master, once.
  await drain(sender, 0)
  a.app.realtime.to(room).send('after', 1)
  assert.deepEqual(await drain(receiver), [{ type: 'after', data: 1 }])
})

/** Ports of the masters that still have a live replica (a second failover must pick one of those). */
async function mastersWithReplica (): Promise<number[]> {
  const lines = (await admin.cluster('NODES') as string).trim().split('\n').map((line) => line.split(' '))
  const byId = new Map(lines.map((f) => [f[0], Number((f[1] ?? '').split(/[:@]/)[1])]))
  return lines.filter((f) => (f[2] ?? '').includes('slave') && !(f[2] ?? '').includes('fail') && f[7] === 'connected')
    .map((f) => byId.get(f[3] ?? '') ?? 0).filter((port) => port > 0)
}

redisTest('a history room across a failover: the promoted replica may lack the last appends, so the room starts a new epoch', { timeout: 60000 }, async (t) => {
  const prefix = uniquePrefix()
  const apps = await Promise.all([0, 1].map(async () => await historyApp({}, { broker: redisBroker(onCluster(prefix)) })))
  t.after(async () => { await Promise.all(apps.map(async (h) => { await h.close() })) })
  const [a, b] = apps as [TestApp, TestApp]
  const withReplica = await mastersWithReplica()
  let room: string | undefined
  for (let i = 0; room === undefined && i < 300; i++) {
    if (withReplica.includes(await cluster.masterOf(await keyslot(`{h:f-${i}}`)))) room = `h:f-${i}`
  }
  assert.ok(room !== undefined, 'a room on a shard that can fail over')
  const listener = await historyClient(b)
  t.after(() => { listener.destroy() })
  const before = (await call(listener, 'join', { room })).reply.data as { epoch: string }
  for (let n = 1; n <= 3; n++) await a.app.realtime.to(room).publish('said', { n })
  for (let n = 1; n <= 3; n++) assert.equal((await listener.nextMessage()).offset, n)

  const master = await cluster.masterOf(await keyslot(`${prefix}hist:{${room}}`))
  cluster.servers.find((s) => s.port === master)?.kill()
  let after: { epoch: string, offset: number } | undefined
  const start = Date.now()
  while (after === undefined && Date.now() - start < 30_000) {
    after = await a.app.realtime.to(room).publish('said', { n: 4 }).catch(async () => { await sleep(100); return undefined })
  }
  assert.ok(after !== undefined, 'appends work again on the promoted replica')
  assert.notEqual(after.epoch, before.epoch, 'a new epoch: offsets are never handed out twice under one epoch')
  assert.equal(after.offset, 1)
  // A client that held offset 3 of the old epoch learns that it cannot recover, and why.
  const back = await historyClient(a)
  t.after(() => { back.destroy() })
  const { before: frames } = await call(back, 'join', { room, since: { epoch: before.epoch, offset: 3 } })
  assert.deepEqual(frames[0], { type: 'rt.position', data: { room, epoch: after.epoch, offset: 1, recovery: { recovered: false, reason: 'epoch' } } })
})

redisTest('room names of any characters ("}", "%", "{}", 200 unicode characters): publish with history, recovery, roomSize', { timeout: 60000 }, async (t) => {
  const prefix = uniquePrefix()
  await checkRoomNames(t, () => redisBroker(onCluster(prefix)))
})

redisTest('an instance just started on the cluster: members who join at once count in roomSize and online within a second', { timeout: 60000 }, async (t) => {
  const prefix = uniquePrefix()
  const { apps: [observer] } = await instances(t, 1, () => onCluster(prefix, { onlineTtl: 30 }))
  assert.ok(observer !== undefined)
  for (let round = 0; round < 3; round++) {
    const { apps: [fresh] } = await instances(t, 1, () => onCluster(prefix, { onlineTtl: 30 }))
    assert.ok(fresh !== undefined)
    const rooms = await roomsOnEveryShard(`fresh-${round}-`)
    for (const room of rooms) await member(t, fresh, `user-${round}`, room)
    // Not the refresh a third of onlineTtl later (10 s): the first writes themselves, or their retry (about a
    // second; two allowed for busy cores).
    for (const room of rooms) await eventually(async () => await observer.app.realtime.roomSize(room) === 1, `roomSize(${room}) in round ${round}`, 2000)
    await eventually(async () => await observer.app.realtime.online(`user-${round}`), `online(user-${round})`, 2000)
  }
})

redisTest('the fallback on the cluster: a batch POSTed to another instance reaches the session\'s owner over its shard channel (sharded and classic pub/sub)', { timeout: 30000 }, async (t) => {
  for (const sharded of [true, false]) {
    const prefix = uniquePrefix()
    const apps: TestApp[] = []
    for (let i = 0; i < 2; i++) {
      apps.push(await startApp({
        jwt: false,
        fastify: { forceCloseConnections: true },
        realtime: { auth: { authenticate: (request) => ({ sub: String(request.headers['x-user']) }) }, broker: redisBroker(onCluster(prefix, { sharded })), fallback: true },
        setup: (app) => { app.realtimeRoute({ url: '/rt', messages: { echo: { schema: Type.Unknown(), handler: (data, conn) => ({ data, user: conn.userId }) } } }) }
      }))
    }
    const [a, b] = apps as [TestApp, TestApp]
    const stream = await StreamClient.open(`${a.httpBase}/rt`, { headers: { 'x-user': 'ann' }, postBase: b.httpBase })
    try {
      assert.deepEqual(await stream.request('echo', sharded, { headers: { 'x-user': 'ann' } }), { type: 'reply', id: 1, data: { data: sharded, user: 'ann' } })
      const other = await stream.send([JSON.stringify({ type: 'echo', data: 0 })], { headers: { 'x-user': 'eve' } })
      assert.equal(other.status, 403)
    } finally {
      stream.abort()
      await Promise.all(apps.map(async (h) => { await h.close() }))
    }
  }
})
