// A server process for the shutdown test: opens the app with N clients of its own, closes it, reports, and is
// then expected to exit by itself (nothing left keeping the event loop alive).
import { Type } from '@sinclair/typebox'
import { startApp } from './app.js'
import { connect, type TestClient } from './client.js'

const count = Number(process.argv[2] ?? 500)
const timeout = Number(process.argv[3] ?? 3000)
const h = await startApp({
  realtime: { auth: false, heartbeat: { interval: 30000 }, shutdown: { timeout } },
  setup: (app) => { app.realtimeRoute({ url: '/rt', messages: { echo: { schema: Type.Any(), handler: (d: unknown) => d } } }) }
})
const clients: TestClient[] = []
for (let i = 0; i < count; i += 50) {
  clients.push(...await Promise.all(Array.from({ length: Math.min(50, count - i) }, async () => await connect(`${h.wsBase}/rt`))))
}
// One client that never answers the close handshake: the timeout has to terminate it.
const stubborn = clients[0] as TestClient
;(stubborn.ws as unknown as { _socket: { pause: () => void } })._socket.pause()
const conn = [...h.app.realtime.connections.values()][1]
conn?.send('last' as never, { words: 'flushed before the close frame' } as never)
const lastWords = clients[1]?.nextMessage()
const started = Date.now()
await h.close()
const took = Date.now() - started
const codes: Record<number, number> = {}
for (const c of clients.slice(1)) {
  const { code } = await c.closed
  codes[code] = (codes[code] ?? 0) + 1
}
stubborn.destroy()
process.send?.({ took, codes, lastWords: await lastWords, open: h.app.realtime.connections.size })
process.disconnect?.()
