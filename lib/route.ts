import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Kind, type TSchema } from '@sinclair/typebox'
import type { SchemaLike } from './schema-types.js'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { WebSocket } from 'ws'
import { HandshakeCode, HandshakeError, RESERVED_TYPES } from './protocol/codes.js'
import { RT_ERR_RESERVED_TYPE, RT_ERR_ROUTE, RT_ERR_SCHEMA } from './errors.js'
import { checkOrigins, resolveAuth, type ResolvedAuth, type ResolvedOptions } from './options.js'
import { checkKeys } from './option-keys.js'
import { compileOriginCheck, normalizeOrigin, type OriginCheck } from './handshake/origin.js'
import { checkSession, type Session } from './handshake/session.js'
import { allowOrigin, allowedOrigin, answerPreflight } from './handshake/cors.js'
import { kAdmission, kProtocolToken } from './symbols.js'
import type { CompiledMessage, DispatchContext, DispatchRoute } from './dispatch.js'
import type { EventSchemas, MessageDefinitions, RegisteredRoute, RouteDefinition } from './definition.js'
import type { Except } from './registry.js'
import { openConnection } from './socket.js'
import { admissionOf, wantsStream, type StreamSessions } from './transport/fallback.js'
import { MAX_BATCH_FRAMES } from './transport/stream.js'
import { bump } from './stats.js'
import type { InstanceMeter } from './meter.js'
import { handshakeChannel, traced, type HandshakeTraceContext } from './tracing.js'

/**
 * CORS for what a page fetches: an allowed Origin may read the answer; on a fallback route with credentials (the
 * stream and its batches carry a session cookie or an Authorization header). A refused Origin gets nothing.
 */
async function allowCors (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, code: string | undefined): Promise<void> {
  if (code === 'FORBIDDEN_ORIGIN') return
  const origin = await allowedOrigin(request, route.originCheck)
  if (origin === undefined) return
  allowOrigin(reply, origin)
  if (route.fallback) reply.header('access-control-allow-credentials', 'true')
}

/** A route, compiled once at registration. */
export interface CompiledRoute extends DispatchRoute {
  definition: RouteDefinition<any, any, any>
  originCheck: OriginCheck
  requireOrigin: boolean
  protocols: readonly string[] | undefined
  /** The HTTP-streaming fallback is on for this route (the `fallback` option). */
  fallback: boolean
}

/** What a raw upgrade request carries once the handshake admitted it. */
export interface Admission {
  route: CompiledRoute
  session: Session
  request: FastifyRequest
  /** Gives back the connection slots the handshake reserved (once the connection is registered, or never opens). */
  release: () => void
}

export interface RealtimeContext extends DispatchContext {
  options: ResolvedOptions
  /** Every route, for the checks at `app.ready()`. */
  routes: Array<{ route: CompiledRoute, instance: FastifyInstance }>
  /** Records a route's full path, so tokens can be moved out of its URLs before anything logs them. */
  addPath: (path: string) => void
  /** The metrics counters, when the app asked for metrics. */
  meter: InstanceMeter | undefined
  /** The HTTP-streaming fallback's open streams (made when the plugin starts). */
  streams: StreamSessions | undefined
}

/** The keys of a route definition and of each of its messages. */
const ROUTE_KEYS = ['url', 'messages', 'events', 'binary', 'onOpen', 'onClose', 'origins', 'requireOrigin', 'auth', 'protocols', 'upgradeHeaders', 'fallback']
const MESSAGE_KEYS = ['schema', 'reply', 'handler']

/**
 * Why a schema is not one TypeCompiler can compile, or undefined when it is: schemas come from @sinclair/typebox
 * 0.34 (the app's own copy, a peer dependency), whose kinds are marked with a global symbol.
 */
function notTypeBoxSchema (schema: unknown): string | undefined {
  if (schema !== null && typeof schema === 'object' && Kind in schema) return undefined
  const what = schema === null || typeof schema !== 'object'
    ? `got ${schema === null ? 'null' : typeof schema}`
    : '~kind' in schema ? 'it comes from the `typebox` 1.x package' : 'it is a plain object (a JSON schema?)'
  return `${what}; build schemas with Type from @sinclair/typebox 0.34 (import { Type } from '@sinclair/typebox')`
}

const ANONYMOUS: Session = { user: null, userId: undefined, expiresAt: undefined }

