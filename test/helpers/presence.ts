import { Type } from '@sinclair/typebox'
import type { RealtimeOptions } from '../../lib/index.js'
import type { PresenceOptions } from '../../lib/presence/options.js'
import { startApp, type TestApp } from './app.js'
import { connect, type TestClient } from './client.js'

/**
 * An app whose rooms starting with `p:` keep presence; the session is `?user=<id>` (the user id is the key).
 * Messages: `join { room, data?, key?, watch? }`, `leave { room }`, `update { room, data }`, `say { room, n }`.
 */
export async function presenceApp (presence: Partial<PresenceOptions> = {}, realtime: RealtimeOptions = {}, port = 0): Promise<TestApp> {
  return await startApp({
    port,
    jwt: false,
    realtime: {
      auth: { authenticate: (request) => ({ sub: new URL(request.url, 'http://x').searchParams.get('user') ?? undefined }) },
      presence: { rooms: /^p:/, ...presence },
      ...realtime
    },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: {
          join: {
            schema: Type.Object({ room: Type.String(), key: Type.Optional(Type.String()), data: Type.Optional(Type.Unknown()), watch: Type.Optional(Type.Boolean()) }),
            handler: async ({ room, key, data, watch }, conn) => {
              // The reply says how the join went for presence: member, watching, full, unavailable or left.
              return (await conn.join(room, { presence: watch === true ? false : { key, data } }))?.presence ?? null
            }
          },
          leave: { schema: Type.Object({ room: Type.String() }), handler: ({ room }, conn) => { conn.leave(room); return null } },
          update: { schema: Type.Object({ room: Type.String(), data: Type.Unknown() }), handler: ({ room, data }, conn) => { conn.presence(room).update(data); return null } },
          say: { schema: Type.Object({ room: Type.String(), n: Type.Number() }), handler: ({ room, n }) => { app.realtime.to(room).send('said', { n }); return null } }
        },
        events: { said: Type.Object({ n: Type.Number() }) }
      })
    }
  })
}

/** A raw client of user `user` that records every presence frame it gets. */
export class PresenceClient {
  readonly frames: any[] = []
  private nextId = 1
  private readonly replies = new Map<number, (m: any) => void>()

  constructor (readonly c: TestClient) {
    c.ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString())
      if ((m.type === 'reply' || m.type === 'error') && this.replies.has(m.id)) {
        this.replies.get(m.id)?.(m)
        this.replies.delete(m.id)
        return
      }
      this.frames.push(m)
    })
  }

  async call (type: string, data: unknown, timeout = 5000): Promise<any> {
    const id = this.nextId++
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`no reply to ${type} within ${timeout} ms`)) }, timeout)
      this.replies.set(id, (m) => { clearTimeout(timer); resolve(m) })
      this.c.sendJson({ type, data, id })
    })
  }

  /** Presence events seen so far as `join:key`, `leave:key`, `update:key` (diffs only, in order). */
  events (room: string): string[] {
    const out: string[] = []
    for (const f of this.frames) {
      if (f.type !== 'rt.presence.diff' || f.data.room !== room) continue
      for (const key of Object.keys(f.data.joins)) out.push(`join:${key}`)
      for (const key of f.data.leaves) out.push(`leave:${key}`)
      for (const key of Object.keys(f.data.updates)) out.push(`update:${key}`)
    }
    return out
  }

  snapshots (room: string): any[] {
    return this.frames.filter((f) => f.type === 'rt.presence' && f.data.room === room).map((f) => f.data)
  }

  destroy (): void {
    this.c.destroy()
  }
}

export async function presenceClient (h: { wsBase: string }, user: string): Promise<PresenceClient> {
  return new PresenceClient(await connect(`${h.wsBase}/rt?user=${encodeURIComponent(user)}`))
}

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
