// Presence under faults (issue 19): each test injects one fault on a real Redis (a cut or stalled TCP proxy, a lost
// room hash, a dead instance with many rooms, a slow reply) and checks the guarantee docs/06-presence.md states for it.
import assert from 'node:assert/strict'
import net from 'node:net'
import { Redis } from 'ioredis'
import { Type } from '@sinclair/typebox'
import { redisBroker } from '../lib/redis.js'
import { PresenceViews } from '../lib/client/presence.js'
import type { PresenceOptions } from '../lib/presence/options.js'
import { hashTag } from '../lib/redis-tag.js'
import { presenceApp, presenceClient, sleep, type PresenceClient } from './helpers/presence.js'
import { connect, waitFor } from './helpers/client.js'
import { REDIS_URL, RedisProxy, redisTest, uniquePrefix } from './helpers/redis.js'
import { startApp, type TestApp } from './helpers/app.js'

type Cleanup = { after: (fn: () => Promise<void> | void) => void }

async function instance (t: Cleanup, presence: Partial<PresenceOptions>, prefix: string, url = REDIS_URL): Promise<TestApp> {
  const h = await presenceApp(presence, { broker: redisBroker({ url, prefix }) })
  t.after(async () => { await h.close().catch(() => {}) })
  return h
}

async function clients (t: Cleanup, pairs: Array<[TestApp, string]>): Promise<PresenceClient[]> {
  const out = await Promise.all(pairs.map(async ([h, user]) => await presenceClient(h, user)))
  t.after(() => { for (const c of out) c.destroy() })
  return out
}

/** A Redis connection of the test's own that deletes the prefix's keys afterwards. */
async function admin (t: Cleanup, prefix: string): Promise<Redis> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
  t.after(async () => {
    for (const key of await keysOf(redis, prefix)) await redis.unlink(key)
    redis.disconnect()
  })
  return redis
}

async function keysOf (redis: Redis, prefix: string): Promise<string[]> {
  const out: string[] = []
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    out.push(...keys)
  } while (cursor !== '0')
  return out
}

/** A fresh key prefix (its keys deleted afterwards) and a proxy in front of Redis to cut or stall, undone afterwards. */
async function proxied (t: Cleanup): Promise<{ prefix: string, proxy: RedisProxy, url: string }> {
  const prefix = uniquePrefix()
  await admin(t, prefix)
  const proxy = new RedisProxy()
  const url = await proxy.start()
  t.after(async () => { proxy.resume(); await proxy.cut() })
  return { prefix, proxy, url }
}

/** The client-side view of a raw client's frames, with the events the typed client would fire. */
function replay (c: PresenceClient, room: string): { members: string[], events: string[] } {
  const views = new PresenceViews()
  const events: string[] = []
  const view = views.get(room)
  view.on('join', ({ key }) => events.push(`join:${key}`))
  view.on('leave', ({ key }) => events.push(`leave:${key}`))
  for (const f of c.frames) if (f.type === 'rt.presence' || f.type === 'rt.presence.diff') views.receive(f.type, f.data)
  return { members: [...view.members.keys()].sort(), events }
}

const listOf = async (h: TestApp, room: string): Promise<string[]> => [...(await h.app.realtime.presence(room).list()).keys()].sort()

async function eventually (check: () => Promise<boolean>, timeout: number, what: string): Promise<void> {
  const start = Date.now()
  while (!(await check())) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/**
 * A proxy in front of Redis whose replies to a connection that sent an HGETALL are held back for `delay` ms once
 * armed: a snapshot's read that comes back after diffs published later (on the subscriber's own connection).
 */
class SlowReadProxy {
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()
  armed = false
  delay = 600

  async start (): Promise<string> {
    const target = new URL(REDIS_URL)
    this.server = net.createServer((client) => {
      const upstream = net.connect(Number(target.port || 6379), target.hostname)
      let holdUntil = 0
      let held: Buffer[] = []
      for (const s of [client, upstream]) {
        this.sockets.add(s)
        s.on('error', () => {})
        s.on('close', () => { this.sockets.delete(s); client.destroy(); upstream.destroy() })
      }
      client.on('data', (chunk: Buffer) => {
        if (this.armed && chunk.toString().toUpperCase().includes('HGETALL')) {
          this.armed = false
          holdUntil = Date.now() + this.delay
          setTimeout(() => {
            holdUntil = 0
            const out = held
            held = []
            for (const b of out) client.write(b)
          }, this.delay)
        }
        upstream.write(chunk)
      })
      upstream.on('data', (chunk: Buffer) => {
        if (holdUntil > 0 || held.length > 0) held.push(chunk)
        else client.write(chunk)
      })
    })
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve))
    return `redis://127.0.0.1:${(this.server?.address() as net.AddressInfo).port}`
  }

  async close (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => { if (this.server === undefined) resolve(); else this.server.close(() => { resolve() }) })
  }
}

