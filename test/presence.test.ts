import { test } from 'node:test'
import assert from 'node:assert/strict'
import { presenceApp, presenceClient, sleep, type PresenceClient } from './helpers/presence.js'
import { waitFor } from './helpers/client.js'
import type { TestApp } from './helpers/app.js'

function cleanup (t: { after: (fn: () => Promise<void>) => void }, apps: TestApp[], clients: PresenceClient[]): void {
  t.after(async () => {
    for (const c of clients) c.destroy()
    for (const h of apps) await h.close()
  })
}

test('snapshot after the join, then versioned diffs; list() and count() on the server', { timeout: 10000 }, async (t) => {
  const h = await presenceApp()
  const clients: PresenceClient[] = []
  cleanup(t, [h], clients)
  const a = await presenceClient(h, 'alice')
  const b = await presenceClient(h, 'bob')
  clients.push(a, b)
  assert.equal((await a.call('join', { room: 'p:1', data: { name: 'Alice' } })).type, 'reply')
  await waitFor(() => a.snapshots('p:1').length === 1)
  const first = a.snapshots('p:1')[0]
  assert.deepEqual(first.members, { alice: { data: { name: 'Alice' } } })
  await b.call('join', { room: 'p:1' })
  await waitFor(() => b.snapshots('p:1').length === 1 && a.events('p:1').length === 1)
  const second = b.snapshots('p:1')[0]
  assert.deepEqual(second.members, { alice: { data: { name: 'Alice' } }, bob: { data: null } })
  const diff = a.frames.find((f) => f.type === 'rt.presence.diff')
  assert.equal(typeof second.epoch, 'string')
  assert.equal(first.epoch, second.epoch)
  assert.deepEqual(diff, { type: 'rt.presence.diff', data: { room: 'p:1', v: second.v, epoch: second.epoch, joins: { bob: { data: null } }, leaves: [], updates: {} } })
  assert.ok(second.v > first.v)
  assert.deepEqual(await h.app.realtime.presence('p:1').list(), new Map<string, unknown>([['alice', { name: 'Alice' }], ['bob', null]]))
  assert.equal(await h.app.realtime.presence('p:1').count(), 2)
  assert.throws(() => h.app.realtime.presence('plain'), /keeps no presence/)
  // Rooms without presence send nothing of it.
  await a.call('join', { room: 'plain' })
  await sleep(50)
  assert.equal(a.frames.filter((f) => f.data?.room === 'plain').length, 0)
})

test('edge case 20 (multi-tab): one join for two tabs, no leave when one closes, one leave after leaveDelay for the last', { timeout: 10000 }, async (t) => {
  const h = await presenceApp({ leaveDelay: 300 })
  const clients: PresenceClient[] = []
  cleanup(t, [h], clients)
  const watcher = await presenceClient(h, 'w')
  const tab1 = await presenceClient(h, 'alice')
  const tab2 = await presenceClient(h, 'alice')
  clients.push(watcher, tab1, tab2)
  await watcher.call('join', { room: 'p:tabs', watch: true })
  await tab1.call('join', { room: 'p:tabs' })
  await tab2.call('join', { room: 'p:tabs' })
  await waitFor(() => tab2.snapshots('p:tabs').length === 1)
  assert.deepEqual(watcher.events('p:tabs'), ['join:alice'])
  tab1.destroy()
  await sleep(600)
  assert.deepEqual(watcher.events('p:tabs'), ['join:alice'])
  const closedAt = Date.now()
  tab2.destroy()
  await waitFor(() => watcher.events('p:tabs').length === 2, 3000)
  assert.ok(Date.now() - closedAt >= 250, 'the leave waited for leaveDelay')
  assert.deepEqual(watcher.events('p:tabs'), ['join:alice', 'leave:alice'])
  assert.equal(await h.app.realtime.presence('p:tabs').count(), 0)
  // The watcher is in the room but not in the list.
  assert.deepEqual(watcher.snapshots('p:tabs')[0].members, {})
})

test('edge case 21 (flap, same instance): a reconnect within leaveDelay fires no leave and no join; an explicit leave is immediate', { timeout: 10000 }, async (t) => {
  const h = await presenceApp({ leaveDelay: 400 })
  const clients: PresenceClient[] = []
  cleanup(t, [h], clients)
  const watcher = await presenceClient(h, 'w')
  const a1 = await presenceClient(h, 'alice')
  clients.push(watcher, a1)
  await watcher.call('join', { room: 'p:flap', watch: true })
  await a1.call('join', { room: 'p:flap' })
  await waitFor(() => watcher.events('p:flap').length === 1)
  a1.destroy()
  await sleep(100)
  const a2 = await presenceClient(h, 'alice')
  clients.push(a2)
  await a2.call('join', { room: 'p:flap' })
  await sleep(700)
  assert.deepEqual(watcher.events('p:flap'), ['join:alice'])
  await a2.call('leave', { room: 'p:flap' })
  await waitFor(() => watcher.events('p:flap').length === 2, 200, 'an immediate leave')
  assert.deepEqual(watcher.events('p:flap'), ['join:alice', 'leave:alice'])
})

