// The chat's realtime route: rooms, messages, typing and presence. The page's client is typed from `ChatRoute`.
// Chat rooms keep history (see `history` in app.ts): a page that reconnects gets what it missed, once and in order;
// typing and presence are volatile (not worth replaying).
import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'
import { RealtimeError } from '../lib/index.js'
import type { Presence } from './presence.js'

export const MAX_MESSAGE_LENGTH = 500
const Room = Type.String({ minLength: 1, maxLength: 32, pattern: '^[\\w-]+$' })

/** A chat message as sent and stored. */
export interface ChatMessage { room: string, from: string, text: string, at: number }

/** The example's stand-in for a database: the last 50 messages of each room, for the page's reload. */
export class RecentMessages {
  private readonly rooms = new Map<string, ChatMessage[]>()

  add (message: ChatMessage): void {
    let list = this.rooms.get(message.room)
    if (list === undefined) this.rooms.set(message.room, list = [])
    list.push(message)
    if (list.length > 50) list.shift()
  }

  list (room: string): ChatMessage[] {
    return this.rooms.get(room) ?? []
  }
}

export function registerChat (app: FastifyInstance, presence: Presence, recent = new RecentMessages()) {
  const nameOf = (user: unknown): string => String((user as { sub?: unknown }).sub ?? 'anonymous')
  async function announce (room: string, users: string[]): Promise<void> {
    app.realtime.to(room).send('presence', { room, users }, { volatile: true })
  }
  return app.realtimeRoute({
    url: '/chat',
    protocols: ['realtime.v1'],
    messages: {
      'room.join': {
        schema: Type.Object({ room: Room }),
        reply: Type.Object({ room: Type.String(), users: Type.Array(Type.String(), { description: 'who is in the room' }) }),
        handler: async ({ room }, conn) => {
          if (conn.rooms.has(room)) return { room, users: [] as string[] }
          // Resolves once rt.position and the replay of what this page missed are written: the reply follows them.
          await conn.join(room)
          const users = await presence.join(room, nameOf(conn.user))
          await announce(room, users)
          return { room, users }
        }
      },
      'room.leave': {
        schema: Type.Object({ room: Room }),
        reply: Type.Object({ room: Type.String() }),
        handler: async ({ room }, conn) => {
          if (!conn.rooms.has(room)) return { room }
          conn.leave(room)
          await announce(room, await presence.leave(room, nameOf(conn.user)))
          return { room }
        }
      },
      'chat.send': {
        schema: Type.Object({ room: Room, text: Type.String({ minLength: 1, maxLength: MAX_MESSAGE_LENGTH }) }),
        reply: Type.Object({ at: Type.Number({ description: 'when the server took it, ms since the epoch' }) }),
        handler: async ({ room, text }, conn) => {
          if (!conn.rooms.has(room)) throw new RealtimeError('NOT_IN_ROOM', `join ${room} first`)
          const message = { room, from: nameOf(conn.user), text, at: Date.now() }
          recent.add(message)
          // Resolves once stored (rejects, and the sender sees an error, when the history store is unavailable).
          await app.realtime.to(room).publish('chat.message', message)
          return { at: message.at }
        }
      },
      typing: {
        schema: Type.Object({ room: Room }),
        handler: ({ room }, conn) => {
          if (conn.rooms.has(room)) app.realtime.to(room).send('typing', { room, from: nameOf(conn.user) }, { except: conn, volatile: true })
        }
      }
    },
    events: {
      'chat.message': Type.Object({ room: Type.String(), from: Type.String(), text: Type.String(), at: Type.Number() }),
      presence: Type.Object({ room: Type.String(), users: Type.Array(Type.String()) }),
      typing: Type.Object({ room: Type.String(), from: Type.String() })
    },
    onClose: async (conn) => {
      for (const room of conn.rooms) await announce(room, await presence.leave(room, nameOf(conn.user)))
    }
  })
}

export type ChatRoute = ReturnType<typeof registerChat>
