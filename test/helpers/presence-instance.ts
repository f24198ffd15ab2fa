// A presence instance in a child process, for the test that SIGKILLs one: it joins one client per user to `room`
// (through its own app, so its members die with it), reports, and waits to be killed.
import { redisBroker } from '../../lib/redis.js'
import { presenceApp, presenceClient } from './presence.js'

const [url, prefix, room, ttl, users] = process.argv.slice(2) as [string, string, string, string, string]
const h = await presenceApp({ ttl: Number(ttl), leaveDelay: 200 }, { broker: redisBroker({ url, prefix }) })
for (const user of users.split(',')) {
  const c = await presenceClient(h, user)
  await c.call('join', { room })
}
process.send?.({ ready: true })
setTimeout(() => { process.exit(0) }, 60_000).unref()
process.on('disconnect', () => { process.exit(0) })
