import { test } from 'node:test'
import assert from 'node:assert/strict'
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
  let seen: { conn: Connection<any, any>, admission: unknown, closeListeners: unknown[], errorListeners: number } | undefined
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
            errorListeners: conn.socket.listenerCount('error')
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
  assert.match(seen.conn.id, UUID)
  assert.equal(h.app.realtime.connections.get(seen.conn.id), seen.conn)
  // The slots were given back once, at the open: the counts are the registry's alone.
  const stats = h.app.realtime.stats()
  assert.equal(stats.connections, 1)
})
