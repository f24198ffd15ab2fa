import type { FastifyRequest } from 'fastify'
import WebSocket from 'ws'
import { CloseCode, closeCodeOfSocketError } from './protocol/codes.js'
import { Connection } from './connection.js'
import { handleFrame } from './dispatch.js'
import { kAdmission } from './symbols.js'
import type { Admission, CompiledRoute, RealtimeContext } from './route.js'
import { bump } from './stats.js'
import type { StreamSocket } from './transport/stream.js'

const kConn = Symbol('fastify-realtime.connection')

/**
 * The socket keeps its connection, which holds what the shared socket listeners need (the context, the route,
 * whether onOpen ran), so that no listener is a per-connection closure.
 */
type RealtimeSocket = WebSocket & { [kConn]: Connection<any, any> }

/** The ServerResponse @fastify/websocket assigns to an upgrade's socket. */
interface UpgradeResponse {
  listenerCount: (event: 'close') => number
  detachSocket: (socket: unknown) => void
}

function socketOnMessage (this: WebSocket, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
  const conn = (this as RealtimeSocket)[kConn]
  try {
    // ws hands fragmented messages over as one Buffer unless binaryType says otherwise; ours is the default.
    handleFrame(conn.ctx, conn.route, conn, data as Buffer, isBinary)
  } catch (err) {
    // A throw inside a ws listener would end the process; the dispatcher never throws, this is the last guard.
    conn.log.error({ err }, 'realtime frame handling failed')
  }
}

function socketOnPong (this: WebSocket): void {
  const conn = (this as RealtimeSocket)[kConn]
  conn.alive = true
  // Only the answer to the heartbeat's ping is a round trip: an unsolicited pong (a peer may send any) is not timed.
  if (!conn.pinged) return
  conn.pinged = false
  const meter = conn.ctx.registry.meter
  // The heartbeat pings every connection in one sweep: the round trip runs from that sweep to this pong.
  if (meter !== undefined && meter.pingedAt > 0) meter.pingRtt.observe((performance.now() - meter.pingedAt) / 1000)
}

/**
 * A socket error: ws has already started the close with the right code for a protocol error (1002, 1007, 1009),
 * and a reset peer is ordinary life. Either way the close event cleans up; nothing here may throw.
 */
function socketOnError (this: WebSocket, err: Error & { code?: string }): void {
  const conn = (this as RealtimeSocket)[kConn]
  const closeCode = closeCodeOfSocketError(err)
  if (closeCode !== undefined) conn.closeIntent ??= closeCode
  conn.log.debug({ code: err.code, message: err.message }, 'realtime socket error')
}

function socketOnClose (this: WebSocket, code: number, reasonBuffer: Buffer): void {
  const conn = (this as RealtimeSocket)[kConn]
  const { ctx, route } = conn
  const closeCode = conn.closeIntent ?? code
  ctx.registry.remove(conn, closeCode)
  if (route.meter !== undefined) closed(ctx, route, conn)
  if (!conn.opened || route.definition.onClose === undefined) return
  const reason = reasonBuffer.toString()
  // onClose always runs after onOpen: an app that sets up in one and tears down in the other never sees them overlap.
  if (conn.opening !== undefined) {
    conn.opening.then(() => { runOnClose(route, conn, closeCode, reason) }, () => {})
    return
  }
  runOnClose(route, conn, closeCode, reason)
}

function runOnClose (route: CompiledRoute, conn: Connection<any, any>, closeCode: number, reason: string): void {
  const onClose = route.definition.onClose
  if (onClose === undefined) return
  try {
    const result = onClose(conn, closeCode, reason)
    if (result instanceof Promise) result.catch((err: unknown) => { conn.log.error({ err }, 'realtime onClose failed') })
  } catch (err) {
    conn.log.error({ err }, 'realtime onClose failed')
  }
}

/** Metrics of a close: the route's open count, and the close if the server chose it. */
function closed (ctx: RealtimeContext, route: CompiledRoute, conn: Connection<any, any>): void {
  const routeMeter = route.meter as NonNullable<CompiledRoute['meter']>
  routeMeter.open--
  if (conn.transport === 'stream') routeMeter.openStreams--
  const meter = ctx.registry.meter
  if (meter !== undefined && conn.closeIntent !== undefined) bump(meter.serverCloses, conn.closeIntent)
}

