// The example server: `npm run example`, then open the printed address.
// A minimal chat for now: log in with any name at /login?name=…, then open a socket to /chat with the token.
import Fastify from 'fastify'
import jwt from '@fastify/jwt'
import closeWithGrace from 'close-with-grace'
import { Type } from '@sinclair/typebox'
import realtime, { RealtimeError } from '../lib/index.js'

const port = Number(process.env.PORT ?? 3000)
const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'info' } })
await app.register(jwt, { secret: process.env.JWT_SECRET ?? 'example-secret-change-me-example-secret' })
await app.register(realtime, { origins: [`http://127.0.0.1:${port}`, `http://localhost:${port}`] })

app.get('/login', {
  schema: { querystring: Type.Object({ name: Type.String({ minLength: 1, maxLength: 32, pattern: '^[\\w .-]+$' }) }) }
}, async (request) => {
  const { name } = request.query as { name: string }
  return { token: app.jwt.sign({ sub: name }, { expiresIn: '15m' }) }
})

app.realtimeRoute({
  url: '/chat',
  messages: {
    'room.join': {
      schema: Type.Object({ room: Type.String({ minLength: 1, maxLength: 64 }) }),
      handler: ({ room }, conn) => { conn.join(room); return { joined: room } }
    },
    'chat.send': {
      schema: Type.Object({ room: Type.String(), text: Type.String({ minLength: 1, maxLength: 2000 }) }),
      handler: ({ room, text }, conn) => {
        if (!conn.rooms.has(room)) throw new RealtimeError('NOT_IN_ROOM', 'join the room first')
        app.realtime.to(room).send('chat.message', { room, from: conn.userId ?? 'anonymous', text })
      }
    }
  },
  events: { 'chat.message': Type.Object({ room: Type.String(), from: Type.String(), text: Type.String() }) }
})

app.get('/', async () => ({ chat: `ws://127.0.0.1:${port}/chat`, login: `http://127.0.0.1:${port}/login?name=you` }))

closeWithGrace({ delay: 10_000 }, async ({ err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an error')
  await app.close()
})

await app.listen({ host: '127.0.0.1', port })
