/**
 * `node:diagnostics_channel` tracing channels, for OpenTelemetry or any APM to hook into without the plugin depending
 * on one. Like undici and Fastify, the plugin builds a context and publishes only when somebody subscribed
 * (`hasSubscribers`): with no subscriber a message costs one property check.
 *
 * Each is a `TracingChannel` with the usual `start`, `end`, `asyncStart`, `asyncEnd` and `error` events, published in
 * the order of Node's `traceSync` / `tracePromise`:
 *
 *   sync:   start ── (error) ── end
 *   async:  start ── end ── … ── (error) ── asyncStart ── asyncEnd
 */
import diagnostics from 'node:diagnostics_channel'
import type { FastifyRequest } from 'fastify'
import type { Connection } from './connection.js'
import type { Target } from './broker/types.js'

/** The names of the tracing channels (`diagnostics_channel.tracingChannel(name)`). */
export const TracingChannelName = {
  /** The checks before the upgrade (Origin, capacity, session), around the route's preValidation. */
  HANDSHAKE: 'fastify-realtime:handshake',
  /** One message handled: the handler, and the reply or error envelope it leads to. */
  MESSAGE: 'fastify-realtime:message',
  /** One fan-out published from this instance: `to(room)`, `toUser(id)` or `broadcast`. */
  FANOUT: 'fastify-realtime:fanout'
} as const

/** Context of `fastify-realtime:handshake`. */
export interface HandshakeTraceContext {
  /** The route's full path. */
  route: string
  request: FastifyRequest
  /** Set on success: the user id the connection will be indexed by. */
  userId?: string | undefined
  /** Set on a refusal: a `HandshakeError` (its `code` and `statusCode` are what the client gets). */
  error?: unknown
  /** Set on success: the session (`{ user, userId, expiresAt }`). */
  result?: unknown
}

/** Context of `fastify-realtime:message`. */
export interface MessageTraceContext {
  route: string
  /** The message type (one the route declares: undeclared types never reach a handler). */
  type: string
  connectionId: string
  userId: string | undefined
  /** The envelope's `id`, when the client expects a reply. */
  messageId: string | number | undefined
  connection: Connection<any, any>
  /** The validated `data`. */
  data: unknown
  /** What the handler returned (the reply's data). */
  result?: unknown
  /** What the handler threw; a `RealtimeError` is a refusal the client sees, anything else an `INTERNAL` error. */
  error?: unknown
}

/** Context of `fastify-realtime:fanout`. */
export interface FanoutTraceContext {
  target: Target
  type: string
  /** The connection id skipped, if any. */
  except: string | undefined
  /** The number of local members it was sent to. */
  result?: number
  error?: unknown
}

/** One event of a tracing channel, as the plugin uses it. */
interface TraceEvent<C> {
  readonly hasSubscribers: boolean
  publish: (message: C) => void
}

/**
 * The part of Node's `TracingChannel` the plugin uses, typed here rather than through @types/node's generics: their
 * order and constraints changed between @types/node 20 (`<Store, Context>`) and 24+ (`<Context extends object,
 * Store>`), and the package's declarations must compile against both.
 */
export interface RealtimeTracingChannel<C> {
  readonly start: TraceEvent<C> & { runStores: <T, A extends unknown[]>(context: C, fn: (...args: A) => T, thisArg?: unknown, ...args: A) => T }
  readonly end: TraceEvent<C>
  readonly asyncStart: TraceEvent<C>
  readonly asyncEnd: TraceEvent<C>
  readonly error: TraceEvent<C>
  tracePromise: <T>(fn: () => Promise<T>, context: C) => Promise<T>
  traceSync: <T, A extends unknown[]>(fn: (...args: A) => T, context: C, thisArg?: unknown, ...args: A) => T
}

function tracingChannel<C> (name: string): RealtimeTracingChannel<C> {
  return diagnostics.tracingChannel(name) as unknown as RealtimeTracingChannel<C>
}

/** `fastify-realtime:handshake`; channels are global by name, so a subscriber needs nothing from this module. */
export const handshakeChannel = tracingChannel<HandshakeTraceContext>(TracingChannelName.HANDSHAKE)
/** `fastify-realtime:message`. */
export const messageChannel = tracingChannel<MessageTraceContext>(TracingChannelName.MESSAGE)
/** `fastify-realtime:fanout`. */
export const fanoutChannel = tracingChannel<FanoutTraceContext>(TracingChannelName.FANOUT)

type AnyTracingChannel = RealtimeTracingChannel<any>

/** `TracingChannel#hasSubscribers` (Node 20.13+), spelled out for earlier Node 20 releases. */
export function traced (channel: AnyTracingChannel): boolean {
  const own = (channel as { hasSubscribers?: boolean }).hasSubscribers
  if (own !== undefined) return own
  return channel.start.hasSubscribers || channel.end.hasSubscribers || channel.asyncStart.hasSubscribers ||
    channel.asyncEnd.hasSubscribers || channel.error.hasSubscribers
}

/** An operation that may finish later: `run` starts it; exactly one of `result` or `error` settles it. */
export interface TracedOperation {
  run: () => unknown
  result: (value: unknown) => void
  error: (err: unknown) => void
}

/**
 * Runs `operation` as one traced operation: `run` may return a promise; `result` or `error` (which must not throw)
 * runs before `end` when it settled synchronously, else between `asyncStart` and `asyncEnd`. What `run` throws or
 * rejects with goes to `error`, never to the caller. Stores bound to `start` (an APM's AsyncLocalStorage) hold
 * through `run` and its continuations.
 */
export function traceOperation<C extends { result?: unknown, error?: unknown }> (
  channel: RealtimeTracingChannel<C>, context: C, operation: TracedOperation
): unknown {
  return channel.start.runStores(context, runTraced, undefined, channel, context, operation)
}

function runTraced<C extends { result?: unknown, error?: unknown }> (
  channel: RealtimeTracingChannel<C>, context: C, operation: TracedOperation
): unknown {
  let result: unknown
  try {
    result = operation.run()
  } catch (err) {
    context.error = err
    channel.error.publish(context)
    operation.error(err)
    channel.end.publish(context)
    return undefined
  }
  if (result === null || typeof result !== 'object' || typeof (result as PromiseLike<unknown>).then !== 'function') {
    context.result = result
    operation.result(result)
    channel.end.publish(context)
    return undefined
  }
  channel.end.publish(context)
  return Promise.resolve(result).then((value) => {
    context.result = value
    channel.asyncStart.publish(context)
    operation.result(value)
    channel.asyncEnd.publish(context)
  }, (err: unknown) => {
    context.error = err
    channel.error.publish(context)
    channel.asyncStart.publish(context)
    operation.error(err)
    channel.asyncEnd.publish(context)
  })
}
