// The typed client's presence: client.presence(room) with its members Map and join/leave/update/sync events, diffs at
// or below the snapshot's v ignored, and the reconciliation after an outage.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import WebSocket from 'ws'
import { createClient, type RealtimeClient } from '../lib/client/index.js'
import { PresenceViews } from '../lib/client/presence.js'
import { presenceApp, presenceClient, sleep } from './helpers/presence.js'
import { waitFor } from './helpers/client.js'

type Any = RealtimeClient<any>

/** A TCP proxy in front of the app that a test can cut (every connection dropped, new ones refused) and restore. */
class Proxy {
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()
  port = 0
  constructor (private readonly target: number) {}
  async start (): Promise<void> {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.target, '127.0.0.1')
      for (const s of [client, upstream]) {
        this.sockets.add(s)
        s.on('error', () => {})
        s.on('close', () => { this.sockets.delete(s); client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve) => this.server?.listen(this.port, '127.0.0.1', resolve))
    this.port = (this.server.address() as net.AddressInfo).port
  }

  async cut (): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => { if (server === undefined) resolve(); else server.close(() => { resolve() }) })
  }
}

function events (c: Any, room: string): string[] {
  const out: string[] = []
  const view = c.presence(room)
  view.on('join', ({ key }) => out.push(`join:${key}`))
  view.on('leave', ({ key }) => out.push(`leave:${key}`))
  view.on('update', ({ key, data }) => out.push(`update:${key}:${JSON.stringify(data)}`))
  view.on('sync', (members) => out.push(`sync:${[...members.keys()].sort().join(',')}`))
  return out
}

test('client.presence(room): members from the snapshot, join/update/leave from the diffs', { timeout: 10000 }, async (t) => {
  const h = await presenceApp({ leaveDelay: 0 })
  const c = createClient<any>(`${h.wsBase}/rt?user=bob`, { WebSocket: WebSocket as never })
  const alice = await presenceClient(h, 'alice')
  t.after(async () => { c.close(); alice.destroy(); await h.close() })
  const seen = events(c, 'p:1')
  await alice.call('join', { room: 'p:1', data: { name: 'Alice' } })
  await c.request('join', { room: 'p:1', data: { name: 'Bob' } })
  await waitFor(() => seen.length === 1)
  assert.deepEqual(seen, ['sync:alice,bob'])
  assert.deepEqual(c.presence('p:1').members, new Map<string, unknown>([['alice', { name: 'Alice' }], ['bob', { name: 'Bob' }]]))
  await alice.call('update', { room: 'p:1', data: { name: 'Alice', typing: true } })
  await alice.call('leave', { room: 'p:1' })
  await waitFor(() => seen.length === 3)
  assert.deepEqual(seen, ['sync:alice,bob', 'update:alice:{"name":"Alice","typing":true}', 'leave:alice'])
})

test('edge case 24 (state/diff race, client side): a diff at or below the snapshot\'s v is ignored, a later one applies', () => {
  const views = new PresenceViews()
  const view = views.get('r')
  const seen: string[] = []
  view.on('join', ({ key }) => seen.push(`join:${key}`))
  view.on('leave', ({ key }) => seen.push(`leave:${key}`))
  // A diff before any snapshot cannot be placed: ignored.
  views.receive('rt.presence.diff', { room: 'r', v: 1, joins: { a: { data: null } }, leaves: [], updates: {} })
  views.receive('rt.presence', { room: 'r', v: 5, members: { b: { data: null } } })
  // Older than the snapshot: the leave of b at v 4 happened before b's (re)join the snapshot holds.
  views.receive('rt.presence.diff', { room: 'r', v: 4, joins: {}, leaves: ['b'], updates: {} })
  views.receive('rt.presence.diff', { room: 'r', v: 5, joins: { ghost: { data: null } }, leaves: [], updates: {} })
  assert.deepEqual([...view.members.keys()], ['b'])
  views.receive('rt.presence.diff', { room: 'r', v: 6, joins: { c: { data: 1 } }, leaves: ['b'], updates: {} })
  assert.deepEqual(seen, ['join:c', 'leave:b'])
  assert.deepEqual([...view.members], [['c', 1]])
  // Malformed frames are ignored.
  views.receive('rt.presence.diff', { room: 'r', v: 'x' })
  views.receive('rt.presence', null)
  assert.equal(view.v, 6)
})

test('edge case 25 (reconciliation): away while C joins and A leaves, the client sees join(C), leave(A) and nothing for the unchanged', { timeout: 15000 }, async (t) => {
  const h = await presenceApp({ leaveDelay: 5000 })
  const proxy = new Proxy(h.port)
  await proxy.start()
  const b = createClient<any>(`ws://127.0.0.1:${proxy.port}/rt?user=bob`, {
    WebSocket: WebSocket as never,
    backoff: { base: 50, cap: 100 },
    onReconnect: async (c: Any) => { await c.request('join', { room: 'p:r' }) }
  })
  const a = await presenceClient(h, 'alice')
  const d = await presenceClient(h, 'dave')
  const cl = await presenceClient(h, 'carol')
  t.after(async () => { b.close(); for (const x of [a, d, cl]) x.destroy(); await proxy.cut(); await h.close() })
  const seen = events(b, 'p:r')
  await a.call('join', { room: 'p:r' })
  await d.call('join', { room: 'p:r', data: 1 })
  await b.request('join', { room: 'p:r' })
  await waitFor(() => seen.length === 1)
  assert.deepEqual(seen, ['sync:alice,bob,dave'])

  await proxy.cut()
  await waitFor(() => b.state === 'reconnecting')
  await cl.call('join', { room: 'p:r' })
  await a.call('leave', { room: 'p:r' })
  await sleep(100)
  await proxy.start()
  await waitFor(() => seen.length === 4, 5000, 'the reconciliation')
  assert.deepEqual(seen.slice(1).sort(), ['join:carol', 'leave:alice', 'sync:bob,carol,dave'].sort())
  assert.equal(seen.at(-1), 'sync:bob,carol,dave')
  // Bob's own flap fired nothing for the others.
  await sleep(200)
  assert.deepEqual(d.events('p:r'), ['join:bob', 'join:carol', 'leave:alice'])
})

