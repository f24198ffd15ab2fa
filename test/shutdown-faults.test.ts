// The whole shutdown (presence grace, history, broker, connections) fits shutdown.timeout plus one second,
// whatever Redis does: here Redis keeps every connection open and stops answering. (The assertion allows another
// second for timers that fire late on a loaded machine; without the bound, close() waited for ever.)
import assert from 'node:assert/strict'
import { redisBroker } from '../lib/redis.js'
import { historyApp, call, client } from './helpers/history.js'
import { RedisProxy, redisTest, uniquePrefix } from './helpers/redis.js'
import type { TestClient } from './helpers/client.js'

redisTest('app.close() on a stalled Redis with history and presence rooms: 1001 to every client, done within shutdown.timeout + 1 s', { timeout: 30000 }, async (t) => {
  const proxy = new RedisProxy()
  const url = await proxy.start()
  const timeout = 1500
  const h = await historyApp({}, {
    broker: redisBroker({ url, prefix: uniquePrefix() }),
    presence: { rooms: /^h:/, ttl: 3000, shutdownGrace: 2000 },
    shutdown: { timeout }
  })
  const clients: TestClient[] = []
  t.after(async () => {
    proxy.resume()
    for (const c of clients) c.destroy()
    await h.close()
    await proxy.cut()
  })
  for (let i = 0; i < 3; i++) {
    const c = await client(h)
    clients.push(c)
    await call(c, 'join', { room: `h:room-${i}` })
  }
  proxy.stall()
  // Work in flight when Redis stopped answering: a publish, a join's read, a leave.
  h.app.realtime.to('h:room-0').send('said', { n: 1 })
  clients[1]?.sendJson({ type: 'joinNoWait', data: { room: 'h:room-x' } })
  clients[2]?.sendJson({ type: 'leave', data: { room: 'h:room-2' } })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const started = Date.now()
  await h.app.close()
  const took = Date.now() - started
  assert.ok(took <= timeout + 1000 + 1000, `app.close() took ${took} ms`)
  for (const c of clients) assert.equal((await c.closed).code, 1001)
})
