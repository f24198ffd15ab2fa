import type { FastifyReply, FastifyRequest } from 'fastify'
import { randomUUID } from 'node:crypto'
import type { Broker } from '../broker/types.js'
import type { Connection } from '../connection.js'
import { handleFrame } from '../dispatch.js'
import type { Admission, CompiledRoute, RealtimeContext } from '../route.js'
import { openConnection } from '../socket.js'
import { kAdmission } from '../symbols.js'
import { batchRefusal, ownerOf, parseBatch, sessionIdOf, STREAM_HEADERS, StreamSocket, type Batch, type BatchRefusal } from './stream.js'

/** How long an instance waits for the instance holding a session to answer a batch it forwarded. */
const FORWARD_TIMEOUT_MS = 5000

/** An open stream, found by its session id. */
interface Session {
  socket: StreamSocket
  conn: Connection<any, any>
  route: CompiledRoute
}

/** What a batch gets: `{ ack }` with 200 (`duplicate` when it had been taken before), or a refusal. */
type BatchAnswer = { status: 200, ack: number, duplicate?: true } | BatchRefusal

/** A batch forwarded to the instance holding its session: the body as POSTed, and who POSTed it where. */
interface Forwarded {
  path: string
  userId: string | undefined
  body: unknown
}

/**
 * The open streams of this instance, by session id; the id starts with this instance's id on the broker, so an
 * instance that gets a batch for a session it does not hold sends it there (`broker.request`).
 */
export class StreamSessions {
  private readonly sessions = new Map<string, Session>()
  /** This instance's id: the broker's, when it carries requests between instances; else one of its own. */
  readonly instance: string

  constructor (private readonly ctx: RealtimeContext, private readonly broker: Broker) {
    this.instance = broker.instanceId ?? randomUUID()
  }

  /**
   * Answers an admitted stream GET: the SSE response, then a `Connection` like an upgrade's. The response is
   * hijacked: Fastify's reply is done with it, the stream is the connection's until it closes.
   */
  open (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply): void {
    const session = sessionIdOf(this.instance)
    const res = reply.raw
    const headers: Record<string, string | number | string[]> = { ...STREAM_HEADERS }
    for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) headers[name] = value as string
    reply.hijack()
    res.writeHead(200, headers)
    // Each event leaves at once: a proxy or the kernel holding small writes back delays every frame.
    try {
      request.raw.socket?.setNoDelay?.(true)
    } catch {} // (HTTP/2's compatibility socket refuses socket manipulation; its frames are not held back anyway.)
    const socket = new StreamSocket(session, res)
    socket.open(route.path, this.ctx.options.heartbeatInterval)
    const conn = openConnection(this.ctx, route, socket, request)
    if (conn === undefined) return
    this.sessions.set(session, { socket, conn, route })
    socket.once('close', () => { this.sessions.delete(session) })
  }

  /** A POSTed batch, on any instance: taken here when this instance holds its session, else forwarded to its owner. */
  async batch (route: CompiledRoute, userId: string | undefined, body: unknown): Promise<BatchAnswer> {
    const parsed = parseBatch(body, this.ctx.limits.maxPayload)
    if ('code' in parsed) return parsed
    const local = this.sessions.get(parsed.session)
    if (local !== undefined) return this.take(local, route.path, userId, parsed)
    const owner = ownerOf(parsed.session)
    const broker = this.broker
    if (owner === undefined || owner === this.instance || broker.request === undefined) return batchRefusal('UNKNOWN_SESSION')
    const forwarded: Forwarded = { path: route.path, userId, body }
    try {
      return JSON.parse(await broker.request(owner, JSON.stringify(forwarded), FORWARD_TIMEOUT_MS)) as BatchAnswer
    } catch {
      return batchRefusal('SESSION_UNREACHABLE')
    }
  }

  /** A batch another instance forwarded (see `batch`): its answer, as JSON. */
  async answer (message: string): Promise<string> {
    let answer: BatchAnswer
    try {
      const { path, userId, body } = JSON.parse(message) as Forwarded
      const parsed = parseBatch(body, this.ctx.limits.maxPayload)
      if ('code' in parsed) {
        answer = parsed
      } else {
        const local = this.sessions.get(parsed.session)
        answer = local === undefined ? batchRefusal('UNKNOWN_SESSION') : this.take(local, path, userId, parsed)
      }
    } catch {
      answer = batchRefusal('BAD_BATCH')
    }
    return JSON.stringify(answer)
  }

  /**
   * The frames of a batch, in order, exactly once: a batch already taken is acknowledged again and not handled; one
   * past the next is refused. Each frame goes through the dispatcher as a WebSocket message would (rates, limits,
   * the connection's queue); the handlers run in order after this returns, and their replies go down the stream.
   */
  private take (session: Session, path: string, userId: string | undefined, batch: Batch): BatchAnswer {
    const { socket, conn, route } = session
    if (route.path !== path || conn.userId !== userId) return batchRefusal('FORBIDDEN_SESSION')
    if (socket.readyState !== StreamSocket.OPEN) return batchRefusal('UNKNOWN_SESSION')
    if (batch.seq < socket.nextSeq) return { status: 200, ack: batch.seq, duplicate: true }
    if (batch.seq > socket.nextSeq) return batchRefusal('SEQ_GAP', `expected batch ${socket.nextSeq}, got ${batch.seq}`)
    socket.nextSeq++
    for (const frame of batch.frames) {
      try {
        handleFrame(this.ctx, route, conn, frame.data, frame.binary)
      } catch (err) {
        conn.log.error({ err }, 'realtime frame handling failed')
      }
    }
    // The client's close (HTTP has no close frame): the stream ends with rt.close echoing it, and onClose gets its code.
    if (batch.close !== undefined) socket.close(batch.close.code, batch.close.reason)
    return { status: 200, ack: batch.seq }
  }
}

/** The admission preValidation left on an admitted request, if any. */
export function admissionOf (request: FastifyRequest): Admission | undefined {
  return (request.raw as FastifyRequest['raw'] & { [kAdmission]?: Admission })[kAdmission]
}

/** Whether a request asks for the stream: a GET without an upgrade that accepts `text/event-stream`. */
export function wantsStream (request: FastifyRequest): boolean {
  const accept = request.headers.accept
  return request.method === 'GET' && typeof accept === 'string' && accept.includes('text/event-stream')
}
