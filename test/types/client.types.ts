// Type tests of the client: checked by `npm run typecheck` (tsc --noEmit), never run. Routes are imported as types.
import { expectTypeOf } from 'expect-type'
import { Type } from '@sinclair/typebox'
import { createClient, type RealtimeClient, type RealtimeClientError, type ReplyData } from '../../lib/client/index.js'
import type { ChatRoute } from '../../example/chat-route.js'
import { defineRoute } from '../../lib/index.js'

// A route as app.realtimeRoute() returns it (the example's).
const chat = createClient<ChatRoute>('ws://localhost/chat', { getToken: async () => 'token' })

// Requests: type and data checked, the reply inferred from the handler (awaited).
expectTypeOf(chat.request('room.join', { room: 'lobby' })).resolves.toEqualTypeOf<{ room: string, users: string[] }>()
expectTypeOf(chat.request('chat.send', { room: 'lobby', text: 'hi' }, { timeout: 500 })).resolves.toEqualTypeOf<{ at: number }>()
expectTypeOf<ReplyData<ChatRoute, 'typing'>>().toEqualTypeOf<null>()
// @ts-expect-error an unknown message type
chat.request('room.joined', { room: 'lobby' })
// @ts-expect-error wrong data
chat.request('room.join', { room: 1 })
// @ts-expect-error a timeout is a number
chat.request('room.join', { room: 'lobby' }, { timeout: '1s' })
// @ts-expect-error missing data
chat.send('chat.send', { room: 'lobby' })
// @ts-expect-error an unknown message type
chat.send('chat.sned', { room: 'lobby', text: 'hi' })
// @ts-expect-error a message type is not an event
chat.on('room.join', () => {})
expectTypeOf(chat.send('typing', { room: 'lobby' })).toEqualTypeOf<void>()

// Events: typed by the route's events; lifecycle events by the client.
chat.on('chat.message', (m) => { expectTypeOf(m).toEqualTypeOf<{ room: string, from: string, text: string, at: number }>() })
// Presence rooms: the members and their events.
expectTypeOf(chat.presence('lobby').members).toEqualTypeOf<ReadonlyMap<string, unknown>>()
chat.presence('lobby').on('join', ({ key, data }) => { expectTypeOf(key).toEqualTypeOf<string>(); expectTypeOf(data).toEqualTypeOf<unknown>() })
chat.presence('lobby').on('sync', (members) => { expectTypeOf(members).toEqualTypeOf<ReadonlyMap<string, unknown>>() })
// @ts-expect-error not a presence event
chat.presence('lobby').on('joined', () => {})
chat.on('open', ({ reconnected }) => { expectTypeOf(reconnected).toEqualTypeOf<boolean>() })
chat.on('close', ({ code, reason }) => { expectTypeOf(code).toEqualTypeOf<number>(); expectTypeOf(reason).toEqualTypeOf<string>() })
chat.on('reconnecting', ({ attempt, delay }) => { expectTypeOf(attempt + delay).toEqualTypeOf<number>() })
chat.on('offline', (err) => { expectTypeOf(err).toEqualTypeOf<RealtimeClientError>() })
chat.on('error', (err) => { expectTypeOf(err.code).toEqualTypeOf<string>() })
// Recovery of history rooms: the event, and positions.
chat.on('recovery', ({ room, recovered, missed, reason }) => {
  expectTypeOf(room).toEqualTypeOf<string>()
  expectTypeOf(recovered).toEqualTypeOf<boolean>()
  expectTypeOf(missed).toEqualTypeOf<number | undefined>()
  expectTypeOf(reason).toEqualTypeOf<string | undefined>()
})
expectTypeOf(chat.position('lobby')).toEqualTypeOf<{ epoch: string, offset: number } | undefined>()
chat.setPosition('lobby', { epoch: 'aZkQpLmx', offset: 41 })
// @ts-expect-error a position has an epoch
chat.setPosition('lobby', { offset: 41 })
// @ts-expect-error an unknown event name
chat.on('chat.mesage', () => {})
// @ts-expect-error the listener's data is the event's
chat.on('chat.message', (p: { room: number }) => {})
const listener = (m: { room: string, from: string }): void => {}
chat.on('chat.message', listener).off('chat.message', listener)

// onReconnect gets the typed client.
createClient<ChatRoute>('ws://localhost/chat', {
  onReconnect: async (client) => {
    expectTypeOf(client).toEqualTypeOf<RealtimeClient<ChatRoute>>()
    await client.request('room.join', { room: 'lobby' })
  }
})

// defineRoute types the client just as well. Nothing comes back as null; a maybe-nothing as T | null.
const route = defineRoute({
  url: '/x',
  messages: {
    fire: { schema: Type.Object({ n: Type.Number() }), handler: () => {} },
    sum: { schema: Type.Array(Type.Number()), handler: async (xs) => xs.reduce((a, b) => a + b, 0) },
    find: { schema: Type.String(), handler: (id) => id === '' ? undefined : { id } },
    anything: { schema: Type.Null(), handler: (): any => 1 }
  },
  events: { tick: Type.Integer(), close: Type.String() }
})
expectTypeOf(route.url).toEqualTypeOf<string>()
const x = createClient<typeof route>('ws://localhost/x')
expectTypeOf(x.request('fire', { n: 1 })).resolves.toEqualTypeOf<null>()
expectTypeOf(x.request('sum', [1, 2])).resolves.toEqualTypeOf<number>()
expectTypeOf(x.request('find', 'a')).resolves.toEqualTypeOf<{ id: string } | null>()
expectTypeOf(x.request('anything', null)).resolves.toBeAny()
x.on('tick', (n) => { expectTypeOf(n).toEqualTypeOf<number>() })
// A route event named like a lifecycle event is never delivered: `close` stays the lifecycle's.
x.on('close', (e) => { expectTypeOf(e).toEqualTypeOf<{ code: number, reason: string }>() })
// @ts-expect-error sum takes numbers
x.request('sum', ['1'])

// Without a route: anything goes, nothing is inferred.
const loose = createClient('ws://localhost/any')
expectTypeOf(loose.request('whatever', { a: 1 })).resolves.toBeUnknown()
