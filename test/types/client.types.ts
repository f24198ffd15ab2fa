// Type tests of the client: checked by `npm run typecheck`; never run. The route is imported as a type only.
import { expectTypeOf } from 'expect-type'
import { createClient, type RealtimeClientError } from '../../lib/client/index.js'
import type { ChatRoute } from '../../example/chat-route.js'
import { Type } from '@sinclair/typebox'
import { defineRoute } from '../../lib/index.js'

const chat = createClient<ChatRoute>('ws://localhost/chat', { getToken: async () => 'token' })

// Requests: type and data checked, the reply inferred from the handler.
expectTypeOf(chat.request('room.join', { room: 'lobby' })).resolves.toEqualTypeOf<{ room: string, users: string[] }>()
expectTypeOf(chat.request('chat.send', { room: 'lobby', text: 'hi' })).resolves.toEqualTypeOf<{ at: number }>()
// @ts-expect-error an unknown message type
chat.request('room.joined', { room: 'lobby' })
// @ts-expect-error wrong data
chat.request('room.join', { room: 1 })
// @ts-expect-error missing data
chat.send('chat.send', { room: 'lobby' })
chat.send('typing', { room: 'lobby' })

// Events: typed by the route's events; lifecycle events by the client.
chat.on('chat.message', (m) => { expectTypeOf(m).toEqualTypeOf<{ room: string, from: string, text: string, at: number }>() })
chat.on('presence', ({ users }) => { expectTypeOf(users).toEqualTypeOf<string[]>() })
chat.on('close', ({ code, reason }) => { expectTypeOf(code).toEqualTypeOf<number>(); expectTypeOf(reason).toEqualTypeOf<string>() })
chat.on('reconnecting', ({ attempt, delay }) => { expectTypeOf(attempt + delay).toEqualTypeOf<number>() })
chat.on('offline', (err) => { expectTypeOf(err).toEqualTypeOf<RealtimeClientError>() })
// @ts-expect-error an unknown event name
chat.on('chat.mesage', () => {})

// A handler that returns nothing replies null; defineRoute types the client just as well.
const route = defineRoute({
  url: '/x',
  messages: {
    fire: { schema: Type.Object({ n: Type.Number() }), handler: () => {} },
    sum: { schema: Type.Array(Type.Number()), handler: async (xs) => xs.reduce((a, b) => a + b, 0) }
  },
  events: { tick: Type.Integer() }
})
expectTypeOf(route.url).toEqualTypeOf<string>()
const x = createClient<typeof route>('ws://localhost/x')
expectTypeOf(x.request('fire', { n: 1 })).resolves.toEqualTypeOf<null>()
expectTypeOf(x.request('sum', [1, 2])).resolves.toEqualTypeOf<number>()
x.on('tick', (n) => { expectTypeOf(n).toEqualTypeOf<number>() })
// @ts-expect-error sum takes numbers
x.request('sum', ['1'])
