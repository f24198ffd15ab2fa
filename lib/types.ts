import type { SchemaLike as TSchema } from './schema-types.js'
import type { EventSchemas, MessageDefinitions, RegisteredRoute, RouteDefinition } from './definition.js'
import type { RealtimeRegistry } from './registry.js'

// The one place where fastify-realtime adds to Fastify's types.
declare module 'fastify' {
  interface FastifyInstance {
    /** Every open realtime connection of this instance, by id, user and room, and fan-out to them. */
    realtime: RealtimeRegistry
    /**
     * Registers a realtime route on this instance (its prefix and hooks apply) and returns the definition, typed,
     * for `createClient<typeof route>()`, with `to(room)`, `toUser(id)` and `broadcast()` typed by its `events`.
     * Always `await app.register(realtime)` first: before that, this method does not exist.
     */
    realtimeRoute: <S extends Record<string, TSchema>, M extends MessageDefinitions<S, E, R>, E extends EventSchemas = {}, R = {}>(
      definition: RouteDefinition<S, M, E, R>
    ) => RegisteredRoute<S, M, E>
  }
}