function openFailed (conn: Connection<any, any>, err: unknown): void {
  conn.log.error({ err }, 'realtime onOpen failed; closing with 1011')
  conn.close(CloseCode.INTERNAL_ERROR)
}

/**
 * Takes over a socket @fastify/websocket just upgraded. Runs synchronously in ws's connection callback, so the
 * message listener is attached before any frame can arrive; onOpen is the first task of the connection's queue,
 * so messages wait for it.
 */
export function openConnection (ctx: RealtimeContext, route: CompiledRoute, ws: WebSocket | StreamSocket, request: FastifyRequest): Connection<any, any> | undefined {
  // A stream has the part of WebSocket's shape a connection uses (see lib/transport/stream.ts).
  const socket = ws as RealtimeSocket
  const admission = (request.raw as FastifyRequest['raw'] & { [kAdmission]?: Admission })[kAdmission]
  if (admission === undefined || admission.route !== route) {
    // Not admitted by our preValidation (an app hook re-routed the request?): never serve it.
    socket.terminate()
    return undefined
  }
  const { session } = admission
  admission.release()
  // Nothing of the handshake outlives it: not the admission (the raw request lives as long as the connection) nor
  // the listener that would have given the slots back.
  ;(request.raw as FastifyRequest['raw'] & { [kAdmission]?: Admission })[kAdmission] = undefined
  // (injectWS's request has a socket of its own making, without events.)
  const raw = request.raw.socket as { removeListener?: (event: 'close', listener: () => void) => void, _httpMessage?: UpgradeResponse | null } | undefined
  if (typeof raw?.removeListener === 'function') raw.removeListener('close', admission.release)
  // @fastify/websocket routes the upgrade with a ServerResponse of its own, assigned to the TCP socket, which never
  // writes a byte: the socket kept it (with the Reply, its headers and Fastify's finish listener, ~1,000 bytes)
  // for the connection's life only to emit its 'close' at the end. Nobody listening to that, it is let go.
  const response = raw?._httpMessage
  if (response != null && response.listenerCount('close') === 0) response.detachSocket(raw)
  const conn = new Connection(socket, request, session.user, session.userId, ctx, route)
  conn.expiresAt = session.expiresAt
  const meter = route.meter
  if (meter !== undefined) {
    meter.open++
    if (conn.transport === 'stream') {
      meter.openStreams++
      bump(meter.streamHandshakes, 200)
    } else {
      bump(meter.handshakes, 101)
    }
  }
  socket[kConn] = conn
  // The connection owns its socket's errors: @fastify/websocket's default handler logs them as errors and
  // terminates, which would cut off the close frame ws is sending for a protocol error.
  socket.removeAllListeners('error')
  socket.on('error', socketOnError)
  socket.on('message', socketOnMessage)
  socket.on('pong', socketOnPong)
  socket.on('close', socketOnClose)
  ctx.registry.add(conn)

  const onOpen = route.definition.onOpen
  if (onOpen === undefined) {
    conn.opened = true
    return conn
  }
  conn.enqueue(() => {
    conn.opened = true
    try {
      const result = onOpen(conn)
      if (result instanceof Promise) {
        conn.opening = openSettled(ctx, conn, result).then(() => { conn.opening = undefined })
        return conn.opening
      }
    } catch (err) {
      openFailed(conn, err)
    }
    return undefined
  })
  return conn
}

/**
 * An async onOpen, settled: a failure closes with 1011, and so does one that runs past `limits.handlerTimeout`
 * (the messages waiting for it and onClose then go on; the onOpen itself cannot be stopped). Never rejects.
 */
async function openSettled (ctx: RealtimeContext, conn: Connection<any, any>, result: Promise<unknown>): Promise<void> {
  const ms = ctx.limits.handlerTimeout
  let timer: NodeJS.Timeout | undefined
  const timeout = ms === 0
    ? undefined
    : new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        openFailed(conn, new Error(`onOpen did not settle within limits.handlerTimeout (${ms} ms)`))
        resolve()
      }, ms)
    })
  const settled = result.then(() => {}, (err: unknown) => { openFailed(conn, err) })
  await (timeout === undefined ? settled : Promise.race([settled, timeout]))
  clearTimeout(timer)
}
