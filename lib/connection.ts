import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { UserType } from '@fastify/jwt'
import type { StaticOf as Static } from './schema-types.js'
import WebSocket from 'ws'
import { CloseCode, CloseReason, ErrorCode, RealtimeError } from './protocol/codes.js'
import { encodeEvent, envelopeType } from './protocol/envelope.js'
import { textFrameOf } from './protocol/frame.js'
import { StreamSocket } from './transport/stream.js'
import type { EventSchemas } from './definition.js'
import type { ResolvedLimits } from './options.js'
import type { JoinPosition } from './history/recovery.js'
import type { Position } from './history/store.js'
import type { RouteMeter } from './meter.js'
import type { ConnectionPresence, PresenceJoinOptions, PresenceOutcome } from './presence/rooms.js'
import type { CompiledRoute, RealtimeContext } from './route.js'

/** The control lane's budget: messages a second, and at once (see `takeControlToken`). */
const CONTROL_RATE = 2
const CONTROL_BURST = 10

/** The registry as a connection sees it: rooms are indexed there. */
export interface RoomIndex {
  /** Returns the history join's promise for a history room, undefined for any other. */
  join: (conn: Connection<any, any>, room: string, options?: JoinOptions) => Promise<JoinResult> | undefined
  leave: (conn: Connection<any, any>, room: string) => void
  /** Presence rooms: checks the join's presence options before the room is joined (throws `VALIDATION_FAILED`). */
  checkJoin: (conn: Connection<any, any>, room: string, options?: JoinOptions) => void
  connectionPresence: (conn: Connection<any, any>, room: string) => ConnectionPresence
}

/** Options of `conn.join(room, options)`. */
export interface JoinOptions {
  /** History rooms: resume from this position (from an HTTP snapshot, say) instead of the client's `rt.resume`. */
  since?: Position
  /**
   * Presence rooms: the member's key (default: `userId`, else the connection id) and data; `false` watches the
   * list without being in it. Data over `presence.maxDataBytes` throws `VALIDATION_FAILED` and the room is not joined.
   */
  presence?: PresenceJoinOptions | false
}

/**
 * What `conn.join()` resolves with: for a history room its position (`epoch`, `offset`, and whether the join
 * recovered), for a presence room the `presence` outcome, both for a room that keeps both.
 */
export type JoinResult = (JoinPosition & { presence?: PresenceOutcome }) | { presence: PresenceOutcome, epoch?: undefined, offset?: undefined }

/**
 * A random UUID as one flat string. `randomUUID()` builds its result by concatenation, which V8 keeps as a tree of
 * about 14 cons strings (some 450 bytes) for as long as the id lives; copied once through latin1 it is one 36-byte
 * string.
 */
function connectionId (): string {
  return Buffer.from(randomUUID(), 'latin1').toString('latin1')
}

const NO_ROOMS: ReadonlySet<string> = new Set()
// One shared settled promise: joining a room without history makes none.
const NO_POSITION: Promise<undefined> = Promise.resolve(undefined)

/**
 * The TCP socket under a ws socket whose sender is idle (nothing queued), else undefined: see `Connection.write`.
 * Undefined too when the socket negotiated permessage-deflate: ws compresses what the app meant to be compressed.
 */
function idleSocket (socket: WebSocket): { write: (b: Buffer) => boolean } | undefined {
  const ws = socket as WebSocket & { _sender?: { _state?: number, _queue?: unknown[] }, _socket?: { write: (b: Buffer) => boolean }, _extensions?: Record<string, unknown> }
  const sender = ws._sender
  return sender?._state !== 0 || sender._queue?.length !== 0 || ws._extensions?.['permessage-deflate'] !== undefined ? undefined : ws._socket
}

function uncork (conn: Connection<any, any>, raw: { uncork: () => void }): void {
  conn.uncorked()
  raw.uncork()
}
const TEXT = { binary: false } as const
const BINARY = { binary: true } as const
/** A connection's message and byte buckets (`limits.rate`, `limits.byteRate`), refilled together. */
class RateBucket {
  constructor (
    public tokens: number,
    public byteTokens: number,
    /** Monotonic (performance.now()): a wall clock stepped back must not starve the bucket. */
    public refilledAt: number
  ) {}
}

/** The control lane's bucket (see `Connection.takeControlToken`). */
class ControlBucket {
  constructor (public tokens: number, public at: number) {}
}

/** After the 4408 close frame, how long a slow consumer gets to complete the close before it is terminated. */
const SLOW_CONSUMER_GRACE_MS = 1000

