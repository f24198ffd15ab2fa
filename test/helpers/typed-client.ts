// The typed client's tests share this: a route on the real plugin, an app that can come back on the same port,
// and clients on `ws` with short backoffs.
import Fastify, { type FastifyInstance } from 'fastify'
import jwt from '@fastify/jwt'
import WebSocket from 'ws'
import { Type } from '@sinclair/typebox'
import realtime, { RealtimeError, type RealtimeOptions } from '../../lib/index.js'
import { createClient, type ClientOptions, type LifecycleEvents, type RealtimeClient } from '../../lib/client/index.js'
import { SECRET } from './app.js'

/** What reached the server, in order: notes, joins, and the codes connections closed with. */
export interface Seen {
  notes: string[]
  closes: number[]
}

/** The route every client test talks to. */
export function chatRoute (app: FastifyInstance, seen: Seen = { notes: [], closes: [] }) {
  return app.realtimeRoute({
    url: '/chat',
    messages: {
      echo: { schema: Type.Object({ text: Type.String() }), handler: ({ text }) => ({ echoed: text, length: text.length }) },
      note: { schema: Type.String(), handler: (text) => { seen.notes.push(text) } },
      refuse: { schema: Type.Null(), handler: () => { throw new RealtimeError('NOT_ALLOWED', 'not for you', { why: 'test' }) } },
      hang: { schema: Type.Integer(), handler: async (ms) => { await new Promise((resolve) => setTimeout(resolve, ms)); return ms } },
      kick: { schema: Type.Integer(), handler: (code, conn) => { conn.close(code, 'kicked') } },
      join: { schema: Type.String(), handler: (room, conn) => { conn.join(room); seen.notes.push(`join:${room}`); return room } },
      // Counts its runs in `seen.notes` ('slow'), takes `ms`, and answers with the runs so far.
      slow: { schema: Type.Integer(), handler: async (ms) => { seen.notes.push('slow'); await new Promise((resolve) => setTimeout(resolve, ms)); return seen.notes.filter((n) => n === 'slow').length } },
      whoami: { schema: Type.Null(), handler: (_, conn) => (conn.user as { sub?: string } | undefined)?.sub ?? null }
    },
    events: { news: Type.Object({ headline: Type.String() }) },
    onClose: (_conn, code) => { seen.closes.push(code) }
  })
}
export type ChatRoute = ReturnType<typeof chatRoute>

export interface ChatApp {
  app: FastifyInstance
  port: number
  url: string
  httpUrl: string
  seen: Seen
  sign: (payload: Record<string, unknown>) => string
  close: () => Promise<void>
}

/** The plugin with @fastify/jwt and the chat route on 127.0.0.1 (port 0 unless given, to come back on the same one). */
export async function serveChat (options: RealtimeOptions = { auth: false }, port = 0, seen?: Seen): Promise<ChatApp> {
  const app = Fastify({ logger: false })
  await app.register(jwt, { secret: SECRET })
  await app.register(realtime, { heartbeat: false, shutdown: { timeout: 300 }, ...options })
  const s = seen ?? { notes: [], closes: [] }
  chatRoute(app, s)
  await app.listen({ host: '127.0.0.1', port })
  const address = app.server.address()
  const bound = typeof address === 'object' && address !== null ? address.port : port
  return {
    app,
    port: bound,
    url: `ws://127.0.0.1:${bound}/chat`,
    httpUrl: `http://127.0.0.1:${bound}/chat`,
    seen: s,
    sign: (payload) => (app as any).jwt.sign(payload),
    close: async () => { await app.close() }
  }
}

/** A typed client on `ws`, with backoff short enough for tests (20 ms base, 200 ms cap). */
export function typedClient (url: string, options: ClientOptions<ChatRoute> = {}): RealtimeClient<ChatRoute> {
  return createClient<ChatRoute>(url, { WebSocket, backoff: { base: 20, cap: 200 }, ...options })
}

/** The next lifecycle event `type` of `client`; rejects after `timeout` ms. */
export async function nextEvent<K extends keyof LifecycleEvents> (client: RealtimeClient<ChatRoute>, type: K, timeout = 5000): Promise<LifecycleEvents[K]> {
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { client.off(type, listener as never); reject(new Error(`no ${type} event within ${timeout} ms`)) }, timeout)
    const listener = (data: LifecycleEvents[K]): void => { clearTimeout(timer); client.off(type, listener as never); resolve(data) }
    client.on(type, listener as never)
  })
}

/** Resolves when the client is open. */
export async function opened (client: RealtimeClient<ChatRoute>, timeout = 5000): Promise<void> {
  if (client.state !== 'open') await nextEvent(client, 'open', timeout)
}

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
