import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import type { FastifyRequest } from 'fastify'
import { startApp } from './helpers/app.js'
import { connect, waitFor } from './helpers/client.js'
import { kAdmission } from '../lib/symbols.js'
import type { Admission } from '../lib/route.js'
import type { Connection } from '../lib/connection.js'

type Raw = FastifyRequest['raw'] & { [kAdmission]?: Admission }
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

// An idle connection lives for hours: whatever the handshake made for itself must not live with it.
test('an open connection keeps nothing of its handshake: no admission, no slot listener, one error listener', async (t) => {
  let admission: Admission | undefined
  let seen: { conn: Connection<any, any>, admission: unknown, closeListeners: unknown[], errorListeners: number, response: unknown } | undefined
  const h = await startApp({
    realtime: { auth: false },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: {},
        // Runs during the upgrade, while the admission is still there.
        upgradeHeaders: (request) => {
          admission = (request.raw as Raw)[kAdmission]
          return {}
        },
        onOpen: (conn) => {
          const raw = conn.request.raw as Raw
          seen = {
            conn,
            admission: raw[kAdmission],
            closeListeners: raw.socket.rawListeners('close').map((l) => (l as { listener?: unknown }).listener ?? l),
            errorListeners: conn.socket.listenerCount('error'),
            response: (raw.socket as { _httpMessage?: unknown })._httpMessage
          }
        }
      })
    }
  })
  t.after(async () => { await h.close() })
  const c = await connect(`${h.wsBase}/rt`)
  t.after(() => { c.destroy() })
  await waitFor(() => seen !== undefined)
  assert.ok(admission !== undefined, 'the admission was there during the upgrade')
  assert.ok(seen !== undefined)
  assert.equal(seen.admission, undefined)
  assert.ok(!seen.closeListeners.includes(admission.release), 'the slots listener is off the TCP socket')
  assert.equal(seen.errorListeners, 1)
  // @fastify/websocket's ServerResponse (and with it the Reply) is off the TCP socket: nothing listened to its 'close'.
  assert.equal(seen.response, null)
  assert.match(seen.conn.id, UUID)
  assert.equal(h.app.realtime.connections.get(seen.conn.id), seen.conn)
  // The slots were given back once, at the open: the counts are the registry's alone.
  const stats = h.app.realtime.stats()
  assert.equal(stats.connections, 1)
})

test("an app that listens to the upgrade response's 'close' still hears it when the connection ends", async (t) => {
  let heard = 0
  let opened = false
  const h = await startApp({
    realtime: { auth: false },
    setup: (app) => {
      app.addHook('onRequest', async (_request, reply) => { reply.raw.on('close', () => { heard++ }) })
      app.realtimeRoute({ url: '/rt', messages: {}, onOpen: () => { opened = true } })
    }
  })
  t.after(async () => { await h.close() })
  const c = await connect(`${h.wsBase}/rt`)
  await waitFor(() => opened)
  assert.equal(heard, 0)
  c.destroy()
  await waitFor(() => heard === 1)
})

test('a client that hangs up while its session check awaits gets no socket, and its slots are given back', { timeout: 10000 }, async (t) => {
  let letThrough: (() => void) | undefined
  const checking = new Promise<void>((resolve) => { letThrough = resolve })
  let asked = 0
  const h = await startApp({
    jwt: false,
    realtime: {
      auth: {
        authenticate: async () => {
          asked++
          if (asked === 1) await checking
          return { sub: 'u' }
        }
      },
      limits: { maxConnections: 1 }
    },
    setup: (app) => { app.realtimeRoute({ url: '/rt', messages: {} }) }
  })
  t.after(async () => { await h.close() })
  const raw = net.connect(h.port, '127.0.0.1')
  await once(raw, 'connect')
  raw.write('GET /rt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  await waitFor(() => asked === 1)
  raw.destroy()
  await new Promise((resolve) => setTimeout(resolve, 100))
  letThrough?.()
  await waitFor(() => (h.app.realtime as unknown as { reserved: number }).reserved === 0, 3000, 'the reservation given back')
  assert.equal(h.app.realtime.connections.size, 0)
  const c = await connect(`${h.wsBase}/rt`)
  t.after(() => { c.destroy() })
  assert.equal(h.app.realtime.connections.size, 1, 'the one slot is free again')
})