test('item 4 (client side): a snapshot older than the view (same epoch) is ignored; a new epoch\'s is taken; diffs of another epoch wait for it', () => {
  const views = new PresenceViews()
  const view = views.get('r')
  const seen: string[] = []
  view.on('join', ({ key }) => seen.push(`join:${key}`))
  view.on('leave', ({ key }) => seen.push(`leave:${key}`))
  views.receive('rt.presence', { room: 'r', v: 5, epoch: 'E1', members: { a: { data: null } } })
  views.receive('rt.presence.diff', { room: 'r', v: 6, epoch: 'E1', joins: { b: { data: null } }, leaves: [], updates: {} })
  // A resnapshot read before the diff at 6: it must not take b back.
  views.receive('rt.presence', { room: 'r', v: 5, epoch: 'E1', members: { a: { data: null } } })
  assert.deepEqual([...view.members.keys()], ['a', 'b'])
  // The room's list was lost (v restarts): a diff of the new epoch waits for its snapshot, which is taken.
  views.receive('rt.presence.diff', { room: 'r', v: 1, epoch: 'E2', joins: { c: { data: null } }, leaves: [], updates: {} })
  assert.deepEqual([...view.members.keys()], ['a', 'b'])
  views.receive('rt.presence', { room: 'r', v: 3, epoch: 'E2', members: { a: { data: null }, c: { data: null } } })
  assert.deepEqual([...view.members.keys()].sort(), ['a', 'c'])
  assert.equal(view.epoch, 'E2')
  views.receive('rt.presence.diff', { room: 'r', v: 4, epoch: 'E2', joins: { d: { data: null } }, leaves: [], updates: {} })
  // A late diff of the old epoch changes nothing.
  views.receive('rt.presence.diff', { room: 'r', v: 9, epoch: 'E1', joins: {}, leaves: ['a'], updates: {} })
  assert.deepEqual([...view.members.keys()].sort(), ['a', 'c', 'd'])
  assert.deepEqual(seen, ['join:b', 'leave:b', 'join:c', 'join:d'])
})

test('a presence room left: rt.presence.left drops the view (150 rooms joined and left keep none), a listened one is emptied', { timeout: 20000 }, async (t) => {
  const h = await presenceApp({ leaveDelay: 0 }, { limits: { rate: 10_000 } })
  const c = createClient<any>(`${h.wsBase}/rt?user=bob`, { WebSocket: WebSocket as never })
  const alice = await presenceClient(h, 'alice')
  t.after(async () => { c.close(); alice.destroy(); await h.close() })
  const views = (): number => (c as unknown as { presenceViews: { size: number } }).presenceViews.size
  await alice.call('join', { room: 'p:kept', data: null })
  const seen = events(c, 'p:kept')
  await c.request('join', { room: 'p:kept' })
  await waitFor(() => c.presence('p:kept').members.size === 2, 3000, 'the snapshot')
  for (let i = 0; i < 150; i++) {
    await c.request('join', { room: `p:${i}` })
    await c.request('leave', { room: `p:${i}` })
  }
  await c.request('leave', { room: 'p:kept' })
  await waitFor(() => c.presence('p:kept').members.size === 0, 3000, 'the view emptied')
  assert.equal(views(), 1)
  assert.deepEqual(seen, ['sync:alice,bob'])
  // Joined again: a fresh snapshot, taken as the first one.
  await c.request('join', { room: 'p:kept' })
  await waitFor(() => seen.length === 2, 3000, 'the new snapshot')
  assert.deepEqual(seen, ['sync:alice,bob', 'sync:alice,bob'])
})

test('hostile versions are ignored: v that is no safe integer >= 0', () => {
  const views = new PresenceViews()
  views.receive('rt.presence', { room: 'r', v: 2, members: { a: { data: null } } })
  for (const v of [1e300, -1, 2.5, '9', Number.NaN]) {
    views.receive('rt.presence', { room: 'r', v, members: {} })
    views.receive('rt.presence.diff', { room: 'r', v, joins: { ghost: { data: null } }, leaves: ['a'], updates: {} })
  }
  assert.deepEqual([...views.get('r').members.keys()], ['a'])
  assert.equal(views.get('r').v, 2)
  views.receive('rt.presence.diff', { room: 'r', v: 3, joins: { b: { data: null } }, leaves: [], updates: {} })
  assert.deepEqual([...views.get('r').members.keys()], ['a', 'b'])
})