/**
 * One open socket: its identity, its rooms, the one place that writes to it (with the backlog check), its rate
 * bucket and the queue that runs its messages one at a time in arrival order.
 *
 *   open ──▶ onOpen (queued first) ──▶ messages, in order ──▶ close (any cause) ──▶ onClose once ──▶ gone
 */
export class Connection<E extends EventSchemas = EventSchemas, U = UserType> {
  /** Random and unguessable. */
  readonly id: string = connectionId()
  /** What the session check returned (the JWT payload, or what `auth.authenticate` returned). */
  readonly user: U
  /** The id indexing this connection in `app.realtime.byUser()`, from `auth.userId` (default: the JWT's `sub`). */
  readonly userId: string | undefined
  /** The upgrade request. */
  readonly request: FastifyRequest
  /**
   * The ws WebSocket. Write through `send`/`sendBinary`, which know the backlog. On the HTTP-streaming fallback
   * (`transport === 'stream'`) it is the stream's own object, with WebSocket's `readyState`, `bufferedAmount`, `send`,
   * `ping`, `close` and `terminate` and its `close` event, and nothing else of ws.
   */
  readonly socket: WebSocket

  /** Session expiry in ms since the epoch (undefined: none, or `closeOnExpiry: false`). */
  expiresAt: number | undefined

  /** Heartbeat: true when the peer answered or sent anything since the last sweep. */
  alive = true
  /** @internal Heartbeat: pinged by the last sweep and not yet ponged (only such a pong is a round trip to time). */
  pinged = false
  /** Rejected messages in a row. */
  violations = 0
  /** The close code the server chose, kept when it had to terminate the socket before the handshake ended. */
  closeIntent: number | undefined
  /** @internal The instance's context and the route, for the socket's shared listeners (lib/socket.ts). */
  readonly ctx: RealtimeContext
  /** @internal */
  readonly route: CompiledRoute
  /** @internal onOpen has run (or started): onClose is owed. */
  opened = false
  /** @internal An async onOpen still running (bounded by `limits.handlerTimeout`): onClose waits for it. */
  opening: Promise<void> | undefined

  // Made on first use: most connections of a large instance never log, keep state or join a second room.
  /** The rooms joined: a connection in one room keeps its name alone, a Set from the second (or once `rooms` is read). */
  private roomSet: Set<string> | string | undefined
  private logger: FastifyBaseLogger | undefined
  private stateObject: Record<string, unknown> | undefined
  private drainer: (() => void) | undefined
  private readonly limits: ResolvedLimits
  // The rate buckets are made full at the first frame that pays: a bucket made full at the open and refilled at
  // that frame is full too, so an idle connection keeps none (and none of their heap numbers).
  private bucket: RateBucket | undefined
  private controlBucket: ControlBucket | undefined
  private busy = false
  private queue: Array<() => unknown> | undefined
  private killTimer: NodeJS.Timeout | undefined
  private corked = false

  constructor (socket: WebSocket, request: FastifyRequest, user: unknown, userId: string | undefined,
    ctx: RealtimeContext, route: CompiledRoute) {
    this.socket = socket
    this.request = request
    this.user = user as U
    this.userId = userId
    this.ctx = ctx
    this.route = route
    this.limits = ctx.limits
  }

  /** @internal The route's metrics counters, when the app asked for metrics. */
  get meter (): RouteMeter | undefined {
    return this.route.meter
  }

  /** The room indexes (the registry). */
  private get index (): RoomIndex {
    return this.ctx.registry
  }

  /** A child logger bound to the connection id, the user id and the remote address. */
  get log (): FastifyBaseLogger {
    this.logger ??= this.request.log.child({ connId: this.id, userId: this.userId, remoteAddress: this.request.ip })
    return this.logger
  }

  /** The app's own per-connection data. */
  get state (): Record<string, unknown> {
    this.stateObject ??= {}
    return this.stateObject
  }

  /** The rooms this connection is in (in `onClose`: the rooms it was in). */
  get rooms (): ReadonlySet<string> {
    const rooms = this.roomSet
    if (typeof rooms === 'string') return (this.roomSet = new Set([rooms]))
    return rooms ?? NO_ROOMS
  }

  /** @internal Whether the connection is in `room` (`rooms.has(room)` without making the Set). */
  inRoom (room: string): boolean {
    const rooms = this.roomSet
    return rooms === room || (typeof rooms === 'object' && rooms.has(room))
  }

  get isOpen (): boolean {
    return this.socket.readyState === WebSocket.OPEN
  }