redisTest('item 1 (ghost after a short outage): members that leave while Redis is away for less than ttl leave for everyone once it is back', { timeout: 30000 }, async (t) => {
  const { prefix, proxy, url } = await proxied(t)
  const ttl = 4000
  const a = await instance(t, { ttl, leaveDelay: 0 }, prefix, url)
  const b = await instance(t, { ttl, leaveDelay: 0 }, prefix)
  const [w, alice, bob, carol] = await clients(t, [[b, 'w'], [a, 'alice'], [a, 'bob'], [b, 'carol']]) as [PresenceClient, PresenceClient, PresenceClient, PresenceClient]
  await w.call('join', { room: 'p:ghost', watch: true })
  // The join's reply comes before its snapshot: a member joining earlier would be in it, and no diff would follow.
  await waitFor(() => w.snapshots('p:ghost').length === 1, 15000, 'the watcher\'s snapshot')
  for (const c of [alice, bob, carol]) await c.call('join', { room: 'p:ghost' })
  await waitFor(() => w.events('p:ghost').length === 3, 15000, 'the joins')
  await proxy.cut()
  // An explicit leave and a closed connection, both while the store cannot be told: A keeps no key of the room.
  await bob.call('leave', { room: 'p:ghost' })
  alice.destroy()
  await sleep(300)
  await proxy.restore()
  await waitFor(() => w.events('p:ghost').length === 5, 3 * ttl, 'the leaves after the outage')
  assert.deepEqual(w.events('p:ghost').slice(3).sort(), ['leave:alice', 'leave:bob'])
  assert.deepEqual(await listOf(b, 'p:ghost'), ['carol'])
  assert.deepEqual(replay(w, 'p:ghost').members, ['carol'])
})

redisTest('item 2 (reaping a big dead instance): 30,000 rooms are reaped while two live instances keep every member', { timeout: 90000 }, async (t) => {
  const prefix = uniquePrefix()
  const redis = await admin(t, prefix)
  const ttl = 900
  const a = await instance(t, { ttl, leaveDelay: 100 }, prefix)
  const b = await instance(t, { ttl, leaveDelay: 100 }, prefix)
  const [wA, wB, m1, m2] = await clients(t, [[a, 'wa'], [b, 'wb'], [a, 'm1'], [b, 'm2']]) as [PresenceClient, PresenceClient, PresenceClient, PresenceClient]
  await wA.call('join', { room: 'p:live', watch: true })
  await wB.call('join', { room: 'p:live', watch: true })
  // The join's reply comes before its snapshot: a member joining earlier would be in it, and no diff would follow.
  await waitFor(() => wA.snapshots('p:live').length === 1 && wB.snapshots('p:live').length === 1, 15000, 'the watchers\' snapshots')
  await m1.call('join', { room: 'p:live' })
  await m2.call('join', { room: 'p:live' })
  await waitFor(() => wA.events('p:live').length === 2 && wB.events('p:live').length === 2, 15000, 'the joins')
  // A dead instance (its deadline long past) that held one key in each of 30,000 rooms.
  const dead = 'dead-instance'
  const rooms = `${prefix}pr-rooms:${hashTag(dead)}`
  for (let start = 0; start < 30_000; start += 1000) {
    const pipe = redis.pipeline()
    const names: string[] = []
    for (let i = start; i < start + 1000; i++) {
      const room = `p:dead:${i}`
      names.push(room)
      pipe.hset(`${prefix}pr:${hashTag(room)}`, 'v', 1, 'n', 1, 'm:k', 'null', 'h:k', 1, `i:${dead}:k`, 1)
    }
    pipe.sadd(rooms, ...names)
    await pipe.exec()
  }
  await redis.zadd(`${prefix}pr-inst:{pr}`, 1, dead)
  await eventually(async () => await redis.exists(rooms) === 0, 60000, 'the dead instance reaped')
  await sleep(2 * ttl)
  // m1 and m2 joined on different instances: their enters may reach Redis in either order. No leave, no re-join.
  assert.deepEqual([...wA.events('p:live')].sort(), ['join:m1', 'join:m2'])
  assert.deepEqual([...wB.events('p:live')].sort(), ['join:m1', 'join:m2'])
  assert.deepEqual(await listOf(a, 'p:live'), ['m1', 'm2'])
  assert.equal(await redis.exists(`${prefix}pr:${hashTag('p:dead:29999')}`, `${prefix}pr:${hashTag('p:dead:0')}`), 2, 'emptied rooms keep their version for a while')
  assert.equal(await redis.hget(`${prefix}pr:${hashTag('p:dead:0')}`, 'n'), '0')
})

