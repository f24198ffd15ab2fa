// The example chat app, built but not listening, so that `server.ts` and the browser tests start it alike.
import { readFile } from 'node:fs/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import jwt from '@fastify/jwt'
import cookie from '@fastify/cookie'
import { Type } from '@sinclair/typebox'
import { Registry } from 'prom-client'
import realtime, { type Broker } from '../lib/index.js'
import { realtimeMetrics } from '../lib/metrics.js'
import { RecentMessages, registerChat } from './chat-route.js'

export interface ExampleOptions {
  /** Use the Redis broker (rooms shared by every instance on this Redis). */
  redisUrl?: string
  /** Seconds an access token lives; the page renews it before it expires. @default 300 */
  tokenTtl?: number
  logger?: boolean | object
  /** Shutdown wait in ms. @default 5000 */
  shutdownTimeout?: number
  /** Origins of pages served elsewhere (a single-page app on its own host) that may connect too. @default none */
  allowedOrigins?: string[]
}

export interface Example {
  app: FastifyInstance
  /** Listens on 127.0.0.1 and allows the page's own origins; resolves with the port. */
  listen: (port: number) => Promise<number>
}

/** The Info Object of the example's AsyncAPI document. */
export const EXAMPLE_INFO = {
  title: 'fastify-realtime example chat',
  version: '1.0.0',
  description: 'Rooms, messages, typing and presence over one WebSocket. Log in with `POST /login` for a token.'
}
const SESSION_COOKIE = 'session'
const SESSION_TTL = 8 * 3600
const publicDir = new URL('./public/', import.meta.url)
const clientBundle = new URL('../dist/client/realtime-client.js', import.meta.url)
const pages: Record<string, [URL, string]> = {
  '/': [new URL('index.html', publicDir), 'text/html; charset=utf-8'],
  '/app.js': [new URL('app.js', publicDir), 'text/javascript; charset=utf-8'],
  '/style.css': [new URL('style.css', publicDir), 'text/css; charset=utf-8'],
  '/client.js': [clientBundle, 'text/javascript; charset=utf-8']
}

export async function buildExample (options: ExampleOptions = {}): Promise<Example> {
  const tokenTtl = options.tokenTtl ?? 300
  const secret = process.env.JWT_SECRET ?? 'example-secret-change-me-example-secret'
  const app = Fastify({ logger: options.logger ?? { level: process.env.LOG_LEVEL ?? 'info' } })
  // Access tokens (for the socket) and session tokens (in the cookie) differ by audience, so neither passes as the other.
  await app.register(jwt, { secret, verify: { allowedAud: 'chat' } })
  await app.register(cookie)

  let broker: Broker | undefined
  if (options.redisUrl !== undefined) {
    const { redisBroker } = await import('../lib/redis.js')
    broker = redisBroker({ url: options.redisUrl })
  }
  const origins = new Set<string>(options.allowedOrigins)
  const metrics = new Registry()
  await app.register(realtime, {
    metrics: realtimeMetrics({ registry: metrics }),
    origins: (origin) => origins.has(origin),
    auth: { sources: ['protocol', 'header'] },
    limits: { rate: 20, burst: 10 },
    shutdown: { timeout: options.shutdownTimeout ?? 5000 },
    // The AsyncAPI document of the chat at /asyncapi.json (and .yaml), and its page at /asyncapi.
    asyncapi: { path: '/asyncapi.json', page: '/asyncapi', info: EXAMPLE_INFO },
    // Every chat room keeps its last 100 events for 2 minutes: a page back within that misses nothing.
    history: { rooms: () => true, size: 100, ttl: 120_000 },
    // Every chat room lists its members (on every instance with Redis); a page that reloads within 5 s is no leave.
    presence: { rooms: () => true },
    ...(broker !== undefined ? { broker } : {})
  })

  const issue = (name: string) => {
    const exp = Math.floor(Date.now() / 1000) + tokenTtl
    return { name, exp, token: app.jwt.sign({ sub: name, aud: 'chat', exp }) }
  }

  app.post('/login', {
    schema: { body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 24, pattern: '^[\\w .-]+$' }) }) }
  }, async (request, reply) => {
    const { name } = request.body as { name: string }
    const session = app.jwt.sign({ sub: name, aud: 'session' }, { expiresIn: SESSION_TTL })
    reply.setCookie(SESSION_COOKIE, session, { httpOnly: true, sameSite: 'strict', path: '/', maxAge: SESSION_TTL })
    return issue(name)
  })

  const sessionOf = (request: { cookies: Record<string, string | undefined> }): string | undefined => {
    const cookieToken = request.cookies[SESSION_COOKIE]
    try {
      return cookieToken === undefined ? undefined : app.jwt.verify<{ sub: string }>(cookieToken, { allowedAud: 'session' }).sub
    } catch {
      return undefined
    }
  }
  const noSession = { statusCode: 401, code: 'NO_SESSION', message: 'log in first' }

  // A fresh access token for the session in the HttpOnly cookie: the page's getToken().
  app.get('/session', async (request, reply) => {
    const sub = sessionOf(request)
    return sub === undefined ? await reply.code(401).send(noSession) : issue(sub)
  })

  // A room's snapshot for a page that could not recover it: the position is read FIRST, then the data, so that
  // the page resumes from it and at worst sees a message twice, never misses one.
  const recent = new RecentMessages()
  app.get('/rooms/:room/messages', {
    schema: { params: Type.Object({ room: Type.String({ minLength: 1, maxLength: 32, pattern: '^[\\w-]+$' }) }) }
  }, async (request, reply) => {
    if (sessionOf(request) === undefined) return await reply.code(401).send(noSession)
    const { room } = request.params as { room: string }
    const position = await app.realtime.history(room).position()
    return { position, messages: recent.list(room) }
  })

  // Prometheus scrapes this. A real deployment serves it on an internal port or behind authentication.
  app.get('/metrics', async (_request, reply) => await reply.type(metrics.contentType).send(await metrics.metrics()))

  app.post('/logout', async (_request, reply) => {
    reply.clearCookie(SESSION_COOKIE, { path: '/' })
    return { ok: true }
  })

  for (const [path, [file, type]] of Object.entries(pages)) {
    app.get(path, async (_request, reply) => {
      try {
        return await reply.type(type).header('cache-control', 'no-cache').send(await readFile(file))
      } catch {
        return await reply.code(404).send({ statusCode: 404, message: `${path} is missing: run npm run bundle:client` })
      }
    })
  }

  registerChat(app, recent)

  return {
    app,
    async listen (port) {
      await app.listen({ host: '127.0.0.1', port })
      const actual = (app.server.address() as { port: number }).port
      origins.add(`http://127.0.0.1:${actual}`)
      origins.add(`http://localhost:${actual}`)
      return actual
    }
  }
}
