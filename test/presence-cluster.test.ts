// The Redis presence store on a real Redis Cluster of the test's own (3 masters, 1 replica each): every script of a
// room runs on the slot of its `{room}` tag, diffs travel on the room's shard channel, the reaper's sorted sets
// share the `{pr}` slot.
import { after, before } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster } from 'ioredis'
import { redisBroker } from '../lib/redis.js'
import { presenceApp, presenceClient, sleep, type PresenceClient } from './helpers/presence.js'
import { waitFor } from './helpers/client.js'
import { redisTest, uniquePrefix } from './helpers/redis.js'
import { startRedisCluster, type TestRedisCluster } from './helpers/redis-cluster.js'
import type { TestApp } from './helpers/app.js'

let cluster: TestRedisCluster
before(async () => { cluster = await startRedisCluster() }, { timeout: 60_000 })
after(async () => { await cluster?.stop() })

redisTest('cluster: join, update and leave across two instances on rooms of different shards; a closed instance\'s member is reaped', { timeout: 40000 }, async (t) => {
  const prefix = uniquePrefix()
  const ttl = 900
  const apps: TestApp[] = []
  for (let i = 0; i < 2; i++) apps.push(await presenceApp({ ttl, leaveDelay: 100, shutdownGrace: 100 }, { broker: redisBroker({ cluster: { nodes: cluster.nodes }, prefix }) }))
  const [a, b] = apps as [TestApp, TestApp]
  const pcs: PresenceClient[] = []
  t.after(async () => { for (const c of pcs) c.destroy(); for (const h of apps) await h.close().catch(() => {}) })
  const admin = new Cluster(cluster.nodes)
  t.after(() => { admin.disconnect() })
  // A cluster just formed may still refuse a few commands while its nodes converge: wait for one full round trip.
  const probe = await presenceClient(a, 'probe')
  pcs.push(probe)
  await probe.call('join', { room: 'p:warm' })
  for (let i = 0; ; i++) {
    if (await b.app.realtime.presence('p:warm').count().catch(() => 0) === 1) break
    if (i > 60) throw new Error('the cluster never answered')
    await sleep(250)
  }
  const rooms = ['p:a', 'p:b', 'p:c', 'p:d', 'p:e', 'p:f']
  const slots = new Set(await Promise.all(rooms.map(async (r) => await admin.cluster('KEYSLOT', `${prefix}pr:{${r}}`))))
  assert.ok(slots.size > 1)
  for (const room of rooms) {
    const w = await presenceClient(b, `w-${room}`)
    const m = await presenceClient(a, `m-${room}`)
    pcs.push(w, m)
    await w.call('join', { room, watch: true })
    await waitFor(() => w.snapshots(room).length >= 1, 15000, 'the watchers\' snapshots')
    await waitFor(() => w.snapshots(room).length === 1, 10000)
    await m.call('join', { room, data: 1 })
    await m.call('update', { room, data: 2 })
    await m.call('leave', { room })
    await waitFor(() => w.events(room).length === 3, 5000, room)
    assert.deepEqual(w.events(room), [`join:m-${room}`, `update:m-${room}`, `leave:m-${room}`])
    assert.equal(await b.app.realtime.presence(room).count(), 0)
  }
  // A member on A when A closes (no one comes back): B's reaper releases it once.
  const w = await presenceClient(b, 'w')
  const m = await presenceClient(a, 'gone')
  pcs.push(w, m)
  await w.call('join', { room: 'p:a', watch: true })
  await waitFor(() => w.snapshots('p:a').length >= 1, 15000, 'the watchers\' snapshots')
  await waitFor(() => w.snapshots('p:a').length === 1, 10000)
  await m.call('join', { room: 'p:a' })
  // A loaded machine and a cluster still settling can take seconds over the diff's way round: bounded, not tight.
  await waitFor(() => w.events('p:a').length === 1, 10000, 'the join diff')
  await a.close()
  await waitFor(() => w.events('p:a').length === 2, 4 * ttl + 3000, 'the reaped leave')
  await sleep(ttl)
  assert.deepEqual(w.events('p:a'), ['join:gone', 'leave:gone'])
  assert.deepEqual(await b.app.realtime.presence('p:a').list(), new Map())
})
