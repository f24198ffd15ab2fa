// The chat's realtime route: rooms, messages, typing and presence. The page's client is typed from `ChatRoute`.
import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'
import { RealtimeError } from '../lib/index.js'
import type { Presence } from './presence.js'

export const MAX_MESSAGE_LENGTH = 500
const Room = Type.String({ minLength: 1, maxLength: 32, pattern: '^[\\w-]+$' })

export function registerChat (app: FastifyInstance, presence: Presence) {
  const nameOf = (user: unknown): string => String((user as { sub?: unknown }).sub ?? 'anonymous')
  async function announce (room: string, users: string[]): Promise<void> {
    app.realtime.to(room).send('presence', { room, users })
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
          conn.join(room)
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
        handler: ({ room, text }, conn) => {
          if (!conn.rooms.has(room)) throw new RealtimeError('NOT_IN_ROOM', `join ${room} first`)
          const at = Date.now()
          app.realtime.to(room).send('chat.message', { room, from: nameOf(conn.user), text, at })
          return { at }
        }
      },
      typing: {
        schema: Type.Object({ room: Room }),
        handler: ({ room }, conn) => {
          if (conn.rooms.has(room)) app.realtime.to(room).send('typing', { room, from: nameOf(conn.user) }, { except: conn })
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