test('edge case 26 (data and limits): update delivered, data over maxDataBytes is VALIDATION_FAILED, past maxMembers PRESENCE_FULL and room delivery still works', { timeout: 10000 }, async (t) => {
  const h = await presenceApp({ maxDataBytes: 32, maxMembers: 2 })
  const clients: PresenceClient[] = []
  cleanup(t, [h], clients)
  const a = await presenceClient(h, 'a')
  const b = await presenceClient(h, 'b')
  const c = await presenceClient(h, 'c')
  clients.push(a, b, c)
  const big = await a.call('join', { room: 'p:lim', data: 'x'.repeat(40) })
  assert.equal(big.type, 'error')
  assert.equal(big.error.code, 'VALIDATION_FAILED')
  assert.equal(big.error.details[0].path, '/presence/data')
  await sleep(50)
  assert.equal(a.snapshots('p:lim').length, 0, 'not joined')
  assert.deepEqual(await a.call('join', { room: 'p:lim', data: 1 }), { type: 'reply', id: 2, data: 'member' })
  assert.deepEqual(await b.call('join', { room: 'p:lim' }), { type: 'reply', id: 1, data: 'member' })
  await waitFor(() => a.events('p:lim').length === 1)
  assert.equal((await b.call('update', { room: 'p:lim', data: { typing: true } })).type, 'reply')
  await waitFor(() => a.events('p:lim').length === 2)
  assert.deepEqual(a.frames.at(-1).data.updates, { b: { data: { typing: true } } })
  // The same data again changes nothing.
  await b.call('update', { room: 'p:lim', data: { typing: true } })
  const tooBig = await b.call('update', { room: 'p:lim', data: 'y'.repeat(40) })
  assert.equal(tooBig.error.code, 'VALIDATION_FAILED')
  // An update of a room the connection never joined says what happened, not "invalid".
  const elsewhere = await b.call('update', { room: 'p:other', data: 1 })
  assert.equal(elsewhere.error.code, 'NOT_IN_ROOM')
  assert.deepEqual(elsewhere.error.details, { room: 'p:other' })

  // The handler learns it from what conn.join resolves with; the client also gets the error envelope.
  assert.deepEqual(await c.call('join', { room: 'p:lim' }), { type: 'reply', id: 1, data: 'full' })
  assert.deepEqual(await c.call('join', { room: 'p:watch', watch: true }), { type: 'reply', id: 2, data: 'watching' })
  await waitFor(() => c.frames.some((f) => f.type === 'error') && c.snapshots('p:lim').length === 1)
  const full = c.frames.find((f) => f.type === 'error')
  assert.equal(full.error.code, 'PRESENCE_FULL')
  assert.deepEqual(full.error.details, { room: 'p:lim' })
  assert.deepEqual(Object.keys(c.snapshots('p:lim')[0].members).sort(), ['a', 'b'])
  await a.call('say', { room: 'p:lim', n: 7 })
  await waitFor(() => c.frames.some((f) => f.type === 'said' && f.data.n === 7))
  assert.equal(await h.app.realtime.presence('p:lim').count(), 2)
  assert.deepEqual(a.events('p:lim'), ['join:b', 'update:b'])
})

test('item 3 (memory): after everyone left, presence holds nothing for the room (no version re-created by a late diff)', { timeout: 10000 }, async (t) => {
  const h = await presenceApp({ leaveDelay: 100 })
  const clients: PresenceClient[] = []
  cleanup(t, [h], clients)
  const presence = (h.app.realtime as any).roomPresence
  /** Every per-room structure of presence on the instance, summed. */
  const held = (): number => {
    let n = 0
    for (const value of Object.values(presence)) if (value instanceof Map || (typeof value === 'object' && value !== null && typeof (value as any).size === 'number' && Symbol.iterator in value)) n += (value as any).size
    return n
  }
  const baseline = held()
  for (let i = 0; i < 20; i++) {
    const [w, m] = [await presenceClient(h, `w${i}`), await presenceClient(h, `m${i}`)]
    clients.push(w, m)
    await w.call('join', { room: `p:gone:${i}`, watch: true })
    await m.call('join', { room: `p:gone:${i}` })
    await waitFor(() => w.events(`p:gone:${i}`).length === 1)
    // The member's leave (a diff, after leaveDelay) comes when the watcher is gone.
    m.destroy()
    await sleep(20)
    w.destroy()
  }
  await sleep(300)
  await waitFor(() => held() === baseline, 3000, 'presence to hold nothing for the rooms')
  assert.equal(held(), baseline)
})

test('events: false keeps the list and the count, and sends no presence frames', { timeout: 10000 }, async (t) => {
  const h = await presenceApp({ events: false })
  const clients: PresenceClient[] = []
  cleanup(t, [h], clients)
  const a = await presenceClient(h, 'a')
  const b = await presenceClient(h, 'b')
  clients.push(a, b)
  await a.call('join', { room: 'p:quiet' })
  await b.call('join', { room: 'p:quiet', data: 'hi' })
  await sleep(100)
  assert.deepEqual(await h.app.realtime.presence('p:quiet').list(), new Map<string, unknown>([['a', null], ['b', 'hi']]))
  assert.equal([...a.frames, ...b.frames].filter((f) => f.type.startsWith('rt.presence')).length, 0)
})

test('presence options are checked at registration: a misspelt key, a bad number, no rooms', { timeout: 10000 }, async () => {
  const Fastify = (await import('fastify')).default
  const realtime = (await import('../lib/index.js')).default
  for (const [presence, message] of [
    [{ rooms: ['a'], leavDelay: 1 }, /presence\.leavDelay: unknown option \(did you mean "leaveDelay"\?\)/],
    [{ rooms: ['a'], ttl: -1 }, /presence\.ttl: expected a positive number/],
    [{ ttl: 1000 }, /presence\.rooms: expected a list of rooms/]
  ] as const) {
    const app = Fastify()
    await assert.rejects(async () => { await app.register(realtime, { auth: false, presence: presence as any }); await app.ready() }, message)
    await app.close().catch(() => {})
  }
})