function compile (definition: RouteDefinition<any, any, any>, options: ResolvedOptions, prefix: string, meter: InstanceMeter | undefined): CompiledRoute {
  const { url } = definition
  if (typeof url !== 'string' || url === '') throw new RT_ERR_ROUTE(String(url), 'url must be a non-empty string')
  const routeError = (message: string): Error => new RT_ERR_ROUTE(url, message)
  checkKeys(definition, ROUTE_KEYS, '', routeError)
  if (definition.messages === null || typeof definition.messages !== 'object') throw new RT_ERR_ROUTE(url, 'messages must be an object')
  const messages = new Map<string, CompiledMessage>()
  for (const [type, message] of Object.entries(definition.messages as Record<string, { schema: TSchema, reply?: unknown, handler: CompiledMessage['handler'] }>)) {
    if (RESERVED_TYPES.has(type)) throw new RT_ERR_RESERVED_TYPE(url, type)
    checkKeys(message, MESSAGE_KEYS, `messages["${type}"]`, routeError)
    if (typeof message?.handler !== 'function') throw new RT_ERR_ROUTE(url, `message type "${type}" needs a handler function`)
    if (message.reply !== undefined && (typeof message.reply !== 'object' || message.reply === null)) throw new RT_ERR_ROUTE(url, `message type "${type}": reply must be a schema`)
    const notTypeBox = notTypeBoxSchema(message.schema)
    if (notTypeBox !== undefined) throw new RT_ERR_SCHEMA(url, type, notTypeBox)
    let check
    try {
      check = TypeCompiler.Compile(message.schema)
    } catch (err) {
      throw new RT_ERR_SCHEMA(url, type, (err as Error).message)
    }
    messages.set(type, { check, handler: message.handler, meter: undefined })
  }
  for (const hook of ['binary', 'onOpen', 'onClose', 'upgradeHeaders'] as const) {
    if (definition[hook] !== undefined && typeof definition[hook] !== 'function') throw new RT_ERR_ROUTE(url, `${hook} must be a function`)
  }
  if (definition.origins !== undefined) checkOrigins(definition.origins, `route ${url}: origins`)
  if (definition.fallback !== undefined && typeof definition.fallback !== 'boolean') throw routeError('fallback must be a boolean')
  const auth: ResolvedAuth | false = definition.auth !== undefined ? resolveAuth(definition.auth, `route ${url}: auth`) : options.auth
  const path = prefix + url
  // With metrics, every declared type gets its counters now; a type a client makes up counts as `unknown`.
  const events = definition.events !== null && typeof definition.events === 'object' ? Object.keys(definition.events) : []
  const routeMeter = meter?.route(path, [...messages.keys(), ...events])
  if (routeMeter !== undefined) for (const [type, message] of messages) message.meter = routeMeter.type(type)
  return {
    url,
    path,
    meter: routeMeter,
    definition,
    messages,
    binary: definition.binary,
    auth,
    originCheck: compileOriginCheck(definition.origins ?? options.origins),
    requireOrigin: definition.requireOrigin ?? options.requireOrigin,
    protocols: definition.protocols,
    fallback: definition.fallback ?? options.fallback
  }
}

/**
 * A client that offers subprotocols must get one back, or it fails the socket it was given (browsers and ws do) and
 * retries for ever: an offer with no entry the route speaks (`bearer.` entries carry a token, not a protocol) is
 * refused before the upgrade. The diagnosis GET cannot send `Sec-WebSocket-Protocol` (browsers forbid `Sec-`
 * headers in fetch), so the typed client repeats its offer in `X-Realtime-Protocol`.
 */
function checkProtocols (route: CompiledRoute, request: FastifyRequest): void {
  const header = request.headers[request.ws ? 'sec-websocket-protocol' : 'x-realtime-protocol']
  // The redactor took a `bearer.` entry out of the header before anything could log it: it was offered all the same.
  const tokenOffered = request.ws && (request.raw as FastifyRequest['raw'] & { [kProtocolToken]?: string })[kProtocolToken] !== undefined
  if (typeof header !== 'string' && !tokenOffered) return
  const offered = (typeof header === 'string' ? header : '').split(',').map((p) => p.trim()).filter((p) => p !== '' && !p.startsWith('bearer.'))
  const accepted = route.protocols
  if (offered.some((p) => accepted === undefined || accepted.includes(p))) return
  throw new HandshakeError('UNSUPPORTED_PROTOCOL', accepted === undefined
    ? 'only a bearer. entry was offered: offer an application subprotocol beside it (the typed client offers realtime.v1)'
    : `none of the offered subprotocols is one this route speaks (${accepted.join(', ')})`)
}

