import type { FastifyInstance } from 'fastify'
import type { TSchema } from '@sinclair/typebox'
import type { TypeCheck } from '@sinclair/typebox/compiler'
import { CloseCode, ErrorCode, HandshakeError, RealtimeError } from './protocol/codes.js'
import { decodeEnvelope, encodeError, encodePong, encodeReply, isDecodeFailure, type EnvelopeId } from './protocol/envelope.js'
import { sessionOf, verifyToken } from './handshake/session.js'
import type { Connection } from './connection.js'
import type { ResolvedAuth, ResolvedLimits } from './options.js'
import type { Registry } from './registry.js'
import { bump } from './stats.js'
import type { RouteMeter, TypeMeter } from './meter.js'
import { decide, keyedRequest, record, type Idempotency, type KeyedRequest } from './idempotency/keyed.js'
import { errorOutcome, replayFrame, replyOutcome } from './idempotency/outcome.js'
import { messageChannel, traced, traceOperation, type MessageTraceContext, type TracedOperation } from './tracing.js'

/** A message type of a route, its schema compiled once. */
export interface CompiledMessage {
  check: TypeCheck<TSchema>
  handler: (data: any, conn: Connection<any, any>) => unknown
  /** Its metrics counters, when the app asked for metrics. */
  meter: TypeMeter | undefined
}

/** What the dispatcher needs of a route. */
export interface DispatchRoute {
  url: string
  messages: Map<string, CompiledMessage>
  binary: ((data: Buffer, conn: Connection<any, any>) => unknown) | undefined
  auth: ResolvedAuth | false
  /** The full path (with the instance's prefix), as metrics and traces name the route. */
  path: string
  /** Its metrics counters, when the app asked for metrics. */
  meter: RouteMeter | undefined
}

/** What the dispatcher needs of the instance. */
export interface DispatchContext {
  app: FastifyInstance
  registry: Registry
  limits: ResolvedLimits
}

const MAX_VALIDATION_DETAILS = 10

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as PromiseLike<unknown>).then === 'function'
}

/** `type` is what the error answers, for metrics: a declared type (or `unknown` for a frame that had none). */
function sendError (ctx: DispatchContext, conn: Connection<any, any>, id: EnvelopeId | undefined, code: string, message: string, details?: unknown, type?: string): void {
  const meter = conn.meter
  // Counted once sent: a handler that fails after its client left sends nothing.
  if (!conn.sendEnvelope(encodeError(id, code, message, details), 'error')) return
  bump(ctx.registry.counters.errors, code)
  if (meter !== undefined) bump(meter.type(type ?? '').errors, code)
}

/** A message the server refused: answered with an error envelope; too many in a row close the connection with 1008. */
function reject (ctx: DispatchContext, conn: Connection<any, any>, id: EnvelopeId | undefined, code: string, message: string, details?: unknown, type?: string): void {
  sendError(ctx, conn, id, code, message, details, type)
  if (++conn.violations > ctx.limits.maxViolations) {
    conn.log.info({ violations: conn.violations }, 'closing a connection that keeps sending rejected messages')
    conn.close(CloseCode.POLICY_VIOLATION)
  }
}

/** Frames this short are decoded for their id when rate-limited, so a refused request still gets its answer. */
const ID_PEEK_BYTES = 1024

/** A frame over the rate: refused undecoded (a short one is decoded for its id, a bounded cost). */
function rateLimited (ctx: DispatchContext, conn: Connection<any, any>, data: Buffer, isBinary: boolean): void {
  if (isBinary) return reject(ctx, conn, undefined, ErrorCode.RATE_LIMITED, 'rate limit exceeded', undefined, 'binary')
  const envelope = data.length <= ID_PEEK_BYTES ? decodeEnvelope(data.toString()) : undefined
  const type = envelope === undefined || isDecodeFailure(envelope) ? undefined : envelope.type
  reject(ctx, conn, envelope?.id, ErrorCode.RATE_LIMITED, 'rate limit exceeded', undefined, type)
}

