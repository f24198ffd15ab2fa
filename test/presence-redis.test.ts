// Presence across instances on a real Redis: edge cases 20-24 and 27 of research/recovery.md section 4, with a short
// ttl and leaveDelay. Each test has its own key prefix on the shared Redis (nothing destructive is done to it).
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { redisBroker } from '../lib/redis.js'
import { PresenceViews } from '../lib/client/presence.js'
import type { PresenceOptions } from '../lib/presence/options.js'
import { presenceApp, presenceClient, sleep, type PresenceClient } from './helpers/presence.js'
import { waitFor } from './helpers/client.js'
import { REDIS_URL, RedisProxy, redisTest, uniquePrefix } from './helpers/redis.js'
import type { TestApp } from './helpers/app.js'

type Cleanup = { after: (fn: () => Promise<void>) => void }

async function instances (t: Cleanup, count: number, presence: Partial<PresenceOptions>, url = REDIS_URL, prefix = uniquePrefix()): Promise<TestApp[]> {
  const apps: TestApp[] = []
  for (let i = 0; i < count; i++) apps.push(await presenceApp(presence, { broker: redisBroker({ url, prefix }) }))
  t.after(async () => { for (const h of apps) await h.close().catch(() => {}) })
  return apps
}

async function clients (t: Cleanup, pairs: Array<[TestApp, string]>): Promise<PresenceClient[]> {
  const out = await Promise.all(pairs.map(async ([h, user]) => await presenceClient(h, user)))
  t.after(async () => { for (const c of out) c.destroy() })
  return out
}

/** The member list a client holds after applying its frames as the typed client does. */
function view (c: PresenceClient, room: string): string[] {
  const views = new PresenceViews()
  for (const f of c.frames) if (f.type === 'rt.presence' || f.type === 'rt.presence.diff') views.receive(f.type, f.data)
  return [...views.get(room).members.keys()].sort()
}

redisTest('edge case 20 (multi-tab, across instances): the same user on two instances joins once and leaves once, after the last', { timeout: 15000 }, async (t) => {
  const [a, b] = await instances(t, 2, { leaveDelay: 200 }) as [TestApp, TestApp]
  const [w, tabA, tabB] = await clients(t, [[b, 'w'], [a, 'alice'], [b, 'alice']]) as [PresenceClient, PresenceClient, PresenceClient]
  await w.call('join', { room: 'p:mt', watch: true })
  await waitFor(() => w.snapshots('p:mt').length >= 1, 15000, 'the watchers\' snapshots')
  await tabA.call('join', { room: 'p:mt' })
  await tabB.call('join', { room: 'p:mt' })
  await waitFor(() => tabB.snapshots('p:mt').length === 1)
  await sleep(100)
  assert.deepEqual(w.events('p:mt'), ['join:alice'])
  tabA.destroy()
  await sleep(500)
  assert.deepEqual(w.events('p:mt'), ['join:alice'])
  tabB.destroy()
  await waitFor(() => w.events('p:mt').length === 2, 3000)
  await sleep(200)
  assert.deepEqual(w.events('p:mt'), ['join:alice', 'leave:alice'])
  assert.equal(await a.app.realtime.presence('p:mt').count(), 0)
})

redisTest('edge case 21 (flap to another instance): closed on A, back on B within leaveDelay: no leave, no join', { timeout: 15000 }, async (t) => {
  const [a, b] = await instances(t, 2, { leaveDelay: 500 }) as [TestApp, TestApp]
  const [w, onA] = await clients(t, [[a, 'w'], [a, 'alice']]) as [PresenceClient, PresenceClient]
  await w.call('join', { room: 'p:flap', watch: true })
  await waitFor(() => w.snapshots('p:flap').length >= 1, 15000, 'the watchers\' snapshots')
  await onA.call('join', { room: 'p:flap', data: { v: 1 } })
  await waitFor(() => w.events('p:flap').length === 1)
  onA.destroy()
  await sleep(100)
  const [onB] = await clients(t, [[b, 'alice']]) as [PresenceClient]
  await onB.call('join', { room: 'p:flap', data: { v: 1 } })
  await sleep(900)
  assert.deepEqual(w.events('p:flap'), ['join:alice'])
  assert.deepEqual([...(await b.app.realtime.presence('p:flap').list()).keys()], ['alice'])
  assert.deepEqual(view(onB, 'p:flap'), ['alice'])
})