  /**
   * Joins a room (idempotent). For a history room the promise resolves once `rt.position` and the replay of what
   * the client missed are written, with the room's `{ epoch, offset }` and whether it recovered; for a presence room
   * once the store answered the member's entry, with `presence` (`'member'`, `'full'` past `maxMembers`, …); it
   * never rejects. For any other room (or a room already joined) it resolves with undefined; ignoring it is fine. Throws (before
   * anything is joined) `INVALID_ROOM` for an empty name or one over `limits.maxRoomNameLength`, `TOO_MANY_ROOMS`
   * past `limits.maxRoomsPerConnection`, and `VALIDATION_FAILED` for bad presence options: a handler that does not
   * catch it answers the client with that code.
   */
  join (room: string, options?: JoinOptions): Promise<JoinResult | undefined> {
    if (!this.isOpen) return NO_POSITION
    const joined = this.roomSet
    if (this.inRoom(room)) return NO_POSITION
    if (joined === undefined) {
      try {
        this.checkJoin(room, 0, options)
      } catch (err) {
        // As once a room was asked for: `rooms` is the connection's own (live) Set from now on.
        this.roomSet = new Set()
        throw err
      }
      this.roomSet = room
    } else {
      const set = typeof joined === 'string' ? (this.roomSet = new Set([joined])) : joined
      this.checkJoin(room, set.size, options)
      set.add(room)
    }
    return this.index.join(this, room, options) ?? NO_POSITION
  }

  /** Throws, before anything is joined, when `room` cannot be joined by a connection in `size` rooms. */
  private checkJoin (room: string, size: number, options: JoinOptions | undefined): void {
    // Every room a client can name creates state (a subscription, a history meta, a presence hash): bounded here.
    if (typeof room !== 'string' || room.length === 0 || room.length > this.limits.maxRoomNameLength) {
      throw new RealtimeError(ErrorCode.INVALID_ROOM, `a room name is 1-${this.limits.maxRoomNameLength} characters`)
    }
    if (size >= this.limits.maxRoomsPerConnection) {
      throw new RealtimeError(ErrorCode.TOO_MANY_ROOMS, `a connection is in at most ${this.limits.maxRoomsPerConnection} rooms; leave one first`)
    }
    this.index.checkJoin(this, room, options)
  }

  /** A presence room this connection is a member of: `update(data)` replaces the member's data. */
  presence (room: string): ConnectionPresence {
    return this.index.connectionPresence(this, room)
  }

  /** Leaves a room (idempotent). An empty room disappears. */
  leave (room: string): void {
    const joined = this.roomSet
    if (joined === room) this.roomSet = new Set()
    else if (typeof joined !== 'object' || !joined.delete(room)) return
    this.index.leave(this, room)
  }

  /** Sends an event. Returns false, never throws, when the socket is not open or the send was refused by backpressure. */
  send<K extends keyof E & string> (type: K, data: Static<E[K]>): boolean {
    const text = encodeEvent(type, data)
    return this.write(text, Buffer.byteLength(text), TEXT, type)
  }

