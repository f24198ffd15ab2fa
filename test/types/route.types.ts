// Type tests: checked by `npm run typecheck` (tsc --noEmit); never run. Each @ts-expect-error must stay an error.
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import { expectTypeOf } from 'expect-type'
import realtime, { defineRoute, type Connection, type RealtimeRegistry } from '../../lib/index.js'

const app = Fastify()
await app.register(realtime, { auth: false })

const chat = app.realtimeRoute({
  url: '/chat',
  messages: {
    'room.join': {
      schema: Type.Object({ room: Type.String({ maxLength: 64 }) }),
      handler: ({ room }, conn) => {
        expectTypeOf(room).toEqualTypeOf<string>()
        conn.join(room)
        return { joined: room }
      }
    },
    'chat.send': {
      schema: Type.Object({ room: Type.String(), text: Type.String(), urgent: Type.Optional(Type.Boolean()) }),
      handler: async (data, conn) => {
        expectTypeOf(data).toEqualTypeOf<{ room: string, text: string, urgent?: boolean }>()
        conn.send('chat.message', { from: 'me', text: data.text })
        // @ts-expect-error an unknown event type
        conn.send('chat.mesage', { from: 'me', text: data.text })
        // @ts-expect-error wrong data for the event
        conn.send('chat.message', { from: 1, text: data.text })
        // @ts-expect-error data missing a property
        conn.send('chat.message', { text: data.text })
        // @ts-expect-error room is a string
        const n: number = data.room
        return n
      }
    }
  },
  events: { 'chat.message': Type.Object({ from: Type.String(), text: Type.String() }) }
})

expectTypeOf(chat.url).toEqualTypeOf<string>()
expectTypeOf<ReturnType<typeof chat.messages['room.join']['handler']>>().toEqualTypeOf<{ joined: string }>()
expectTypeOf<Awaited<ReturnType<typeof chat.messages['chat.send']['handler']>>>().toEqualTypeOf<number>()
expectTypeOf(app.realtime).toEqualTypeOf<RealtimeRegistry>()
expectTypeOf(app.realtime.byUser('u')).toEqualTypeOf<Array<Connection<any, any>>>()

// A route without events can send none.
app.realtimeRoute({
  url: '/quiet',
  messages: {
    hello: {
      schema: Type.Object({ a: Type.Number() }),
      handler: ({ a }, conn) => {
        expectTypeOf(a).toEqualTypeOf<number>()
        // @ts-expect-error no events declared
        conn.send('anything', {})
      }
    }
  }
})

// defineRoute keeps the same types and can be passed to realtimeRoute later.
const defined = defineRoute({
  url: '/defined',
  messages: { sum: { schema: Type.Array(Type.Number()), handler: (xs) => xs.reduce((a, b) => a + b, 0) } }
})
expectTypeOf<ReturnType<typeof defined.messages.sum.handler>>().toEqualTypeOf<number>()
app.realtimeRoute(defined)

app.realtimeRoute({
  url: '/bad',
  messages: {
    // @ts-expect-error a handler must take the schema's type
    a: { schema: Type.Object({ a: Type.Number() }), handler: (data: { a: string }) => data }
  }
})

// The handle realtimeRoute returns fans out typed by the route's events, even from the route's own handlers.
const typed = app.realtimeRoute({
  url: '/typed',
  messages: {
    say: {
      schema: Type.Object({ room: Type.String(), text: Type.String() }),
      handler: ({ room, text }, conn) => {
        typed.to(room).send('said', { text }, { except: conn })
        // @ts-expect-error a misspelled event name
        typed.to(room).send('sayd', { text })
      }
    }
  },
  events: { said: Type.Object({ text: Type.String() }) }
})
expectTypeOf(typed.to('r').send('said', { text: 'x' })).toEqualTypeOf<number>()
expectTypeOf(typed.toUser('u').send('said', { text: 'x' })).toEqualTypeOf<number>()
expectTypeOf(typed.broadcast('said', { text: 'x' })).toEqualTypeOf<number>()
// @ts-expect-error wrong data for the event
typed.toUser('u').send('said', { text: 1 })
// @ts-expect-error an event of another route
typed.broadcast('chat.message', { from: 'a', text: 'b' })
// The registry's own fan-outs stay untyped, for code that does not hold the route.
app.realtime.to('r').send('anything', { at: 'all' })
// History rooms: a join's position, publish()'s, and the options.
declare const someConn: Connection
expectTypeOf(someConn.join('room')).resolves.toEqualTypeOf<import('../../lib/index.js').JoinResult | undefined>()
// A history room's position narrows by its epoch; a presence room's outcome is one of five words.
const joined = await someConn.join('room')
if (joined?.epoch !== undefined) expectTypeOf(joined.offset).toEqualTypeOf<number>()
expectTypeOf(joined?.presence).toEqualTypeOf<'member' | 'watching' | 'full' | 'unavailable' | 'left' | undefined>()
someConn.join('room', { since: { epoch: 'aZkQpLmx', offset: 41 } }).catch(() => {})
// @ts-expect-error since is a position
someConn.join('room', { since: 41 }).catch(() => {})
expectTypeOf(app.realtime.to('room').publish('chat.message', {})).resolves.toEqualTypeOf<import('../../lib/index.js').Position>()
expectTypeOf(app.realtime.history('room').position()).resolves.toEqualTypeOf<import('../../lib/index.js').Position>()
app.realtime.to('room').send('typing', {}, { volatile: true })
await Fastify().register(realtime, { history: { rooms: (room) => room.startsWith('chat:') ? { size: 10 } : false, ttl: 60_000 } })
// @ts-expect-error rooms is required
await Fastify().register(realtime, { history: { size: 10 } })