redisTest('edge case 22 (SIGKILL one of 3 instances): each of its members leaves exactly once within ttl + ttl/3, on every survivor; lists agree', { timeout: 30000 }, async (t) => {
  const ttl = 900
  const prefix = uniquePrefix()
  const [a, b] = await instances(t, 2, { ttl, leaveDelay: 200 }, REDIS_URL, prefix) as [TestApp, TestApp]
  const [wA, wB, shared] = await clients(t, [[a, 'wa'], [b, 'wb'], [b, 'shared']]) as [PresenceClient, PresenceClient, PresenceClient]
  await wA.call('join', { room: 'p:kill', watch: true })
  await wB.call('join', { room: 'p:kill', watch: true })
  await waitFor(() => wA.snapshots('p:kill').length >= 1 && wB.snapshots('p:kill').length >= 1, 15000, 'the watchers\' snapshots')
  await shared.call('join', { room: 'p:kill' })
  const child = fork(new URL('./helpers/presence-instance.ts', import.meta.url), [REDIS_URL, prefix, 'p:kill', String(ttl), 'u1,u2,u3,shared'],
    { execArgv: ['--import', 'tsx'], stdio: 'inherit' })
  t.after(() => { child.kill('SIGKILL') })
  await once(child, 'message')
  await waitFor(() => wA.events('p:kill').length === 4 && wB.events('p:kill').length === 4, 5000, 'the joins')
  child.kill('SIGKILL')
  await once(child, 'exit')
  const killedAt = Date.now()
  await waitFor(() => wA.events('p:kill').length === 7 && wB.events('p:kill').length === 7, 4 * ttl + 3000, 'the leaves')
  const took = Date.now() - killedAt
  // Long enough for a second reaper (or a second pass) to have fired a duplicate.
  await sleep(ttl * 2)
  for (const w of [wA, wB]) {
    assert.deepEqual(w.events('p:kill').slice(0, 4).sort(), ['join:shared', 'join:u1', 'join:u2', 'join:u3'])
    assert.deepEqual(w.events('p:kill').slice(4).sort(), ['leave:u1', 'leave:u2', 'leave:u3'])
  }
  assert.ok(took <= ttl + ttl / 3 + 1500, `the leaves took ${took} ms`)
  const listA = await a.app.realtime.presence('p:kill').list()
  const listB = await b.app.realtime.presence('p:kill').list()
  assert.deepEqual([...listA.keys()], ['shared'])
  assert.deepEqual(listB, listA)
  assert.deepEqual(view(wA, 'p:kill'), ['shared'])
  assert.deepEqual(view(wB, 'p:kill'), ['shared'])
})

redisTest('edge case 23 (zombie): an instance cut off from Redis past ttl is reaped (leave), and puts its members back when it returns (join)', { timeout: 30000 }, async (t) => {
  const ttl = 900
  const prefix = uniquePrefix()
  const proxy = new RedisProxy()
  const url = await proxy.start()
  t.after(async () => { await proxy.cut() })
  const [zombie] = await instances(t, 1, { ttl, leaveDelay: 200 }, url, prefix) as [TestApp]
  const [other] = await instances(t, 1, { ttl, leaveDelay: 200 }, REDIS_URL, prefix) as [TestApp]
  const [w, alice] = await clients(t, [[other, 'w'], [zombie, 'alice']]) as [PresenceClient, PresenceClient]
  await w.call('join', { room: 'p:z', watch: true })
  await waitFor(() => w.snapshots('p:z').length >= 1, 15000, 'the watchers\' snapshots')
  await alice.call('join', { room: 'p:z', data: 'hi' })
  await waitFor(() => w.events('p:z').length === 1)
  await proxy.cut()
  await waitFor(() => w.events('p:z').length === 2, 4 * ttl + 3000, 'the reaper\'s leave')
  assert.deepEqual(w.events('p:z'), ['join:alice', 'leave:alice'])
  await proxy.restore()
  await waitFor(() => w.events('p:z').length === 3, 10000, 'the zombie\'s join')
  await sleep(ttl)
  assert.deepEqual(w.events('p:z'), ['join:alice', 'leave:alice', 'join:alice'])
  assert.deepEqual(await other.app.realtime.presence('p:z').list(), new Map([['alice', 'hi']]))
  assert.deepEqual(view(w, 'p:z'), ['alice'])
  // The zombie's own member got a fresh snapshot and agrees.
  await waitFor(() => view(alice, 'p:z').length === 1)
  // It is a live instance again: cut off a second time, it is reaped again.
  await proxy.cut()
  await waitFor(() => w.events('p:z').length === 4, 4 * ttl + 3000, 'the second reap')
  assert.deepEqual(w.events('p:z'), ['join:alice', 'leave:alice', 'join:alice', 'leave:alice'])
  await proxy.restore()
})