  /** Sends a binary frame, through the same backlog check. */
  sendBinary (data: Buffer | ArrayBuffer | Uint8Array): boolean {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data as Uint8Array)
    return this.write(buf, buf.length, BINARY, 'binary')
  }

  /** Sends an already-encoded envelope (a fan-out's shared bytes, a stored history event). */
  sendFrame (frame: Buffer): boolean {
    // A string from an untyped caller is measured in bytes, not in UTF-16 units.
    return this.write(frame, typeof frame === 'string' ? Buffer.byteLength(frame) : frame.length, TEXT, undefined)
  }

  /**
   * Sends a fan-out: `wire` is the whole WebSocket frame around `payload`, built once for every member. `type` is
   * the event's, for metrics (read from `payload` when not given).
   */
  sendPrebuilt (payload: Buffer, wire: Buffer, type?: string): boolean {
    return this.write(payload, payload.length, TEXT, type, wire)
  }

  /** Sends an encoded envelope; the string is encoded straight into its frame, with no Buffer in between. */
  sendText (text: string): boolean {
    return this.write(text, Buffer.byteLength(text), TEXT, undefined)
  }

  /** @internal A frame of the protocol's own (`rt.position`, `rt.presence`…), counted under its type when metrics are on. */
  sendProtocol (text: string, type: string): boolean {
    return this.write(text, Buffer.byteLength(text), TEXT, type)
  }

  /** @internal An envelope of a known type (a reply, an error, a pong), counted under it when metrics are on. */
  sendEnvelope (text: string, type: string): boolean {
    if (this.write(text, Buffer.byteLength(text), TEXT, type)) return true
    // An answer is never dropped in silence: its client would wait for it for ever. With `onSlowConsumer: 'drop'`
    // a peer too slow to take one is closed with 4408 as under 'close' (its requests reject and can be retried).
    if (this.isOpen && this.limits.onSlowConsumer === 'drop') this.closeSlowConsumer()
    return false
  }

  /**
   * How this client is connected: `'websocket'`, or `'stream'` for the HTTP-streaming fallback (docs/15-fallback.md),
   * where `socket` is the stream's own object with the part of WebSocket's shape the plugin uses.
   */
  get transport (): 'websocket' | 'stream' {
    return this.socket instanceof StreamSocket ? 'stream' : 'websocket'
  }

  /** Closes with a close handshake. The code defaults to 1000. */
  close (code: number = CloseCode.NORMAL, reason?: string): void {
    const state = this.socket.readyState
    if (state === WebSocket.CLOSED || state === WebSocket.CLOSING) return
    this.closeIntent ??= code
    try {
      this.socket.close(code, reason ?? (CloseReason as Record<number, string>)[code])
    } catch {
      this.socket.terminate()
    }
  }

  /** Ends the socket at once, without a close handshake (a dead or hopeless peer). */
  terminate (code?: number): void {
    if (code !== undefined) this.closeIntent ??= code
    this.socket.terminate()
  }

  /**
   * Takes one message token and `bytes` byte tokens; false (and nothing taken) when the connection is over
   * `limits.rate` or `limits.byteRate`. Every frame pays before it is decoded, whatever it turns out to be.
   */
  takeToken (bytes = 0): boolean {
    const now = performance.now()
    const limits = this.limits
    let bucket = this.bucket
    if (bucket === undefined) {
      bucket = this.bucket = new RateBucket(limits.burst, limits.byteBurst, now)
    } else {
      const elapsed = now - bucket.refilledAt
      if (elapsed > 0) {
        bucket.tokens = Math.min(limits.burst, bucket.tokens + elapsed * limits.rate / 1000)
        bucket.byteTokens = Math.min(limits.byteBurst, bucket.byteTokens + elapsed * limits.byteRate / 1000)
        bucket.refilledAt = now
      }
    }
    if (bucket.tokens < 1 || bucket.byteTokens < bytes) return false
    bucket.tokens -= 1
    bucket.byteTokens -= bytes
    return true
  }

  /** Gives back a message token and `bytes` byte tokens taken by a frame that turned out to be paid otherwise. */
  returnToken (bytes: number): void {
    const bucket = this.bucket
    // No bucket yet: it is full.
    if (bucket === undefined) return
    bucket.tokens = Math.min(this.limits.burst, bucket.tokens + 1)
    bucket.byteTokens = Math.min(this.limits.byteBurst, bucket.byteTokens + bytes)
  }

  /**
   * The control lane's own budget (`ping`, `rt.resume`, `auth.refresh`): CONTROL_RATE a second, CONTROL_BURST at
   * once, so that a client at the app's rate still keeps its link and its session, and a flood of pings costs the
   * app nothing. Past it, control frames pay the app's rate like any other.
   */
  takeControlToken (): boolean {
    const now = performance.now()
    let bucket = this.controlBucket
    if (bucket === undefined) {
      bucket = this.controlBucket = new ControlBucket(CONTROL_BURST, now)
    } else {
      bucket.tokens = Math.min(CONTROL_BURST, bucket.tokens + (now - bucket.at) * CONTROL_RATE / 1000)
      bucket.at = now
    }
    if (bucket.tokens < 1) return false
    bucket.tokens -= 1
    return true
  }

  /**
   * Runs `task` after every task queued before it has finished: handlers of one connection see its messages in
   * arrival order even when they are async. A synchronous task costs no promise. A task must not throw or reject
   * (the dispatcher wraps handlers). Returns false when too many tasks are waiting.
   */
  enqueue (task: () => unknown): boolean {
    if (this.busy) {
      this.queue ??= []
      if (this.queue.length >= this.limits.maxPending) return false
      this.queue.push(task)
      return true
    }
    this.run(task)
    return true
  }

  /**
   * Called once the socket has closed: no further task runs, timers are gone, the room indexes forget it.
   * `rooms` still lists the rooms it was in, so that `onClose` can tell their other members.
   */
  dispose (): void {
    this.queue = undefined
    if (this.killTimer !== undefined) clearTimeout(this.killTimer)
    this.killTimer = undefined
    const joined = this.roomSet
    if (typeof joined === 'string') this.index.leave(this, joined)
    else if (joined !== undefined) for (const room of joined) this.index.leave(this, room)
  }

  private run (task: () => unknown): void {
    let result: unknown
    try {
      result = task()
    } catch (err) {
      // Tasks are guarded by the dispatcher; this is the last line that keeps a bug off the ws listener.
      this.log.error({ err }, 'realtime task threw')
      return
    }
    if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
      this.busy = true
      this.drainer ??= () => { this.drain() }
      ;(result as Promise<unknown>).then(this.drainer, this.drainer)
    }
  }

  private drain (): void {
    this.busy = false
    if (!this.isOpen) this.queue = undefined
    while (!this.busy && this.queue !== undefined && this.queue.length > 0) {
      this.run(this.queue.shift() as () => unknown)
    }
  }

  /**
   * Open, and the backlog has room for `size` more bytes; otherwise the slow-consumer policy applies. An empty
   * backlog always takes one frame, however large: a reader that keeps up is never closed for one big message (so a
   * connection holds at most `maxBufferedBytes` plus one frame). This tick's writes held by the cork are not the
   * reader's backlog: they are handed to the kernel first, and what it did not take is.
   */
  private admit (size: number): boolean {
    const socket = this.socket
    if (socket.readyState !== WebSocket.OPEN) return false
    let backlog = socket.bufferedAmount
    if (backlog > 0 && backlog + size > this.limits.maxBufferedBytes && this.corked) {
      this.flushCorked()
      backlog = socket.bufferedAmount
    }
    if (backlog > 0 && backlog + size > this.limits.maxBufferedBytes) {
      this.ctx.registry.counters.dropped++
      if (this.limits.onSlowConsumer === 'close') this.closeSlowConsumer()
      return false
    }
    return true
  }

  /**
   * The one write every outgoing frame goes through (events, fan-outs, replies, errors, pongs, the protocol's own
   * frames, history replays, presence frames): the backlog check, then the counts of `stats()` and, with metrics,
   * of the frame's type and its bytes, counted exactly as `stats().bytesOut` counts them. `size` is the payload's
   * bytes. `type` labels the frame; undefined means read it from the frame, which only metrics do.
   *
   * With `wire` (a fan-out's whole WebSocket frame, built once for every member) and ws idle for this socket (its
   * sender has nothing queued, so frames cannot interleave) the frame goes straight to the TCP socket, not corked:
   * a fan-out writes once per member, and holding 10,000 sockets until the next tick only delays them. Otherwise ws
   * frames the payload itself, corked until the next tick.
   */
  private write (frame: Buffer | string, size: number, options: typeof TEXT | typeof BINARY, type: string | undefined, wire?: Buffer): boolean {
    const raw = idleSocket(this.socket)
    if (raw !== undefined && wire !== undefined) {
      if (!this.admit(wire.length)) return false
      raw.write(wire)
    } else if (raw !== undefined && typeof frame === 'string') {
      // A text frame of ours (a reply, an error, an event) framed here and written corked, like ws would, minus
      // the copy of the text and the second write.
      if (!this.admit(size)) return false
      this.corkUntilNextTick()
      raw.write(textFrameOf(frame, size))
    } else {
      if (!this.admit(size)) return false
      this.corkUntilNextTick()
      this.socket.send(frame, options)
    }
    const counters = this.ctx.registry.counters
    counters.messagesOut++
    counters.bytesOut += size
    // Without metrics there is no meter: this one check is all they cost.
    const meter = this.meter
    if (meter !== undefined) {
      meter.type(type ?? envelopeType(frame)).out++
      meter.bytesOut += size
    }
    return true
  }

  /**
   * Holds this tick's writes in the socket and sends them together: the replies to a batch of messages that
   * arrived in one TCP read leave in one syscall instead of one each (the syscalls were ~40 % of the echo profile).
   */
  private corkUntilNextTick (): void {
    if (this.corked) return
    const raw = (this.socket as WebSocket & { _socket?: { cork: () => void, uncork: () => void } })._socket
    if (raw === undefined) return
    raw.cork()
    this.corked = true
    process.nextTick(uncork, this, raw)
  }

  /** @internal */
  uncorked (): void {
    this.corked = false
  }

  /** Hands this tick's corked writes to the kernel now (the next write corks again). */
  private flushCorked (): void {
    const raw = (this.socket as WebSocket & { _socket?: { uncork: () => void } })._socket
    this.corked = false
    raw?.uncork()
  }

  /** The close frame goes behind the unread backlog, so a peer that is not reading gets a second, then is cut. */
  private closeSlowConsumer (): void {
    this.log.info({ bufferedAmount: this.socket.bufferedAmount }, 'slow consumer closed')
    this.close(CloseCode.SLOW_CONSUMER)
    this.killTimer ??= setTimeout(() => { this.socket.terminate() }, SLOW_CONSUMER_GRACE_MS)
  }
}
