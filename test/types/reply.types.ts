// Type tests of `reply` schemas: checked by `npm run typecheck` (tsc --noEmit); never run. Each @ts-expect-error must stay an error.
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import { expectTypeOf } from 'expect-type'
import realtime, { defineRoute } from '../../lib/index.js'
import { createClient } from '../../lib/client/index.js'

const app = Fastify()
await app.register(realtime, { auth: false })

const Joined = Type.Object({ room: Type.String(), users: Type.Array(Type.String()) })

const rooms = app.realtimeRoute({
  url: '/rooms',
  messages: {
    join: {
      schema: Type.Object({ room: Type.String() }),
      reply: Joined,
      handler: ({ room }) => {
        expectTypeOf(room).toEqualTypeOf<string>()
        return { room, users: ['me'] }
      }
    },
    // An async handler may resolve to the reply.
    count: {
      schema: Type.Object({ room: Type.String() }),
      reply: Type.Number(),
      handler: async ({ room }) => room.length
    },
    // Without a reply schema the handler returns anything, as before.
    free: {
      schema: Type.Object({ n: Type.Number() }),
      handler: ({ n }) => ({ doubled: n * 2 })
    }
  }
})

expectTypeOf<ReturnType<typeof rooms.messages['join']['handler']>>().toEqualTypeOf<{ room: string, users: string[] }>()
expectTypeOf(rooms.url).toEqualTypeOf<string>()
expectTypeOf<ReturnType<typeof rooms.messages['free']['handler']>>().toEqualTypeOf<{ doubled: number }>()

app.realtimeRoute({
  url: '/broken',
  messages: {
    leave: {
      schema: Type.Object({ room: Type.String() }),
      reply: Joined,
      // @ts-expect-error the handler returns something other than its reply schema
      handler: ({ room }) => ({ room, users: 3 })
    }
  }
})

app.realtimeRoute({
  url: '/broken-async',
  messages: {
    // @ts-expect-error a promise of the wrong type
    count: { schema: Type.Object({}), reply: Type.Number(), handler: async () => 'many' }
  }
})

app.realtimeRoute({
  url: '/not-a-schema',
  messages: {
    // @ts-expect-error a reply is a schema
    count: { schema: Type.Object({}), reply: 'number', handler: () => 1 }
  }
})

// defineRoute takes reply schemas alike, and the client reads the reply from the handler.
const defined = defineRoute({
  url: '/defined',
  messages: {
    stamp: { schema: Type.Object({}), reply: Type.Object({ at: Type.Number() }), handler: () => ({ at: Date.now() }) }
  }
})
app.realtimeRoute(defined)
const client = createClient<typeof defined>('ws://localhost/defined')
expectTypeOf(client.request('stamp', {})).resolves.toEqualTypeOf<{ at: number }>()
