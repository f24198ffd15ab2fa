// The typed client's recovery: positions from rt.position and numbered events, rt.resume first after a reconnect,
// the overlap dropped before any listener, the `recovery` event, position()/setPosition().
import { test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { createClient, type RealtimeClient, type RecoveryEvent } from '../lib/client/index.js'
import { historyApp } from './helpers/history.js'
import type { TestApp } from './helpers/app.js'
import { waitFor } from './helpers/client.js'

type Any = RealtimeClient<any>

function historyClient (h: TestApp, rooms: string[], options: Record<string, unknown> = {}): Any {
  return createClient<any>(`${h.wsBase}/rt`, {
    WebSocket: WebSocket as never,
    backoff: { base: 20, cap: 100 },
    onReconnect: async (c: Any) => { for (const room of rooms) await c.request('join', { room }) },
    ...options
  })
}

function collect (c: Any): { said: number[], recovery: RecoveryEvent[] } {
  const out = { said: [] as number[], recovery: [] as RecoveryEvent[] }
  c.on('said', (d: { n: number }) => { out.said.push(d.n) })
  c.on('recovery', (e) => { out.recovery.push(e) })
  return out
}

function dropAll (h: TestApp): void {
  for (const conn of h.app.realtime.connections.values()) conn.terminate()
}

test('a dropped connection: rt.resume goes first, the 3 missed events arrive once and in order, and a recovery event says so', { timeout: 15000 }, async (t) => {
  const h = await historyApp()
  const c = historyClient(h, ['h:1'])
  t.after(async () => { c.close(); await h.close() })
  const seen = collect(c)
  const first: any = await c.request('join', { room: 'h:1' })
  assert.deepEqual(c.position('h:1'), { epoch: first.epoch, offset: 0 })
  h.app.realtime.to('h:1').send('said', { n: 1 })
  await waitFor(() => seen.said.length === 1)
  assert.deepEqual(c.position('h:1'), { epoch: first.epoch, offset: 1 })
  dropAll(h)
  for (let n = 2; n <= 4; n++) h.app.realtime.to('h:1').send('said', { n })
  await waitFor(() => seen.recovery.length === 1, 5000)
  assert.deepEqual(seen.recovery, [{ room: 'h:1', recovered: true, missed: 3 }])
  await waitFor(() => seen.said.length === 4)
  h.app.realtime.to('h:1').send('said', { n: 5 })
  await waitFor(() => seen.said.length === 5)
  assert.deepEqual(seen.said, [1, 2, 3, 4, 5])
  assert.deepEqual(c.position('h:1'), { epoch: first.epoch, offset: 5 })

  // The overlap of a replay and live frames is dropped before any listener; a hole is reported as a gap.
  const conn = [...h.app.realtime.connections.values()][0]!
  conn.sendText('{"type":"said","data":{"n":3},"room":"h:1","offset":3}')
  conn.sendText('{"type":"said","data":{"n":9},"room":"h:1","offset":9}')
  await waitFor(() => seen.said.length === 6)
  assert.deepEqual(seen.said.slice(5), [9])
  assert.deepEqual(seen.recovery.at(-1), { room: 'h:1', recovered: false, reason: 'gap' })
})

test('setPosition seeds a room from a snapshot (then the join replays what came after it); a leave forgets the position', { timeout: 15000 }, async (t) => {
  const h = await historyApp()
  h.app.realtime.to('h:s').send('said', { n: 1 })
  const snapshot = await h.app.realtime.history('h:s').position()
  h.app.realtime.to('h:s').send('said', { n: 2 })
  const c = historyClient(h, ['h:s'])
  t.after(async () => { c.close(); await h.close() })
  const seen = collect(c)
  assert.throws(() => { c.setPosition('h:s', { epoch: '', offset: 1 }) }, TypeError)
  c.setPosition('h:s', snapshot)
  await c.request('join', { room: 'h:s' })
  await waitFor(() => seen.said.length === 1)
  assert.deepEqual(seen.said, [2])
  assert.deepEqual(seen.recovery, [{ room: 'h:s', recovered: true, missed: 1 }])
  await c.request('leave', { room: 'h:s' })
  assert.equal(c.position('h:s'), undefined)
})

test('a server restart loses the memory store: recovery says epoch, the new epoch\'s offsets 1, 2 are delivered', { timeout: 20000 }, async (t) => {
  let h = await historyApp()
  const port = h.port
  const c = historyClient(h, ['h:r'])
  t.after(async () => { c.close(); await h.close() })
  const seen = collect(c)
  await c.request('join', { room: 'h:r' })
  for (let n = 1; n <= 3; n++) h.app.realtime.to('h:r').send('said', { n })
  await waitFor(() => seen.said.length === 3)
  await h.close()
  h = await historyApp({}, {}, port)
  await waitFor(() => seen.recovery.length === 1, 10000)
  assert.deepEqual(seen.recovery, [{ room: 'h:r', recovered: false, reason: 'epoch' }])
  h.app.realtime.to('h:r').send('said', { n: 4 })
  h.app.realtime.to('h:r').send('said', { n: 5 })
  await waitFor(() => seen.said.length === 5)
  assert.deepEqual(seen.said, [1, 2, 3, 4, 5])
  assert.equal(c.position('h:r')?.offset, 2)
})

test('recovery: false sends no rt.resume and keeps no positions', { timeout: 15000 }, async (t) => {
  const h = await historyApp()
  const c = historyClient(h, ['h:n'], { recovery: false })
  t.after(async () => { c.close(); await h.close() })
  const seen = collect(c)
  const first: any = await c.request('join', { room: 'h:n' })
  assert.equal(c.position('h:n'), undefined)
  dropAll(h)
  h.app.realtime.to('h:n').send('said', { n: 1 })
  await waitFor(() => h.app.realtime.roomMembers('h:n').size === 1, 5000)
  assert.equal(first.offset, 0)
  assert.deepEqual(seen.recovery, [])
  assert.deepEqual(seen.said, [])
})
