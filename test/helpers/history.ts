import { Type } from '@sinclair/typebox'
import type { RealtimeOptions } from '../../lib/index.js'
import type { HistoryOptions } from '../../lib/history/options.js'
import { startApp, type StartOptions, type TestApp } from './app.js'
import { connect, type TestClient } from './client.js'

/** An app whose rooms starting with `h:` keep history; `join` awaits `conn.join` and replies with its result. */
export async function historyApp (history: Partial<HistoryOptions> = {}, realtime: RealtimeOptions = {}, port = 0, fastify?: StartOptions['fastify']): Promise<TestApp> {
  return await startApp({
    port,
    fastify,
    jwt: false,
    realtime: { auth: false, history: { rooms: /^h:/, ...history }, ...realtime },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: {
          join: {
            schema: Type.Object({ room: Type.String(), since: Type.Optional(Type.Unknown()) }),
            handler: async ({ room, since }, conn) => await conn.join(room, since === undefined ? undefined : { since: since as any }) ?? null
          },
          joinMany: {
            schema: Type.Object({ rooms: Type.Array(Type.String(), { maxItems: 64 }) }),
            handler: async ({ rooms }, conn) => await Promise.all(rooms.map(async (room) => await conn.join(room)))
          },
          joinNoWait: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.join(room).catch(() => {}); return null } },
          leave: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.leave(room); return null } },
          say: {
            schema: Type.Object({ room: Type.String(), n: Type.Number(), volatile: Type.Optional(Type.Boolean()) }),
            handler: ({ room, n, volatile }, conn) => app.realtime.to(room).send('said', { n }, { except: conn, volatile })
          }
        },
        events: { said: Type.Object({ n: Type.Number() }) }
      })
    }
  })
}

let nextId = 1000

/** Sends a request and collects every message up to its reply: `{ before, reply }`. */
export async function call (c: TestClient, type: string, data: unknown, timeout = 5000): Promise<{ before: any[], reply: any }> {
  const id = nextId++
  c.sendJson({ type, data, id })
  const before: any[] = []
  for (;;) {
    const m = await c.nextMessage(timeout)
    if ((m.type === 'reply' || m.type === 'error') && m.id === id) return { before, reply: m }
    before.push(m)
  }
}

/** A raw client of the history app. */
export async function client (h: TestApp): Promise<TestClient> {
  return await connect(`${h.wsBase}/rt`)
}

/** Publishes `count` events `{ n }` from the server, numbered from `from`. */
export function publish (h: TestApp, room: string, from: number, count: number): void {
  for (let i = 0; i < count; i++) h.app.realtime.to(room).send('said', { n: from + i })
}

/** Reads `count` messages. */
export async function take (c: TestClient, count: number, timeout = 5000): Promise<any[]> {
  const out = []
  for (let i = 0; i < count; i++) out.push(await c.nextMessage(timeout))
  return out
}