redisTest('item 3 (a lost room hash): after its hash is deleted under connected members, a join reaches them and the members are put back', { timeout: 30000 }, async (t) => {
  const prefix = uniquePrefix()
  const redis = await admin(t, prefix)
  const a = await instance(t, { leaveDelay: 100 }, prefix)
  const b = await instance(t, { leaveDelay: 100 }, prefix)
  const [w, alice, bob] = await clients(t, [[b, 'w'], [a, 'alice'], [b, 'bob']]) as [PresenceClient, PresenceClient, PresenceClient]
  await w.call('join', { room: 'p:lost', watch: true })
  // The join's reply comes before its snapshot: a member joining earlier would be in it, and no diff would follow.
  await waitFor(() => w.snapshots('p:lost').length === 1, 15000, 'the watcher\'s snapshot')
  await alice.call('join', { room: 'p:lost' })
  await bob.call('join', { room: 'p:lost' })
  await waitFor(() => w.events('p:lost').length === 2, 15000, 'the joins')
  // Redis lost the hash (a restart without persistence, a failover, an eviction, a flush): its version restarts.
  await redis.del(`${prefix}pr:${hashTag('p:lost')}`)
  const [carol] = await clients(t, [[a, 'carol']]) as [PresenceClient]
  await carol.call('join', { room: 'p:lost' })
  await waitFor(() => replay(w, 'p:lost').members.includes('carol'), 5000, 'the join after the loss')
  await eventually(async () => (await listOf(b, 'p:lost')).join() === 'alice,bob,carol', 5000, 'the members put back')
  await waitFor(() => replay(w, 'p:lost').members.join() === 'alice,bob,carol', 5000, 'the watcher\'s view')
  assert.deepEqual(replay(w, 'p:lost').events.filter((e) => e.startsWith('leave:')), [])
  for (const c of [alice, bob, carol]) await waitFor(() => replay(c, 'p:lost').members.join() === 'alice,bob,carol', 5000, 'a member\'s view')
})

redisTest('item 4 (resnapshot racing a diff): a snapshot whose read is slower than a later diff causes no false leave', { timeout: 30000 }, async (t) => {
  const prefix = uniquePrefix()
  await admin(t, prefix)
  const proxy = new SlowReadProxy()
  const url = await proxy.start()
  t.after(async () => { await proxy.close() })
  const a = await instance(t, { leaveDelay: 100 }, prefix, url)
  const b = await instance(t, { leaveDelay: 100 }, prefix)
  const [w, alice] = await clients(t, [[a, 'w'], [a, 'alice']]) as [PresenceClient, PresenceClient]
  await w.call('join', { room: 'p:rs', watch: true })
  // The join's reply comes before its snapshot: a member joining earlier would be in it, and no diff would follow.
  await waitFor(() => w.snapshots('p:rs').length === 1, 15000, 'the watcher\'s snapshot')
  await alice.call('join', { room: 'p:rs' })
  await waitFor(() => w.events('p:rs').length === 1, 5000, 'the join')
  for (let round = 0; round < 3; round++) {
    proxy.armed = true
    ;(a.app.realtime as any).roomPresence.resync()
    await sleep(100)
    const [bob] = await clients(t, [[b, `bob${round}`]]) as [PresenceClient]
    await bob.call('join', { room: 'p:rs' })
    await waitFor(() => w.events('p:rs').includes(`join:bob${round}`) && w.snapshots('p:rs').length === round + 2, 5000, `round ${round}`)
    await sleep(proxy.delay)
  }
  const seen = replay(w, 'p:rs')
  assert.deepEqual(seen.events.filter((e) => e.startsWith('leave:')), [])
  assert.deepEqual(seen.members, ['alice', 'bob0', 'bob1', 'bob2'])
  // The server itself never sends a snapshot older than a diff it already sent.
  let last = 0
  for (const f of w.frames) {
    if (f.type === 'rt.presence') assert.ok(f.data.v >= last, `snapshot v ${f.data.v} after diff v ${last}`)
    if (f.type === 'rt.presence.diff') last = f.data.v
  }
})

