// One instance of the presence benchmark (bench/presence.ts): fastify-realtime on the Redis broker with every room a
// presence room; reports its port, then answers `cpu` with its CPU time so far (µs).
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import realtime from '../lib/index.js'
import { redisBroker } from '../lib/redis.js'

const [url, prefix] = process.argv.slice(2) as [string, string]
const app = Fastify({ logger: false })
await app.register(realtime, {
  auth: { authenticate: (request) => ({ sub: new URL(request.url, 'http://x').searchParams.get('user') ?? undefined }) },
  heartbeat: false,
  limits: { rate: 10_000 },
  presence: { rooms: () => true, leaveDelay: 0, maxMembers: 10_000 },
  broker: redisBroker({ url, prefix })
})
app.realtimeRoute({
  url: '/rt',
  messages: {
    join: { schema: Type.Object({ room: Type.String(), watch: Type.Optional(Type.Boolean()) }), handler: async ({ room, watch }, conn) => { await conn.join(room, { presence: watch === true ? false : {} }); return null } },
    leave: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.leave(room); return null } },
    say: { schema: Type.Object({ room: Type.String(), n: Type.Number() }), handler: ({ room, n }) => { app.realtime.to(room).send('said', { n }); return null } }
  },
  events: { said: Type.Object({ n: Type.Number() }) }
})
await app.listen({ host: '127.0.0.1', port: 0 })
const address = app.server.address()
process.send?.({ port: typeof address === 'object' && address !== null ? address.port : 0 })
process.on('message', (m: { type: string }) => {
  if (m.type === 'cpu') {
    const { user, system } = process.cpuUsage()
    process.send?.({ cpu: user + system })
  }
})
process.on('disconnect', () => { app.close().finally(() => process.exit(0)) })