/** What a handler threw, as a keyed request's outcome: a RealtimeError's code, message and details, else INTERNAL. */
function errorOutcomeOf (err: unknown): string {
  return err instanceof RealtimeError ? errorOutcome(err.code, err.message, err.details) : errorOutcome(ErrorCode.INTERNAL, 'internal error')
}

/** Turns whatever a handler threw into an error envelope; only a RealtimeError's code and message reach the client. */
function fail (ctx: DispatchContext, conn: Connection<any, any>, id: EnvelopeId | undefined, type: string, err: unknown, keyed?: Keyed): void {
  if (keyed !== undefined) record(keyed.idem, keyed.request, errorOutcomeOf(err))
  if (err instanceof RealtimeError) {
    conn.log.debug({ type, code: err.code }, 'handler refused a message')
    sendError(ctx, conn, id, err.code, err.message, err.details, type)
    return
  }
  conn.log.error({ err, type }, 'realtime handler failed')
  sendError(ctx, conn, id, ErrorCode.INTERNAL, 'internal error', undefined, type)
}

/** The head of a reply frame before its data: `{"type":"reply","id":<id>,"data":`. */
const REPLY_HEAD = '{"type":"reply","id":'.length + ',"data":'.length

function reply (ctx: DispatchContext, conn: Connection<any, any>, id: EnvelopeId | undefined, type: string, value: unknown, keyed?: Keyed): void {
  if (id === undefined && keyed === undefined) return
  let frame: string
  try {
    frame = encodeReply(id ?? 0, value)
  } catch (err) {
    fail(ctx, conn, id, type, err, keyed)
    return
  }
  // The outcome is the reply's data as this frame encoded it: no second JSON.stringify.
  if (keyed !== undefined) record(keyed.idem, keyed.request, replyOutcome(frame.slice(REPLY_HEAD + JSON.stringify(id ?? 0).length, -1)))
  if (id !== undefined) conn.sendEnvelope(frame, 'reply')
}

/** A keyed request's store entry: its outcome is recorded where the reply or error is decided. */
interface Keyed {
  idem: Idempotency
  request: KeyedRequest
}

/** Runs a handler; the returned promise (only for async handlers) never rejects. */
function runHandler (ctx: DispatchContext, route: DispatchRoute, conn: Connection<any, any>, message: CompiledMessage, type: string, data: unknown, id: EnvelopeId | undefined, keyed?: Keyed): unknown {
  const tracing = traced(messageChannel)
  if (message.meter !== undefined || tracing) return runObserved(ctx, route, conn, message, type, data, id, tracing, keyed)
  let result: unknown
  try {
    result = message.handler(data, conn)
  } catch (err) {
    fail(ctx, conn, id, type, err, keyed)
    return undefined
  }
  if (!isThenable(result)) {
    reply(ctx, conn, id, type, result, keyed)
    return undefined
  }
  return bounded(ctx, conn, type, result, keyed).then(
    (value) => { reply(ctx, conn, id, type, value, keyed) },
    (err: unknown) => { fail(ctx, conn, id, type, err, keyed) }
  )
}

/**
 * An async handler's result, rejected with `HANDLER_TIMEOUT` past `limits.handlerTimeout` so that the message is
 * answered and the connection's next messages go on. The handler cannot be stopped: what it settles with later is
 * logged and, for a keyed request, kept as its outcome in place of the timeout (a retry with the key learns it).
 */
function bounded (ctx: DispatchContext, conn: Connection<any, any>, type: string, result: PromiseLike<unknown>, keyed: Keyed | undefined): Promise<unknown> {
  const ms = ctx.limits.handlerTimeout
  if (ms === 0) return Promise.resolve(result)
  return new Promise((resolve, reject) => {
    let late = false
    const timer = setTimeout(() => {
      late = true
      conn.log.warn({ type, handlerTimeout: ms }, 'a realtime handler did not settle within limits.handlerTimeout; answered HANDLER_TIMEOUT, the connection goes on')
      reject(new RealtimeError(ErrorCode.HANDLER_TIMEOUT, `the handler did not answer within ${ms} ms; it may still complete: retry with the same key to learn its outcome`))
    }, ms)
    result.then((value) => {
      if (!late) {
        clearTimeout(timer)
        resolve(value)
        return
      }
      conn.log.info({ type }, 'a realtime handler settled after its HANDLER_TIMEOUT')
      if (keyed === undefined) return
      let data: string | undefined
      try { data = JSON.stringify(value ?? null) } catch {}
      record(keyed.idem, keyed.request, data === undefined ? errorOutcome(ErrorCode.INTERNAL, 'internal error') : replyOutcome(data))
    }, (err: unknown) => {
      if (!late) {
        clearTimeout(timer)
        reject(err)
        return
      }
      if (!(err instanceof RealtimeError)) conn.log.error({ err, type }, 'realtime handler failed after its HANDLER_TIMEOUT')
      if (keyed !== undefined) record(keyed.idem, keyed.request, errorOutcomeOf(err))
    })
  })
}

/**
 * A request with an idempotency key: claimed in the store first, so a retry (same key, type and data, from any
 * connection of the user, on any instance sharing the store) is answered with the first outcome and the handler runs
 * once. Refusals here (the store down, the key busy or reused) are not violations: nothing was wrong with the frame.
 */
async function runKeyed (ctx: DispatchContext, route: DispatchRoute, conn: Connection<any, any>, idem: Idempotency, message: CompiledMessage,
  type: string, data: unknown, id: EnvelopeId | undefined, key: string): Promise<void> {
  const request = keyedRequest(route.path, conn.userId, key, type, data)
  const decision = await decide(idem, request, () => conn.isOpen)
  if (decision.kind === 'refuse') return sendError(ctx, conn, id, decision.code, decision.message, undefined, type)
  if (decision.kind === 'replay') {
    conn.log.debug({ type }, 'a retried request answered from its first outcome')
    if (id !== undefined) conn.sendEnvelope(replayFrame(decision.outcome, id), 'reply')
    return
  }
  await runHandler(ctx, route, conn, message, type, data, id, { idem, request })
}

/**
 * `runHandler` with metrics (the handler's duration) or a tracing subscriber (`fastify-realtime:message`, whose span
 * includes the reply or error envelope sent). One object per message, no closures: this runs for every message.
 */
class ObservedRun implements TracedOperation {
  private readonly startedAt: number
  constructor (private readonly ctx: DispatchContext, private readonly conn: Connection<any, any>, private readonly message: CompiledMessage,
    private readonly type: string, private readonly data: unknown, private readonly id: EnvelopeId | undefined, private readonly keyed: Keyed | undefined) {
    this.startedAt = message.meter !== undefined ? performance.now() : 0
  }

  /** The handler; an async one bounded by `limits.handlerTimeout`. */
  run (): unknown {
    const result = this.message.handler(this.data, this.conn)
    return isThenable(result) ? bounded(this.ctx, this.conn, this.type, result, this.keyed) : result
  }

  result (value: unknown): void {
    this.timed()
    reply(this.ctx, this.conn, this.id, this.type, value, this.keyed)
  }

  error (err: unknown): void {
    this.timed()
    fail(this.ctx, this.conn, this.id, this.type, err, this.keyed)
  }

  /** Untraced: runs the handler and settles it; the returned promise (async handlers only) never rejects. */
  settle (): unknown {
    let result: unknown
    try {
      result = this.run()
    } catch (err) {
      this.error(err)
      return undefined
    }
    if (!isThenable(result)) {
      this.result(result)
      return undefined
    }
    return Promise.resolve(result).then((value) => { this.result(value) }, (err: unknown) => { this.error(err) })
  }

  private timed (): void {
    const slot = this.message.meter
    if (slot !== undefined) slot.duration.observe((performance.now() - this.startedAt) / 1000)
  }
}