redisTest('item 7 (a stalled Redis): app.close() with presence finishes within its bound', { timeout: 40000 }, async (t) => {
  const { prefix, proxy, url } = await proxied(t)
  const a = await presenceApp({ ttl: 3000, leaveDelay: 100, shutdownGrace: 500 }, { broker: redisBroker({ url, prefix }), shutdown: { timeout: 2000 } })
  const [alice, bob] = await clients(t, [[a, 'alice'], [a, 'bob']]) as [PresenceClient, PresenceClient]
  await alice.call('join', { room: 'p:stall' })
  await bob.call('join', { room: 'p:stall' })
  await waitFor(() => alice.snapshots('p:stall').length === 1 && bob.snapshots('p:stall').length === 1, 5000, 'the snapshots')
  bob.destroy()
  proxy.stall()
  const started = Date.now()
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([
    a.close().then(() => true, () => true),
    new Promise<boolean>((resolve) => { timer = setTimeout(resolve, 25000, false) })
  ])
  clearTimeout(timer)
  assert.ok(closed, `app.close() still waiting after ${Date.now() - started} ms`)
})

redisTest('item 12 (keys left behind): after every instance shut down cleanly, every key of the prefix has a TTL', { timeout: 30000 }, async (t) => {
  const prefix = uniquePrefix()
  const redis = await admin(t, prefix)
  const a = await presenceApp({ ttl: 900, leaveDelay: 100, shutdownGrace: 300 }, { broker: redisBroker({ url: REDIS_URL, prefix }) })
  const b = await presenceApp({ ttl: 900, leaveDelay: 100, shutdownGrace: 0 }, { broker: redisBroker({ url: REDIS_URL, prefix }) })
  t.after(async () => { await a.close().catch(() => {}); await b.close().catch(() => {}) })
  const cs = await clients(t, [[a, 'u1'], [a, 'u2'], [b, 'u3'], [b, 'u1']])
  for (const [i, c] of cs.entries()) {
    await c.call('join', { room: `p:keys:${i % 2}` })
    await c.call('join', { room: `p:keys:only${i}` })
  }
  await cs[0]?.call('leave', { room: 'p:keys:only0' })
  await sleep(1000)
  await a.close()
  await b.close()
  const keys = await keysOf(redis, prefix)
  assert.ok(keys.length > 0)
  const lacking: string[] = []
  for (const key of keys) if (await redis.pttl(key) === -1) lacking.push(key)
  assert.deepEqual(lacking, [])
})

