import type { Static, TSchema } from '@sinclair/typebox'

/** What the client needs to know of a route: the shape `app.realtimeRoute()` and `defineRoute()` return. */
export interface AnyRoute {
  messages: Record<string, { schema: TSchema, handler: (...args: any[]) => unknown }>
  events: Record<string, TSchema>
}

export type MessageType<R extends AnyRoute> = keyof R['messages'] & string
export type MessageData<R extends AnyRoute, K extends MessageType<R>> = Static<R['messages'][K]['schema']>
/** The reply's data: what the handler returns (resolved), or null when it returns nothing. */
export type ReplyData<R extends AnyRoute, K extends MessageType<R>> =
  Awaited<ReturnType<R['messages'][K]['handler']>> extends infer T ? ([T] extends [undefined | void] ? null : T) : never

export type EventType<R extends AnyRoute> = keyof R['events'] & string
export type EventData<R extends AnyRoute, K extends EventType<R>> = Static<R['events'][K]>

/** The client's own events, beside the route's. */
export interface LifecycleEvents<E> {
  /** The socket opened (first time and after each reconnect). */
  open: { reconnected: boolean }
  /** The socket closed, with the close code and reason. */
  close: { code: number, reason: string }
  /** A reconnect attempt is scheduled after `delay` ms. */
  reconnecting: { attempt: number, delay: number }
  /** The client gave up for good (a refusal, a final close code, `close()`): why. */
  offline: E
  /** The server sent an error envelope that answered no request. */
  error: E
  /** A binary frame from the server. */
  binary: ArrayBuffer
}

export type ListenerData<R extends AnyRoute, E, K> =
  K extends keyof LifecycleEvents<E> ? LifecycleEvents<E>[K] : K extends EventType<R> ? EventData<R, K> : never

/** The part of a WebSocket the client uses: the browser's, or the `ws` package's on Node. */
export interface WebSocketLike {
  readonly readyState: number
  readonly protocol: string
  binaryType?: string
  send: (data: string) => void
  close: (code?: number, reason?: string) => void
  addEventListener: (type: string, listener: (event: any) => void) => void
  removeEventListener: (type: string, listener: (event: any) => void) => void
  /** `ws` has it; a browser's socket does not. */
  terminate?: () => void
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike
