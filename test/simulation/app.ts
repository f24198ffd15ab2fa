// The simulated instance: an app on the real plugin with history rooms (/^h/), presence rooms (/^p/ and /^hp/,
// which keep both), the session `?user=<id>` (the presence key), and a route whose messages join, leave and update
// presence. Publishes come from the simulator through `app.realtime.to(room).publish()`.
import Fastify, { type FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'
import realtime from '../../lib/index.js'
import { redisBroker } from '../../lib/redis.js'

export interface InstanceConfig {
  /** Redis URL of this instance's proxy, or undefined for the memory stores and the default broker. */
  redisUrl: string | undefined
  prefix: string
  port: number
  presenceTtl: number
  leaveDelay: number
  shutdownTimeout: number
  /** history.ttl (events dropped this long after the room's last publish). */
  historyTtl: number
  historySize: number
}

export const isHistoryRoom = (room: string): boolean => room.startsWith('h')
export const isPresenceRoom = (room: string): boolean => room.startsWith('p') || room.startsWith('hp')

export function simRoute (app: FastifyInstance) {
  return app.realtimeRoute({
    url: '/rt',
    messages: {
      join: {
        schema: Type.Object({ room: Type.String(), data: Type.Optional(Type.Unknown()) }),
        handler: async ({ room, data }, conn) => {
          const result = await conn.join(room, isPresenceRoom(room) ? { presence: { data: data ?? null } } : undefined)
          return result ?? null
        }
      },
      leave: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.leave(room); return null } },
      update: {
        schema: Type.Object({ room: Type.String(), data: Type.Unknown() }),
        handler: ({ room, data }, conn) => { conn.presence(room).update(data); return null }
      }
    },
    events: { said: Type.Object({ n: Type.Number() }) }
  })
}
export type SimRoute = ReturnType<typeof simRoute>

export async function startSimApp (config: InstanceConfig): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(realtime, {
    heartbeat: false,
    shutdown: { timeout: config.shutdownTimeout },
    auth: { authenticate: (request) => ({ sub: new URL(request.url, 'http://x').searchParams.get('user') ?? undefined }) },
    history: { rooms: /^h/, ttl: config.historyTtl, size: config.historySize, maxRecover: config.historySize },
    presence: { rooms: /^(p|hp)/, ttl: config.presenceTtl, leaveDelay: config.leaveDelay, shutdownGrace: config.leaveDelay },
    ...(config.redisUrl === undefined ? {} : { broker: redisBroker({ url: config.redisUrl, prefix: config.prefix }) })
  })
  simRoute(app)
  await app.listen({ host: '127.0.0.1', port: config.port })
  return app
}

/**
 * The per-room structures of an instance that must be back to their baseline (empty) once every client left.
 * Besides `stats().rooms`, this reads the room lives of history and presence (lib/room-life.ts) through a cast
 * (test code only): every per-room structure of either feature belongs to one of them, so no life, no state.
 */
export function roomStructures (app: FastifyInstance): Record<string, string[]> {
  const registry = app.realtime as any
  const rooms = (lives: unknown): string[] => lives === undefined ? [] : [...(lives as Iterable<{ room: string }>)].map((life) => life.room)
  return {
    'stats().rooms': Array.from({ length: app.realtime.stats().rooms }, (_, i) => `#${i}`),
    'roomHistory.lives': rooms(registry.roomHistory?.lives),
    'roomPresence.lives': rooms(registry.roomPresence?.lives)
  }
}

/** What the simulator asks an instance (in process or, through IPC, in a child). */
export interface InstanceOps {
  publish: (room: string, n: number, volatile?: boolean) => Promise<{ epoch: string, offset: number } | { error: string }>
  list: (room: string) => Promise<{ keys: Record<string, unknown> } | { error: string }>
  position: (room: string) => Promise<{ epoch: string, offset: number } | { error: string }>
  structures: () => Record<string, string[]>
  /** Graceful close; resolves with how long `app.close()` took. */
  close: () => Promise<number>
}

const PUBLISH_TIMEOUT = 8000

async function bounded<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what}: no answer within ${ms} ms`)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}

export function opsOf (app: FastifyInstance): InstanceOps {
  return {
    publish: async (room, n, volatile) => {
      try {
        if (volatile === true) {
          app.realtime.to(room).send('said' as never, { n } as never)
          return { error: 'send' }
        }
        const p = await bounded(app.realtime.to(room).publish('said' as never, { n } as never), PUBLISH_TIMEOUT, 'publish')
        return { epoch: p.epoch, offset: p.offset }
      } catch (err) {
        return { error: (err as Error).message }
      }
    },
    list: async (room) => {
      try {
        return { keys: Object.fromEntries(await bounded(app.realtime.presence(room).list(), PUBLISH_TIMEOUT, 'list')) }
      } catch (err) {
        return { error: (err as Error).message }
      }
    },
    position: async (room) => {
      try {
        return await bounded(app.realtime.history(room).position(), PUBLISH_TIMEOUT, 'position')
      } catch (err) {
        return { error: (err as Error).message }
      }
    },
    structures: () => roomStructures(app),
    close: async () => {
      const started = Date.now()
      await app.close()
      return Date.now() - started
    }
  }
}
