import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { HandshakeCode } from './protocol/codes.js'
import { RT_ERR_NO_AUTH, RT_ERR_OPTIONS, RT_ERR_WEBSOCKET_REGISTERED } from './errors.js'
import { RoomHistory } from './history/rooms.js'
import { RoomPresence } from './presence/rooms.js'
import { resolveOptions, type RealtimeOptions } from './options.js'
import { Registry } from './registry.js'
import { Heartbeat } from './heartbeat.js'
import { memoryBroker } from './broker/memory.js'
import { addRoute, type Admission, type RealtimeContext } from './route.js'
import { StreamSessions } from './transport/fallback.js'
import { TokenRedactor } from './handshake/redact.js'
import { kAdmission } from './symbols.js'
import { setupAsyncApi } from './asyncapi-serve.js'
import { InstanceMeter } from './meter.js'
import { settleWithin } from './deadline.js'
import './types.js'

type HandleProtocols = (protocols: Set<string>, request: IncomingMessage) => string | false

/**
 * preClose for @fastify/websocket: closes every realtime connection with 1001 and waits for them (up to
 * `shutdown.timeout`). fastify-realtime passes it itself; an app that registers @fastify/websocket on its own
 * passes it as `{ preClose: realtimePreClose }` and sets `externalWebsocket: true`.
 */
export function realtimePreClose (this: FastifyInstance, done: (err?: Error) => void): void {
  const shutdown = (this as FastifyInstance & { [kShutdown]?: () => Promise<void> })[kShutdown]
  if (shutdown === undefined) return done()
  shutdown().then(() => { done() }, done)
}
const kShutdown = Symbol('fastify-realtime.shutdown')
/** What the broker may take past `shutdown.timeout` to close. */
const SHUTDOWN_SLACK_MS = 1000

const SHUTTING_DOWN_BODY = JSON.stringify({ statusCode: 503, code: 'SHUTTING_DOWN', message: HandshakeCode.SHUTTING_DOWN.message })

/**
 * From the start of `app.close()`, upgrades are answered here with 503 and the socket is ended. Left to Fastify,
 * its closing fast path answers 503 without running onResponse, so @fastify/websocket never destroys the upgrade
 * socket and `app.close()` waits for the client to hang up.
 */
