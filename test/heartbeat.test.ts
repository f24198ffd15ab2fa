import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import { startApp } from './helpers/app.js'
import { connect, waitFor } from './helpers/client.js'
import { Heartbeat } from '../lib/heartbeat.js'
import type { Registry } from '../lib/registry.js'

const route = {
  url: '/rt',
  messages: {
    echo: { schema: Type.Any(), handler: (d: unknown) => d },
    // Blocks the loop from the I/O phase: the overdue sweep then runs before the poll phase reads any pong.
    stall: { schema: Type.Integer(), handler: (ms: number) => { const until = Date.now() + ms; while (Date.now() < until) { /* busy */ } } }
  }
}

test('a client that stops answering pings is terminated within two intervals; a healthy one stays', { timeout: 10000 }, async (t) => {
  const interval = 150
  const h = await startApp({ realtime: { auth: false, heartbeat: { interval } }, setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  const healthy = await connect(`${h.wsBase}/rt`)
  const mute = await connect(`${h.wsBase}/rt`, { autoPong: false })
  const started = Date.now()
  const seen = await mute.closed
  const elapsed = Date.now() - started
  assert.equal(seen.code, 1006, 'no close handshake with a dead peer')
  assert.ok(elapsed <= 2 * interval + 1000, `terminated after ${elapsed} ms`)
  await waitFor(() => h.app.realtime.connections.size === 1)
  // The healthy client lives through several more sweeps.
  await new Promise((resolve) => setTimeout(resolve, 4 * interval))
  assert.equal(healthy.ws.readyState, healthy.ws.OPEN)
  assert.equal((await healthy.request('echo', 1)).data, 1)
  assert.deepEqual(h.app.realtime.stats().closes, { 1006: 1 })
  healthy.destroy()
})

test('an event-loop stall longer than the interval terminates no healthy client', { timeout: 10000 }, async (t) => {
  const interval = 100
  const h = await startApp({ realtime: { auth: false, heartbeat: { interval } }, setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  // The clients live in a child process, so that the stall below does not stall them too.
  const { fork } = await import('node:child_process')
  const child = fork(new URL('./helpers/idle-clients.ts', import.meta.url), [`${h.wsBase}/rt`, '5'], { execArgv: ['--import', 'tsx'], stdio: 'pipe' })
  t.after(() => { child.kill() })
  await waitFor(() => h.app.realtime.connections.size === 5, 5000, 'five clients')
  const trigger = await connect(`${h.wsBase}/rt`)
  t.after(() => { trigger.destroy() })
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, interval + 30))
    trigger.sendJson({ type: 'stall', data: 3 * interval })
  }
  await new Promise((resolve) => setTimeout(resolve, 4 * interval))
  assert.equal(h.app.realtime.connections.size, 6)
  assert.deepEqual(h.app.realtime.stats().closes, {})
})

test('heartbeat: false pings nobody', { timeout: 10000 }, async (t) => {
  const h = await startApp({ realtime: { auth: false, heartbeat: false }, setup: (app) => { app.realtimeRoute(route) } })
  t.after(() => h.close())
  const mute = await connect(`${h.wsBase}/rt`, { autoPong: false })
  let pings = 0
  mute.ws.on('ping', () => { pings++ })
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.equal(pings, 0)
  assert.equal((await mute.request('echo', 'alive')).data, 'alive')
  await mute.close()
})

test('the one timer runs only while there are connections', () => {
  const registry = { connections: new Map(), expiring: new Set() } as unknown as Registry
  const heartbeat = new Heartbeat(registry, 1000)
  assert.equal(heartbeat.running, false)
  heartbeat.update(1)
  heartbeat.update(2)
  assert.equal(heartbeat.running, true)
  heartbeat.update(0)
  assert.equal(heartbeat.running, false)
  heartbeat.update(3)
  heartbeat.stop()
  assert.equal(heartbeat.running, false)
})
