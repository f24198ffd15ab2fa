// An instance in a child process, for the test that kills one without closing it: it joins `count` clients of
// user `user` to `room`, reports, and waits to be killed.
import { Type } from '@sinclair/typebox'
import { redisBroker } from '../../lib/redis.js'
import { startApp } from './app.js'
import { connect } from './client.js'

const [url, prefix, room, user, count] = process.argv.slice(2) as [string, string, string, string, string]
const h = await startApp({
  jwt: false,
  realtime: { auth: { authenticate: () => ({ sub: user }) }, broker: redisBroker({ url, prefix, onlineTtl: 1 }) },
  setup: (app) => { app.realtimeRoute({ url: '/rt', messages: { join: { schema: Type.String(), handler: (r, conn) => { conn.join(r); return r } } } }) }
})
for (let i = 0; i < Number(count); i++) {
  const c = await connect(`${h.wsBase}/rt`)
  await c.request('join', room)
}
process.send?.({ ready: true })
setTimeout(() => { process.exit(0) }, 60_000).unref()
process.on('disconnect', () => { process.exit(0) })