redisTest('edge case 24 (state/diff race): a member leaves while another joins on another instance, 20 times: no ghost in the joiner\'s list', { timeout: 30000 }, async (t) => {
  const [a, b] = await instances(t, 2, { leaveDelay: 0 }) as [TestApp, TestApp]
  for (let i = 0; i < 20; i++) {
    const room = `p:race:${i}`
    const [leaver, joiner] = await clients(t, [[a, `l${i}`], [b, `j${i}`]]) as [PresenceClient, PresenceClient]
    await leaver.call('join', { room })
    const leaving = leaver.call('leave', { room })
    await joiner.call('join', { room })
    await leaving
    await waitFor(() => view(joiner, room).length === 1 && joiner.snapshots(room).length === 1, 3000, `round ${i}`)
    await sleep(20)
    assert.deepEqual(view(joiner, room), [`j${i}`], `round ${i}`)
    // Diffs the snapshot already held were not sent after it.
    const snapshot = joiner.snapshots(room)[0]
    const after = joiner.frames.slice(joiner.frames.findIndex((f) => f.type === 'rt.presence'))
    for (const f of after) if (f.type === 'rt.presence.diff') assert.ok(f.data.v > snapshot.v)
  }
})

redisTest('edge case 27 (rolling deploy): an instance closes gracefully, its clients move within shutdownGrace: no leave, no join; one that does not come back leaves once', { timeout: 30000 }, async (t) => {
  const ttl = 900
  const [a, b] = await instances(t, 2, { ttl, leaveDelay: 200, shutdownGrace: 1500 }) as [TestApp, TestApp]
  const [w, m1, m2, gone] = await clients(t, [[b, 'w'], [a, 'm1'], [a, 'm2'], [a, 'gone']]) as PresenceClient[] as [PresenceClient, PresenceClient, PresenceClient, PresenceClient]
  await w.call('join', { room: 'p:deploy', watch: true })
  await waitFor(() => w.snapshots('p:deploy').length >= 1, 15000, 'the watchers\' snapshots')
  for (const c of [m1, m2, gone]) await c.call('join', { room: 'p:deploy' })
  await waitFor(() => w.events('p:deploy').length === 3)
  const closed = Promise.all([m1, m2].map(async (c) => await c.c.closed))
  const closing = a.close()
  assert.deepEqual((await closed).map((c) => c.code), [1001, 1001])
  const [m1b, m2b] = await clients(t, [[b, 'm1'], [b, 'm2']]) as [PresenceClient, PresenceClient]
  await m1b.call('join', { room: 'p:deploy' })
  await m2b.call('join', { room: 'p:deploy' })
  await closing
  await waitFor(() => w.events('p:deploy').length === 4, 1500 + ttl * 3 + 2000, 'the leave of the one that did not come back')
  await sleep(ttl)
  assert.deepEqual(w.events('p:deploy'), ['join:m1', 'join:m2', 'join:gone', 'leave:gone'])
  assert.deepEqual([...(await b.app.realtime.presence('p:deploy').list()).keys()].sort(), ['m1', 'm2'])
})