redisTest('item 13 (a re-sync racing joins): joins while the store re-syncs the instance are never released', { timeout: 60000 }, async (t) => {
  const prefix = uniquePrefix()
  await admin(t, prefix)
  const a = await instance(t, { ttl: 3000, leaveDelay: 100 }, prefix)
  const b = await instance(t, { ttl: 3000, leaveDelay: 100 }, prefix)
  const [w] = await clients(t, [[b, 'w']]) as [PresenceClient]
  const store = (a.app.realtime as any).roomPresence.store
  for (let round = 0; round < 5; round++) {
    const rooms = Array.from({ length: 20 }, (_, i) => `p:r13:${round}:${i}`)
    for (const room of rooms) await w.call('join', { room, watch: true })
    const members = await clients(t, rooms.map((_, i) => [a, `m${round}-${i}`]))
    const state = { resyncing: true }
    const resyncs = (async () => { while (state.resyncing) { store.reconnected(); await sleep(2) } })()
    await Promise.all(members.map(async (c, i) => await c.call('join', { room: rooms[i] })))
    await sleep(300)
    state.resyncing = false
    await resyncs
    await sleep(500)
    for (const [i, room] of rooms.entries()) {
      assert.deepEqual(await listOf(b, room), [`m${round}-${i}`], `round ${round}, ${room}`)
      assert.deepEqual(w.events(room).filter((e) => e.startsWith('leave:')), [], `round ${round}, ${room}`)
    }
  }
})

redisTest('issue 22 item 10: conn.join says how presence went on Redis: member, full past maxMembers, unavailable while Redis stalls (entered once it answers)', { timeout: 40000 }, async (t) => {
  const { prefix, proxy, url } = await proxied(t)
  const a = await instance(t, { ttl: 3000, leaveDelay: 0, maxMembers: 2 }, prefix, url)
  const [alice, bob, carol, dave] = await clients(t, [[a, 'alice'], [a, 'bob'], [a, 'carol'], [a, 'dave']]) as [PresenceClient, PresenceClient, PresenceClient, PresenceClient]
  assert.equal((await alice.call('join', { room: 'p:outcome' })).data, 'member')
  assert.equal((await bob.call('join', { room: 'p:outcome' })).data, 'member')
  assert.equal((await carol.call('join', { room: 'p:outcome' })).data, 'full')
  assert.equal((await carol.call('join', { room: 'p:seen', watch: true })).data, 'watching')
  proxy.stall()
  const started = Date.now()
  // The store call's deadline is ttl / 3 (at least 1 s): the handler hears `unavailable` then, not never.
  assert.equal((await dave.call('join', { room: 'p:later' }, 10000)).data, 'unavailable')
  assert.ok(Date.now() - started < 8000, `answered after ${Date.now() - started} ms`)
  proxy.resume()
  await eventually(async () => (await listOf(a, 'p:later').catch((): string[] => [])).includes('dave'), 15000, 'dave entered once Redis answers')
})

redisTest('issue 22 item 10: a connection that closes while its presence entry waits for a stalled Redis hears `left`, and holds nothing after', { timeout: 40000 }, async (t) => {
  const { prefix, proxy, url } = await proxied(t)
  const outcomes: Array<string | undefined> = []
  const h = await startApp({
    jwt: false,
    realtime: {
      auth: { authenticate: (request) => ({ sub: new URL(request.url, 'http://x').searchParams.get('user') ?? undefined }) },
      presence: { rooms: /^p:/, ttl: 3000, leaveDelay: 0 },
      broker: redisBroker({ url, prefix })
    },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: { join: { schema: Type.String(), handler: async (room, conn) => { outcomes.push((await conn.join(room))?.presence); return null } } }
      })
    }
  })
  t.after(async () => { await h.close().catch(() => {}) })
  const warm = await connect(`${h.wsBase}/rt?user=warm`)
  t.after(() => { warm.destroy() })
  assert.equal((await warm.request('join', 'p:warm')).type, 'reply')
  proxy.stall()
  const gone = await connect(`${h.wsBase}/rt?user=gone`)
  gone.sendJson({ type: 'join', data: 'p:race', id: 1 })
  await waitFor(() => h.app.realtime.roomMembers('p:race').size === 1, 5000, 'the join under way')
  gone.destroy()
  await waitFor(() => outcomes.length === 2, 15000, 'the join\'s outcome')
  assert.deepEqual(outcomes, ['member', 'left'])
  proxy.resume()
  // Nothing of the departed member is left, here or in Redis, once Redis answers again: the entry the stalled call
  // may still have made is taken back by the leave queued behind it (or by the repair), well within the ttl.
  await waitFor(() => h.app.realtime.stats().roomStates.presence <= 1, 15000, 'the race room released')
  await eventually(async () => (await h.app.realtime.presence('p:race').list()).size === 0, 9000, 'no ghost of the departed member')
})
