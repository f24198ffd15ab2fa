import type { FastifyRequest } from 'fastify'
import type { SchemaLike as TSchema, StaticOf as Static } from './schema-types.js'
import type { AuthOptions, OriginsOption } from './options.js'
import type { Connection } from './connection.js'
import type { Except, SendOptions } from './registry.js'
import type { Position } from './history/store.js'

/** Server-to-client event types of a route, each with its TypeBox schema. */
export type EventSchemas = Record<string, TSchema>

/** What a handler may return: the reply schema's type (or a promise of it) when the message declares one. */
export type HandlerResult<R> = R extends TSchema ? Static<R> | Promise<Static<R>> : unknown

/**
 * The handlers of a route's message types, `data` typed from each schema, and the return value from `reply` when
 * given (`R` maps a type to its reply schema; it is inferred, never written).
 */
export type MessageDefinitions<S extends Record<string, TSchema>, E extends EventSchemas, R = {}> = {
  [K in keyof S]: {
    /** TypeBox schema of the message's `data`, compiled once with TypeCompiler. */
    schema: S[K]
    /**
     * TypeBox schema of the reply's `data`: types the handler's return value and documents the reply in the
     * AsyncAPI document (not checked at run time). @default none: any return value, `{}` in the document
     */
    reply?: R[K & keyof R] extends TSchema | undefined ? R[K & keyof R] : TSchema
    /**
     * Handles one message. Its return value is the reply's `data` when the message carried an `id`.
     * Throw a `RealtimeError` to answer with your own error code.
     */
    handler: (data: Static<S[K]>, conn: Connection<E>) => HandlerResult<R[K & keyof R]>
  }
}

/** Where `R` of `MessageDefinitions` is inferred from: the `reply` of each message type. */
export type ReplySchemas<R> = { [K in keyof R]: { reply?: R[K] } }

/** What `app.realtimeRoute()` takes. */
export interface RouteDefinition<S extends Record<string, TSchema>, M extends MessageDefinitions<S, E, R>, E extends EventSchemas, R = {}> {
  /** The route's path (the encapsulation context's prefix applies). */
  url: string
  /** Client-to-server message types with their schemas and handlers. */
  messages: M & MessageDefinitions<S, E, R> & ReplySchemas<R>
  /** Server-to-client event types with their schemas, so that `conn.send` is typed. */
  events?: E
  /** Handles binary frames; without it a binary frame gets `BINARY_NOT_ACCEPTED`. */
  binary?: (data: Buffer, conn: Connection<E>) => unknown
  /** Runs when the socket opens, before any of its messages is handled. A throw closes it with 1011. */
  onOpen?: (conn: Connection<E>) => unknown
  /** Runs once when the socket closes, whatever the cause, for every connection whose `onOpen` ran. */
  onClose?: (conn: Connection<E>, code: number, reason: string) => unknown
  /** Overrides the plugin's `origins` for this route. */
  origins?: OriginsOption
  /** Overrides the plugin's `requireOrigin` for this route. */
  requireOrigin?: boolean
  /** Overrides the plugin's `auth` for this route. */
  auth?: AuthOptions | false
  /**
   * Application subprotocols this route accepts; the first one the client offers is selected (`bearer.` entries
   * never are). @default any
   */
  protocols?: readonly string[]
  /** Extra headers of the 101 response (a Set-Cookie, say): `reply.header()` cannot reach a 101. */
  upgradeHeaders?: (request: FastifyRequest) => Record<string, string | readonly string[]>
  /**
   * Also serve clients whose network blocks WebSockets: an HTTP stream (server-sent events) and POSTed batches on
   * this route's URL (docs/15-fallback.md). Overrides the plugin's `fallback`. @default false
   */
  fallback?: boolean
}

/** The typed route: what `realtimeRoute` and `defineRoute` return, and what `createClient<typeof route>` reads. */
export interface RealtimeRoute<M = Record<string, { schema: TSchema, reply?: TSchema, handler: (...args: any[]) => unknown }>, E extends EventSchemas = EventSchemas> {
  url: string
  messages: M
  events: E
}

/** A route definition as `realtimeRoute` and `defineRoute` return it: each handler keeps its own return type. */
export type TypedRoute<S extends Record<string, TSchema>, M extends MessageDefinitions<S, E, any>, E extends EventSchemas> =
  Omit<RouteDefinition<S, M, E, any>, 'messages' | 'events'> & RealtimeRoute<M, E>

/** A fan-out typed by a route's events: a misspelled event name or data of the wrong shape does not compile. */
export interface TypedFanOut<E extends EventSchemas> {
  /** Sends `{ type, data }` to every member, here and (with a broker) on every instance; returns the local count. */
  send: <K extends keyof E & string>(type: K, data: Static<E[K]>, options?: SendOptions) => number
  /** History rooms: sends and resolves with the event's `{ epoch, offset }` once stored (see `app.realtime.to`). */
  publish: <K extends keyof E & string>(type: K, data: Static<E[K]>, options?: { except?: Except }) => Promise<Position>
}

/**
 * What `app.realtimeRoute()` returns: the typed route (for `createClient<typeof route>()`) with fan-outs typed by
 * its `events`. They reach the same connections as `app.realtime.to()`, `toUser()` and `broadcast()`: every
 * member, whichever route it connected through.
 */
export interface RouteFanOut<E extends EventSchemas> {
  /** The members of a room. */
  to: (room: string) => TypedFanOut<E>
  /** Every connection of a user. */
  toUser: (userId: string) => TypedFanOut<E>
  /** Every connection of this instance (and of every instance, with a broker); returns the local count. */
  broadcast: <K extends keyof E & string>(type: K, data: Static<E[K]>, options?: { except?: Except }) => number
}

/** A registered route: `TypedRoute` plus its typed fan-outs. */
export type RegisteredRoute<S extends Record<string, TSchema>, M extends MessageDefinitions<S, E, any>, E extends EventSchemas> =
  TypedRoute<S, M, E> & RouteFanOut<E>

/**
 * Returns its argument, typed: define a route in its own module (for `import type` by the client) and pass it to
 * `app.realtimeRoute()` later.
 */
export function defineRoute<S extends Record<string, TSchema>, M extends MessageDefinitions<S, E, R>, E extends EventSchemas = {}, R = {}> (
  definition: RouteDefinition<S, M, E, R>
): TypedRoute<S, M, E> {
  return definition as unknown as TypedRoute<S, M, E>
}
