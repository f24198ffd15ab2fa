// Type tests: checked by `npm run typecheck` (tsc --noEmit); never run. A handler that uses its own route's handle
// (publish and return the position, reply with the count a send reached) types the route when its return type is
// written out: without it TypeScript cannot infer the route's type from itself (TS7022/TS7023), as docs/01-getting-started.md says.
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import { expectTypeOf } from 'expect-type'
import realtime, { type Position } from '../../lib/index.js'
import type { ReplyData } from '../../lib/client/index.js'

const app = Fastify()
await app.register(realtime, { auth: false })

const news = app.realtimeRoute({
  url: '/news',
  messages: {
    post: {
      schema: Type.Object({ room: Type.String(), text: Type.String() }),
      handler: async ({ room, text }): Promise<Position> => await news.to(room).publish('news.item', { text })
    },
    shout: {
      schema: Type.Object({ room: Type.String(), text: Type.String() }),
      handler: ({ room, text }): number => news.to(room).send('news.item', { text })
    }
  },
  events: { 'news.item': Type.Object({ text: Type.String() }) }
})

expectTypeOf<ReplyData<typeof news, 'post'>>().toEqualTypeOf<Position>()
expectTypeOf<ReplyData<typeof news, 'shout'>>().toEqualTypeOf<number>()