function refuseUpgrades (server: Server): void {
  for (const listener of server.listeners('upgrade')) {
    if ((listener as { [kRedactor]?: true })[kRedactor] !== true) server.removeListener('upgrade', listener as () => void)
  }
  if (server.listenerCount('upgrade') > 1) return
  server.on('upgrade', function serverOnUpgradeWhileClosing (_request: IncomingMessage, socket: Duplex) {
    socket.on('error', () => {})
    socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(SHUTTING_DOWN_BODY)}\r\n\r\n${SHUTTING_DOWN_BODY}`)
  })
}
const kRedactor = Symbol('fastify-realtime.redactor')

const realtimePlugin: FastifyPluginAsync<RealtimeOptions> = async function realtimePlugin (app, opts) {
  const options = resolveOptions(opts)
  const broker = opts.broker ?? memoryBroker()
  const registry = new Registry(broker, app.log, (size) => { heartbeat.update(size) })
  registry.countIps = options.limits.maxConnectionsPerIp !== Infinity
  const heartbeat = new Heartbeat(registry, options.heartbeatInterval)
  if (options.history !== undefined) {
    if (broker.historyStore === undefined) throw new RT_ERR_OPTIONS('history: the broker keeps no history (use the default broker or redisBroker())')
    const store = broker.historyStore(options.history)
    registry.roomHistory = new RoomHistory(options.history, store, registry)
    app.addHook('onClose', async () => { store.close() })
  }
  if (options.presence !== undefined) {
    if (broker.presenceStore === undefined) throw new RT_ERR_OPTIONS('presence: the broker keeps no presence (use the default broker or redisBroker())')
    const store = broker.presenceStore(options.presence)
    const presence = registry.roomPresence = new RoomPresence(options.presence, store, registry, app.log)
    app.addHook('onClose', async () => { store.close() })
    app.addHook('onReady', async () => { await store.start(presence) })
  }
  if (options.idempotency !== undefined && broker.idempotencyStore !== undefined) {
    const store = broker.idempotencyStore(options.idempotency)
    registry.idempotency = { store, options: options.idempotency, log: app.log }
    app.addHook('onClose', async () => { store.close() })
  }
  const redactor = new TokenRedactor()
  const metrics = opts.metrics
  if (metrics !== undefined && typeof metrics?.start !== 'function') throw new RT_ERR_OPTIONS('metrics: expected realtimeMetrics({ registry }) from fastify-realtime/metrics')
  const meter = metrics !== undefined ? new InstanceMeter(metrics.buckets) : undefined
  registry.meter = meter
  const ctx: RealtimeContext = {
    app,
    registry,
    limits: options.limits,
    options,
    routes: [],
    addPath: (path) => { redactor.addPath(path) },
    meter,
    streams: undefined
  }
  // Made for every app (a route may turn the fallback on by itself); it holds nothing until a stream opens.
  const streams = ctx.streams = new StreamSessions(ctx, broker)

  app.decorate('realtime', registry)
  setupAsyncApi(app, ctx, opts.asyncapi)
  app.decorate('realtimeRoute', function realtimeRoute (this: FastifyInstance, definition: any) {
    return addRoute(ctx, this, definition)
  })
  let shuttingDown: Promise<void> | undefined
  app.decorate(kShutdown, () => {
    refuseUpgrades(app.server)
    shuttingDown ??= shutdown().finally(() => { heartbeat.stop() })
    return shuttingDown
  })

  /**
   * The whole shutdown fits `shutdown.timeout` plus a second, whatever Redis does (a stalled Redis answers nothing):
   *
   *   presence (its members stay listed for shutdownGrace) ┐ at once, side by side; ≤ timeout
   *   close 1001 → wait for handshakes → terminate the rest ┘
   *   broker (publishes answered, connections closed)        what is left of timeout + 1 s, then left to finish alone
   */
  async function shutdown (): Promise<void> {
    const timeout = options.shutdownTimeout
    const deadline = performance.now() + timeout + SHUTDOWN_SLACK_MS
    // Presence first, synchronously: the connections closing next start no leave of their own.
    const presence = registry.roomPresence?.shutdown(timeout).catch((err: unknown) => { app.log.warn({ err }, 'presence: shutdown failed') })
    await registry.shutdown(timeout)
    if (presence !== undefined && !await settleWithin(presence, Math.max(0, deadline - SHUTDOWN_SLACK_MS - performance.now()))) {
      app.log.warn('presence: the store did not answer within shutdown.timeout; its entries expire with their ttl')
    }
    if (!await settleWithin(Promise.resolve().then(async () => { await broker.close() }), Math.max(0, deadline - performance.now()))) {
      app.log.warn('realtime: the broker did not close within shutdown.timeout + 1 s; its connections are dropped in the background')
    }
  }

  if (app.hasDecorator('websocketServer')) {
    if (opts.externalWebsocket !== true) throw new RT_ERR_WEBSOCKET_REGISTERED()
  } else {
    const ws = opts.websocket ?? {}
    await app.register(websocket, {
      ...ws,
      options: { maxPayload: options.limits.maxPayload, clientTracking: false, ...ws.options },
      preClose: realtimePreClose
    })
  }

  // The subprotocol: the first one offered that is not a `bearer.` entry and that the route accepts.
  const wss = app.websocketServer
  const previous = wss.options.handleProtocols as HandleProtocols | undefined | null
  wss.options.handleProtocols = function realtimeHandleProtocols (protocols: Set<string>, request: IncomingMessage): string | false {
    const admission = (request as IncomingMessage & { [kAdmission]?: Admission })[kAdmission]
    if (admission === undefined) return previous != null ? previous(protocols, request) : (protocols.values().next().value ?? false)
    const accepted = admission.route.protocols
    for (const protocol of protocols) {
      if (!protocol.startsWith('bearer.') && (accepted === undefined || accepted.includes(protocol))) return protocol
    }
    return false
  }
  // Headers of the 101 response: the only way in is ws's `headers` event.
  wss.on('headers', function wssOnHeaders (headers: string[], request: IncomingMessage) {
    const admission = (request as IncomingMessage & { [kAdmission]?: Admission })[kAdmission]
    const upgradeHeaders = admission?.route.definition.upgradeHeaders
    if (admission === undefined || upgradeHeaders === undefined) return
    try {
      for (const [name, value] of Object.entries(upgradeHeaders(admission.request))) {
        for (const v of Array.isArray(value) ? value : [value]) headers.push(`${name}: ${String(v)}`)
      }
    } catch (err) {
      app.log.error({ err }, 'realtime upgradeHeaders failed')
    }
  })
  Object.assign(redactor.onRequest, { [kRedactor]: true })
  app.server.prependListener('upgrade', redactor.onRequest)
  app.server.prependListener('request', redactor.onRequest)

  await broker.start({
    deliver: (delivery) => { registry.received(delivery) },
    publishFailed: () => { registry.counters.brokerFailures++ },
    countFailed: () => { registry.counters.brokerCountFailures++ },
    received: (room, message) => { registry.receivedNumbered(room, message) },
    resync: () => { registry.roomHistory?.resync() },
    published: () => { if (meter !== undefined) meter.brokerPublishes++ },
    local: (kind) => registry.local(kind),
    answer: async (body) => await streams.answer(body),
    log: app.log
  })

  if (metrics !== undefined && meter !== undefined) {
    metrics.start({ meter, stats: () => registry.stats() })
    app.addHook('onClose', async function realtimeMetricsOnClose () { metrics.stop() })
  }

  app.addHook('onReady', async function realtimeOnReady () {
    for (const { route, instance } of ctx.routes) {
      if (route.auth !== false && route.auth.authenticate === undefined && !instance.hasDecorator('jwt')) {
        throw new RT_ERR_NO_AUTH(route.url)
      }
    }
  })
  app.addHook('onClose', async function realtimeOnClose () {
    app.server.removeListener('upgrade', redactor.onRequest)
    app.server.removeListener('request', redactor.onRequest)
    heartbeat.stop()
  })
}

/** The plugin: `await app.register(realtime, options)`. */
const realtime = fp(realtimePlugin, { fastify: '5.x', name: 'fastify-realtime' })
export default realtime
export { realtime }

export { RealtimeError, HandshakeError, ErrorCode, CloseCode, CloseReason, HandshakeCode, BatchCode, RESERVED_TYPES } from './protocol/codes.js'
export type { ErrorCodeName, CloseCodeNumber, HandshakeCodeName, BatchCodeName } from './protocol/codes.js'
export { defineRoute } from './definition.js'
export type { RouteDefinition, RealtimeRoute, TypedRoute, RegisteredRoute, RouteFanOut, TypedFanOut, MessageDefinitions, EventSchemas } from './definition.js'
export type { Connection } from './connection.js'
export type { RealtimeRegistry, FanOut, Except, SendOptions, HistoryHandle } from './registry.js'
export type { JoinOptions, JoinResult } from './connection.js'
export type { HistoryOptions, HistoryPolicy } from './history/options.js'
export type { PresenceOptions } from './presence/options.js'
export type { PresenceJoinOptions, PresenceOutcome, ConnectionPresence, PresenceHandle } from './presence/rooms.js'
export type { PresenceStore, PresenceSnapshot, PresenceHost, EnterResult } from './presence/store.js'
export type { Position, RecoveryReason, HistoryStore, HistoryRead, Appended } from './history/store.js'
export type { JoinPosition, Recovery } from './history/recovery.js'
export type { RealtimeStats } from './stats.js'
export type { RealtimeOptions, AuthOptions, LimitsOptions, OriginsOption, TokenSource } from './options.js'
export type { Broker, BrokerNode, Delivery, Target } from './broker/types.js'
export type { RealtimeMetrics } from './meter.js'
export { TracingChannelName } from './tracing.js'
export type { HandshakeTraceContext, MessageTraceContext, FanoutTraceContext } from './tracing.js'
export { memoryBroker } from './broker/memory.js'
export type { AsyncApiDocument, AsyncApiOptions, AsyncApiServer } from './asyncapi.js'
export type { AsyncApiServeOptions } from './asyncapi-serve.js'