function runObserved (ctx: DispatchContext, route: DispatchRoute, conn: Connection<any, any>, message: CompiledMessage, type: string,
  data: unknown, id: EnvelopeId | undefined, tracing: boolean, keyed: Keyed | undefined): unknown {
  const run = new ObservedRun(ctx, conn, message, type, data, id, keyed)
  if (!tracing) return run.settle()
  const context: MessageTraceContext = { route: route.path, type, connectionId: conn.id, userId: conn.userId, messageId: id, connection: conn, data }
  return traceOperation(messageChannel, context, run)
}

/** The schema's verdict: undefined when valid, else the first errors as `{ path, message }`. */
function validate (message: CompiledMessage, data: unknown): Array<{ path: string, message: string }> | undefined {
  try {
    if (message.check.Check(data)) return undefined
    const details = []
    for (const e of message.check.Errors(data)) {
      details.push({ path: e.path, message: e.message })
      if (details.length === MAX_VALIDATION_DETAILS) break
    }
    return details
  } catch {
    // A recursive schema walks the data recursively: data nested deep enough overflows the stack.
    return [{ path: '', message: 'data is nested too deeply to validate' }]
  }
}

/**
 * The order of a connection's renewals: they run at once (the control lane), so two in flight can finish out of
 * order (a JWKS fetch), and the session they leave must be the last one sent, not the last one verified.
 */
const renewals = new WeakMap<Connection<any, any>, { sent: number, applied: number }>()

/** `auth.refresh`: a new token of the same user extends the session; otherwise the old expiry stands. */
async function refreshSession (ctx: DispatchContext, route: DispatchRoute, conn: Connection<any, any>, data: unknown, id: EnvelopeId | undefined): Promise<void> {
  let order = renewals.get(conn)
  if (order === undefined) renewals.set(conn, order = { sent: 0, applied: 0 })
  const seq = ++order.sent
  const auth = route.auth
  const token = (data as { token?: unknown } | null)?.token
  if (auth === false || auth.authenticate !== undefined) {
    sendError(ctx, conn, id, ErrorCode.UNKNOWN_TYPE, 'this route does not renew sessions by token', undefined, 'auth.refresh')
    return
  }
  if (typeof token !== 'string' || token === '') {
    sendError(ctx, conn, id, ErrorCode.INVALID_TOKEN, 'auth.refresh needs data: { token }', undefined, 'auth.refresh')
    return
  }
  try {
    const session = sessionOf(auth, await verifyToken(conn.request, auth, token))
    // Two undefined ids prove nothing: a session without a user id cannot tell its own token from anyone's.
    if (conn.userId === undefined) throw new HandshakeError('INVALID_TOKEN', 'this session has no user id (the token\'s sub, or auth.userId) to match a new token to')
    if (session.userId !== conn.userId) throw new HandshakeError('INVALID_TOKEN', 'the token belongs to another user')
    // A renewal sent later has already set the session: this one is answered but changes nothing.
    if (seq > order.applied) {
      order.applied = seq
      conn.expiresAt = session.expiresAt
      if (session.expiresAt === undefined) ctx.registry.expiring.delete(conn)
      else if (conn.isOpen) ctx.registry.expiring.add(conn)
    }
    reply(ctx, conn, id, 'auth.refresh', { exp: session.expiresAt === undefined ? null : Math.floor(session.expiresAt / 1000) })
  } catch (err) {
    const code = err instanceof HandshakeError && err.code === 'TOKEN_EXPIRED' ? ErrorCode.TOKEN_EXPIRED : ErrorCode.INVALID_TOKEN
    sendError(ctx, conn, id, code, err instanceof HandshakeError ? err.message : 'invalid session token', undefined, 'auth.refresh')
  }
}

/**
 * One frame, from the ws listener: decode → envelope check → rate limit → schema check → the handler, queued
 * behind the connection's earlier messages. Nothing here throws; every refusal is an error envelope.
 */
export function handleFrame (ctx: DispatchContext, route: DispatchRoute, conn: Connection<any, any>, data: Buffer, isBinary: boolean): void {
  const counters = ctx.registry.counters
  counters.messagesIn++
  counters.bytesIn += data.length
  const meter = route.meter
  if (meter !== undefined) meter.bytesIn += data.length
  conn.alive = true
  // After the server decided to close (or the peer did), frames still in flight are not handled.
  if (!conn.isOpen) return
  // Every frame pays, by message and by byte, before any work on it: garbage and refused frames included. Over
  // the app's rate, a text frame may still be a control message, which has a small budget of its own: decoded to see.
  const paid = conn.takeToken(data.length)
  if (!paid && (isBinary || !conn.takeControlToken())) return rateLimited(ctx, conn, data, isBinary)

  if (isBinary) {
    const binary = route.binary
    if (meter !== undefined) meter.binary.in++
    if (binary === undefined) return reject(ctx, conn, undefined, ErrorCode.BINARY_NOT_ACCEPTED, 'this route accepts no binary frames', undefined, 'binary')
    conn.violations = 0
    const queued = conn.enqueue(() => {
      try {
        const result = binary(data, conn)
        return isThenable(result) ? Promise.resolve(result).catch((err: unknown) => { fail(ctx, conn, undefined, 'binary', err) }) : undefined
      } catch (err) {
        fail(ctx, conn, undefined, 'binary', err)
        return undefined
      }
    })
    if (!queued) reject(ctx, conn, undefined, ErrorCode.RATE_LIMITED, 'too many messages waiting for their handler', undefined, 'binary')
    return
  }

  const envelope = decodeEnvelope(data.toString())
  if (isDecodeFailure(envelope)) {
    if (meter !== undefined) meter.unknown.in++
    return reject(ctx, conn, envelope.id, paid ? envelope.error : ErrorCode.RATE_LIMITED, paid ? envelope.message : 'rate limit exceeded')
  }
  const { type, id } = envelope
  if (meter !== undefined) meter.type(type).in++

  // The control lane: ping, rt.resume and auth.refresh are handled at once, never queued behind the app's handlers,
  // and paid from their own budget while it lasts (the app's rate is for the app's messages). Only a valid application
  // message (or auth.refresh) resets the violations: a ping between garbage frames does not.
  if (type === 'ping' || type === 'rt.resume' || type === 'auth.refresh') {
    if (paid && conn.takeControlToken()) conn.returnToken(data.length)
    if (type === 'ping') {
      conn.sendEnvelope(encodePong(id), 'pong')
    } else if (type === 'rt.resume') {
      // No answer, ever: positions are used only by rooms the app's own handlers join.
      ctx.registry.roomHistory?.resume(conn, envelope.data)
    } else {
      conn.violations = 0
      refreshSession(ctx, route, conn, envelope.data, id).catch((err: unknown) => { conn.log.error({ err }, 'auth.refresh failed') })
    }
    return
  }
  if (!paid) return reject(ctx, conn, id, ErrorCode.RATE_LIMITED, 'rate limit exceeded', undefined, type)
  const message = route.messages.get(type)
  if (message === undefined) return reject(ctx, conn, id, ErrorCode.UNKNOWN_TYPE, `unknown message type "${type}"`, undefined, type)
  const details = validate(message, envelope.data)
  if (details !== undefined) return reject(ctx, conn, id, ErrorCode.VALIDATION_FAILED, `invalid data for "${type}"`, details, type)
  const idem = envelope.key === undefined ? undefined : ctx.registry.idempotency
  const task = idem === undefined
    ? () => runHandler(ctx, route, conn, message, type, envelope.data, id)
    : async () => { await runKeyed(ctx, route, conn, idem, message, type, envelope.data, id, envelope.key as string) }
  conn.violations = 0
  if (!conn.enqueue(task)) reject(ctx, conn, id, ErrorCode.RATE_LIMITED, 'too many messages waiting for their handler', undefined, type)
}