/**
 * What a request to a route is: an upgrade, the fallback's stream (a GET accepting `text/event-stream`) or a
 * batch (a POST), or a plain GET (the client's diagnosis of a failed upgrade, or a curious browser).
 */
type RequestKind = 'upgrade' | 'stream' | 'batch' | 'diagnosis'

function kindOf (route: CompiledRoute, request: FastifyRequest): RequestKind {
  if (request.ws) return 'upgrade'
  if (!route.fallback) return 'diagnosis'
  if (request.method === 'POST') return 'batch'
  return wantsStream(request) ? 'stream' : 'diagnosis'
}

/**
 * A fetch of the stream or a batch with no Origin: a browser says where it came from in `Sec-Fetch-Site` (a
 * same-origin GET carries no Origin). A cross-site page's no-cors fetch sends neither Origin nor custom headers.
 */
function sameOriginFetch (request: FastifyRequest): boolean {
  return request.headers['sec-fetch-site'] === 'same-origin'
}

/**
 * The handshake, in the order of shared/DESIGN.md; every refusal is a `HandshakeError`. The capacity checks
 * reserve their slot at once (concurrent handshakes that await a session or an origin check cannot all pass a
 * check made before the wait): `slots.release()` gives it back on a refusal, when the connection is registered,
 * or when the socket closes before it opens. The fallback's stream is admitted as an upgrade is (it opens a
 * connection); its batches with the same Origin and session checks, and no capacity check (their session is open).
 */
async function admit (ctx: RealtimeContext, instance: FastifyInstance, route: CompiledRoute, request: FastifyRequest, slots: Slots, kind: RequestKind): Promise<Session> {
  const { registry, options } = ctx
  if (registry.closing) throw new HandshakeError('SHUTTING_DOWN')
  // Node hands an upgrade's body to ws as if it were frames: such a request is no WebSocket handshake.
  if (kind === 'upgrade' && (Number(request.headers['content-length'] ?? 0) > 0 || request.headers['transfer-encoding'] !== undefined)) {
    throw new HandshakeError('BODY_NOT_ALLOWED')
  }
  const origin = request.headers.origin
  const connecting = kind === 'upgrade' || kind === 'stream'
  // A same-origin fetch carries no Origin; a plain GET cannot open a socket, so the missing-Origin rules apply to
  // what opens a connection or writes to one, and a page can still learn why its handshake failed.
  if (origin === undefined) {
    if (route.requireOrigin && (kind === 'upgrade' || ((kind === 'stream' || kind === 'batch') && !sameOriginFetch(request)))) {
      throw new HandshakeError('FORBIDDEN_ORIGIN', 'an Origin header is required')
    }
  } else {
    const normalized = normalizeOrigin(origin)
    if (normalized === undefined || !(await route.originCheck(normalized, request))) throw new HandshakeError('FORBIDDEN_ORIGIN')
  }
  checkProtocols(route, request)
  if (connecting) {
    if (registry.connections.size + registry.reserved >= options.limits.maxConnections) throw new HandshakeError('SERVER_FULL')
    slots.reserve()
    if (registry.countIps) {
      if ((registry.byIp.get(request.ip) ?? 0) >= options.limits.maxConnectionsPerIp) throw new HandshakeError('TOO_MANY_FROM_ADDRESS')
      slots.reserveIp(request.ip)
    }
  } else if (kind === 'diagnosis' && registry.connections.size >= options.limits.maxConnections) {
    throw new HandshakeError('SERVER_FULL')
  }
  let session = ANONYMOUS
  if (route.auth !== false) {
    const checked = await checkSession(instance, request, route.auth)
    // A browser sends cookies on a cross-site upgrade too; without an Origin nothing shows where it came from.
    if (checked.fromCookie && origin === undefined && kind !== 'diagnosis' && !(kind !== 'upgrade' && sameOriginFetch(request))) {
      throw new HandshakeError('FORBIDDEN_ORIGIN', 'a session cookie needs an Origin header')
    }
    session = checked.session
  }
  if (session.userId !== undefined && kind !== 'batch') {
    if (registry.userCount(session.userId) + registry.reservedFor(session.userId) >= options.limits.maxConnectionsPerUser) {
      throw new HandshakeError('TOO_MANY_CONNECTIONS')
    }
    if (connecting) slots.reserveUser(session.userId)
  }
  if (kind === 'diagnosis') throw new HandshakeError('UPGRADE_REQUIRED')
  return session
}

/** The slots one handshake holds in the registry's counts until its connection is registered (or never opens). */
class Slots {
  private all = false
  private user: string | undefined
  private ip: string | undefined

  constructor (private readonly registry: RealtimeContext['registry']) {}

  reserve (): void {
    this.all = true
    this.registry.reserved++
  }

  reserveIp (ip: string): void {
    this.ip = ip
    this.registry.countIp(ip, 1)
  }

  reserveUser (userId: string): void {
    this.user = userId
    this.registry.reserveFor(userId, 1)
  }

  /** Idempotent. */
  readonly release = (): void => {
    if (this.all) this.registry.reserved--
    if (this.user !== undefined) this.registry.reserveFor(this.user, -1)
    if (this.ip !== undefined) this.registry.countIp(this.ip, -1)
    this.all = false
    this.user = undefined
    this.ip = undefined
  }
}

/** `admit` as a traced operation on `fastify-realtime:handshake`: a refusal is its `error`. */
async function traceAdmit (ctx: RealtimeContext, instance: FastifyInstance, route: CompiledRoute, request: FastifyRequest, slots: Slots, kind: RequestKind): Promise<Session> {
  const context: HandshakeTraceContext = { route: route.path, request }
  return await handshakeChannel.tracePromise(async () => {
    const session = await admit(ctx, instance, route, request, slots, kind)
    context.userId = session.userId
    return session
  }, context)
}

/**
 * Answers a refused handshake with its status and JSON body. A plain GET is the client's diagnosis of a failed
 * upgrade (or a curious browser): counted apart from refused upgrades. What a page fetched (the diagnosis, the
 * fallback's stream and batches) is readable by an allowed origin (CORS).
 */
async function refuse (ctx: RealtimeContext, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, err: HandshakeError, kind: RequestKind): Promise<FastifyReply> {
  const { counters } = ctx.registry
  if (kind === 'diagnosis') {
    bump(counters.diagnoses, err.code)
  } else {
    bump(counters.refused, err.code)
    const meter = route.meter
    if (meter !== undefined) bump(kind === 'upgrade' ? meter.handshakes : kind === 'stream' ? meter.streamHandshakes : meter.batches, err.code)
    const origin = err.code === 'FORBIDDEN_ORIGIN' ? request.headers.origin : undefined
    request.log[ctx.options.refusalLogLevel]({ remoteAddress: request.ip, code: err.code, origin, transport: kind === 'upgrade' ? undefined : kind }, origin === undefined
      ? `realtime handshake refused: ${err.code}`
      : `realtime handshake refused: FORBIDDEN_ORIGIN, ${origin} is not in the \`origins\` option`)
  }
  if (kind !== 'upgrade') await allowCors(route, request, reply, err.code)
  // RFC 9110: a 426 names the protocol to upgrade to. A fallback route says it serves the stream too: the client's
  // diagnosis of a failed upgrade reads it (a page on an allowed origin may: it is exposed).
  if (err.code === 'UPGRADE_REQUIRED') {
    reply.header('upgrade', 'websocket')
    if (route.fallback) reply.header('x-realtime-fallback', 'stream').header('access-control-expose-headers', 'x-realtime-fallback')
  }
  return await reply.code(err.statusCode).send({ statusCode: err.statusCode, code: err.code, message: err.message })
}

/**
 * `instance.realtimeRoute(definition)`: compiles the route and registers a GET route on the calling instance
 * (its prefix and hooks apply). A broken definition fails at `app.ready()`, naming the route and the type.
 */
export function addRoute<S extends Record<string, SchemaLike>, M extends MessageDefinitions<S, E, R>, E extends EventSchemas, R> (
  ctx: RealtimeContext, instance: FastifyInstance, definition: RouteDefinition<S, M, E, R>
): RegisteredRoute<S, M, E> {
  // Not enumerable: the handle can be spread into, or registered as, another route definition.
  const handle = Object.defineProperties({ ...definition }, {
    to: { value: (room: string) => ctx.registry.to(room) },
    toUser: { value: (userId: string) => ctx.registry.toUser(userId) },
    broadcast: { value: (type: string, data?: unknown, options?: { except?: Except }) => ctx.registry.broadcast(type, data, options) }
  }) as unknown as RegisteredRoute<S, M, E>
  let route: CompiledRoute
  try {
    route = compile(definition, ctx.options, instance.prefix, ctx.meter)
  } catch (err) {
    instance.register(async () => { throw err })
    return handle
  }
  ctx.routes.push({ route, instance })
  ctx.addPath(route.path)
  // The route's own hook: one added with addHook inside a fastify-plugin-wrapped plugin would reach every route.
  const preValidation = async function realtimePreValidation (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const slots = new Slots(ctx.registry)
    const kind = kindOf(route, request)
    try {
      const session = traced(handshakeChannel) ? await traceAdmit(ctx, instance, route, request, slots, kind) : await admit(ctx, instance, route, request, slots, kind)
      ;(request.raw as FastifyRequest['raw'] & { [kAdmission]?: Admission })[kAdmission] = { route, session, request, release: slots.release }
      if (kind === 'batch') return undefined
      // An upgrade (or a stream) that never opens (the client hung up, ws refused it) gives its slots back with its
      // socket (injectWS's request has a socket of its own making, without events). `on`, not `once`: release is
      // idempotent, and openConnection takes the listener off (a `once` wrapper is two more objects a handshake).
      const socket = request.raw.socket as { on?: (event: 'close', listener: () => void) => void } | undefined
      if (typeof socket?.on === 'function') socket.on('close', slots.release)
    } catch (err) {
      slots.release()
      if (!(err instanceof HandshakeError)) throw err
      return await refuse(ctx, route, request, reply, err, kind)
    }
    return undefined
  }
  instance.route({
    method: 'GET',
    url: route.url,
    preValidation,
    handler: async function realtimeHttpHandler (request: FastifyRequest, reply: FastifyReply) {
      const admission = admissionOf(request)
      if (admission !== undefined && ctx.streams !== undefined && kindOf(route, request) === 'stream') {
        await allowCors(route, request, reply, undefined)
        ctx.streams.open(route, request, reply)
        return reply
      }
      // Otherwise only reached when the hooks let a plain GET through, which admit() never does.
      return await refuse(ctx, route, request, reply, new HandshakeError('UPGRADE_REQUIRED', HandshakeCode.UPGRADE_REQUIRED.message), 'diagnosis')
    },
    wsHandler: function realtimeWsHandler (socket: WebSocket, request: FastifyRequest) {
      openConnection(ctx, route, socket, request)
    }
  })
  if (route.fallback) {
    instance.route({
      method: 'POST',
      url: route.url,
      preValidation,
      // At most a full batch of frames of `maxPayload` bytes, base64 (binary) and JSON escapes included.
      bodyLimit: MAX_BATCH_FRAMES * Math.ceil(ctx.limits.maxPayload * 2) + 1024,
      handler: async function realtimeBatch (request: FastifyRequest, reply: FastifyReply) {
        const admission = admissionOf(request)
        const streams = ctx.streams
        if (admission === undefined || streams === undefined) throw new Error('realtime: a batch reached its handler without its admission')
        await allowCors(route, request, reply, undefined)
        const answer = await streams.batch(route, admission.session.userId, request.body)
        const meter = route.meter
        if (!('code' in answer)) {
          if (meter !== undefined) bump(meter.batches, answer.duplicate === true ? 'duplicate' : 'handled')
          return await reply.send({ ack: answer.ack })
        }
        if (meter !== undefined) bump(meter.batches, answer.code)
        bump(ctx.registry.counters.refused, answer.code)
        request.log[ctx.options.refusalLogLevel]({ remoteAddress: request.ip, code: answer.code, transport: 'batch' }, `realtime batch refused: ${answer.code}`)
        return await reply.code(answer.status).send({ statusCode: answer.status, code: answer.code, message: answer.message })
      }
    })
  }
  instance.route({
    method: 'OPTIONS',
    url: route.url,
    handler: async function realtimePreflight (request: FastifyRequest, reply: FastifyReply) {
      await answerPreflight(request, reply, route.originCheck, route.fallback)
    }
  })
  return handle
}
