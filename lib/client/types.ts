import type { SchemaLike as TSchema, StaticOf as Static } from '../schema-types.js'
import type { RealtimeClientError } from './errors.js'
import type { RecoveryEvent } from './positions.js'

/**
 * What the client needs to know of a route, structurally: `app.realtimeRoute()` and `defineRoute()` both return
 * it. Import the route's type with `import type`, so no server code reaches the client's bundle.
 */
export interface AnyRoute {
  messages: Record<string, { schema: TSchema, handler: (...args: any[]) => unknown }>
  events: Record<string, TSchema>
}

/** What carries the connection: a WebSocket, or the HTTP-streaming fallback (docs/15-fallback.md). */
export type Transport = 'websocket' | 'stream'

/** The client's own events, beside the route's. */
export interface LifecycleEvents {
  /** The connection opened (the first time, after each reconnect, and on moving from the stream to a WebSocket). */
  open: { reconnected: boolean, transport: Transport }
  /** The socket closed (or a connect attempt failed), with the close code and reason. */
  close: { code: number, reason: string }
  /** A reconnect attempt is scheduled in `delay` ms. */
  reconnecting: { attempt: number, delay: number }
  /** The client gave up for good (a refusal, a final close code, `maxAttempts`), and why. */
  offline: RealtimeClientError
  /** An error envelope that answered no request (a rate-limited `send`, say), or a failed `onReconnect`. */
  error: RealtimeClientError
  /** A binary frame from the server. */
  binary: ArrayBuffer
  /** A history room was joined again from a position: recovered (the missed events follow), or why not (reload it). */
  recovery: RecoveryEvent
}
export type LifecycleEvent = keyof LifecycleEvents

/** The route's message types. */
export type MessageType<R extends AnyRoute> = keyof R['messages'] & string
/** A message's `data`, from its schema. */
export type MessageData<R extends AnyRoute, K extends MessageType<R>> = Static<R['messages'][K]['schema']>

type IsAny<T> = 0 extends 1 & T ? true : false
/** A handler's result as the wire carries it: nothing (undefined, void) arrives as null. */
export type WireResult<T> =
  IsAny<T> extends true ? any
    : [T] extends [undefined | void] ? null
        : undefined extends T ? Exclude<T, undefined | void> | null : T
/** The reply's data: what the handler returns, awaited, with nothing as null. */
export type ReplyData<R extends AnyRoute, K extends MessageType<R>> = WireResult<Awaited<ReturnType<R['messages'][K]['handler']>>>

/** The route's event types (a route event named like a lifecycle event is never delivered: the lifecycle wins). */
export type EventType<R extends AnyRoute> = Exclude<keyof R['events'] & string, LifecycleEvent>
/** An event's `data`, from its schema. */
export type EventData<R extends AnyRoute, K extends EventType<R>> = Static<R['events'][K]>

/** What `on(type, listener)` accepts: the route's events and the lifecycle events. */
export type ListenerType<R extends AnyRoute> = EventType<R> | LifecycleEvent
/** What a listener of `K` receives. */
export type ListenerData<R extends AnyRoute, K> =
  K extends LifecycleEvent ? LifecycleEvents[K] : K extends EventType<R> ? EventData<R, K> : never

/**
 * The part of a WebSocket the client uses: the browser's, or the `ws` package's on Node. Declared with method
 * syntax on purpose: methods compare their parameters bivariantly, so ws's keyed `addEventListener` overloads and
 * the DOM's both fit without a cast.
 */
export interface WebSocketLike {
  readonly readyState: number
  binaryType?: string
  send (data: string): void
  close (code?: number, reason?: string): void
  addEventListener (type: string, listener: (event: any) => void): void
  removeEventListener (type: string, listener: (event: any) => void): void
  /** `ws` has it; a browser's socket does not. */
  terminate? (): void
}

/** A WebSocket constructor: the global one, or `import WebSocket from 'ws'` on Node. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike
