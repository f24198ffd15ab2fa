// The chat's realtime route: rooms, messages, typing and presence. The page's client is typed from `ChatRoute`.
// Chat rooms keep history (see `history` in app.ts): a page that reconnects gets what it missed, once and in order.
// They keep presence too (see `presence` in app.ts): the member list, and who is typing as each member's data,
// across every instance.
import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'
import { RealtimeError } from '../lib/index.js'

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

export function registerChat (app: FastifyInstance, recent = new RecentMessages()) {
  const nameOf = (user: unknown): string => String((user as { sub?: unknown }).sub ?? 'anonymous')
  return app.realtimeRoute({
    url: '/chat',
    protocols: ['realtime.v1'],
    // Users behind a proxy that blocks WebSockets get the HTTP-streaming fallback (docs/15-fallback.md).
    fallback: true,
    messages: {
      'room.join': {
        schema: Type.Object({ room: Room }),
        reply: Type.Object({ room: Type.String(), users: Type.Array(Type.String(), { description: 'who is in the room' }) }),
        handler: async ({ room }, conn) => {
          // Resolves once rt.position and the replay of what this page missed are written: the reply follows them.
          // The member key is the user id (the token's sub): two tabs of one user are one member.
          if (!conn.rooms.has(room)) await conn.join(room, { presence: { data: { typing: false } } })
          return { room, users: [...(await app.realtime.presence(room).list()).keys()].sort() }
        }
      },
      'room.leave': {
        schema: Type.Object({ room: Room }),
        reply: Type.Object({ room: Type.String() }),
        handler: async ({ room }, conn) => {
          if (!conn.rooms.has(room)) return { room }
          conn.leave(room)
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
        schema: Type.Object({ room: Room, typing: Type.Optional(Type.Boolean()) }),
        handler: ({ room, typing }, conn) => {
          // Every page sees it as an `update` of this member's presence data.
          if (conn.rooms.has(room)) conn.presence(room).update({ typing: typing ?? true })
        }
      }
    },
    events: {
      'chat.message': Type.Object({ room: Type.String(), from: Type.String(), text: Type.String(), at: Type.Number() })
    }
  })
}

export type ChatRoute = ReturnType<typeof registerChat>
