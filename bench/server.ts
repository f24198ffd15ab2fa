// One benchmark server in its own process: `node --import tsx --expose-gc bench/server.ts <kind> [redisUrl] [prefix]`.
// Every kind speaks the same small protocol: echo with a reply, join the room, fan out one message to the room.
// It reports its port over IPC, answers 'cpu' with process.cpuUsage() and 'heap' with its heap after GC. Each kind
// imports only what it uses, so that start-up stays short and no other framework sits in its heap.
import type { WebSocket } from 'ws'
import { writeHeapSnapshot } from 'node:v8'
import { SECRET } from './shared.js'

const [kind, redisUrl, prefix] = process.argv.slice(2) as [string, string | undefined, string | undefined]
const NEWS = { headline: 'a one-hundred-byte message to every member of the room, encoded once', n: 1 }
let connections = 0

async function echoSchema (): Promise<import('@sinclair/typebox').TSchema> {
  const { Type } = await import('@sinclair/typebox')
  return Type.Object({ text: Type.String({ maxLength: 200 }), n: Type.Integer(), tags: Type.Array(Type.String()) })
}

async function listenWs (onConnection: (ws: WebSocket) => void): Promise<number> {
  const { WebSocketServer } = await import('ws')
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, clientTracking: false })
  wss.on('connection', (ws) => {
    connections++
    ws.on('close', () => { connections-- })
    ws.on('error', () => {})
    onConnection(ws)
  })
  await new Promise((resolve) => wss.once('listening', resolve))
  return (wss.address() as { port: number }).port
}

/** The baseline: parse, answer; the fan-out sends one pre-encoded buffer to every member. */
async function rawWs (): Promise<number> {
  const room = new Set<WebSocket>()
  return await listenWs((ws) => {
    ws.on('close', () => { room.delete(ws) })
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString())
      if (m.type === 'echo') {
        ws.send(JSON.stringify({ type: 'reply', id: m.id, data: m.data }))
      } else if (m.type === 'join') {
        room.add(ws)
        ws.send(JSON.stringify({ type: 'reply', id: m.id, data: null }))
      } else if (m.type === 'fanout') {
        const frame = Buffer.from(JSON.stringify({ type: 'news', data: NEWS }))
        for (const member of room) member.send(frame, { binary: false })
      }
    })
  })
}

/**
 * Raw ws with the fan-out framed once: ws's own `Sender.frame` builds the header, and the header and the payload are
 * written to each member's TCP socket, corked, as ws's sender writes a frame (B only). The floor of "frame once,
 * write many" in plain ws code; it skips ws's check that nothing is queued, which the idle members of B never have.
 */
async function rawWsPreframed (): Promise<number> {
  // Exported by ws, not declared by @types/ws.
  const { Sender } = await import('ws') as unknown as { Sender: { frame: (data: Buffer, options: object) => Buffer[] } }
  const room = new Set<WebSocket>()
  return await listenWs((ws) => {
    ws.on('close', () => { room.delete(ws) })
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString())
      if (m.type === 'join') {
        room.add(ws)
        ws.send(JSON.stringify({ type: 'reply', id: m.id, data: null }))
      } else if (m.type === 'fanout') {
        const [head, body] = Sender.frame(Buffer.from(JSON.stringify({ type: 'news', data: NEWS })), { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: false }) as [Buffer, Buffer]
        for (const member of room) {
          const tcp = (member as WebSocket & { _socket: import('node:net').Socket })._socket
          tcp.cork()
          tcp.write(head)
          tcp.write(body)
          tcp.uncork()
        }
      }
    })
  })
}

/** The least a validated protocol costs: ws, JSON.parse, a compiled TypeBox check, a reply. */
async function minimal (): Promise<number> {
  const { TypeCompiler } = await import('@sinclair/typebox/compiler')
  const check = TypeCompiler.Compile(await echoSchema())
  return await listenWs((ws) => {
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString())
      if (m.type === 'echo' && check.Check(m.data)) ws.send(JSON.stringify({ type: 'reply', id: m.id, data: m.data }))
    })
  })
}

/**
 * Fastify + @fastify/websocket, a hand-written echo, and the same JWT check before the upgrade as fastify-realtime's:
 * the app's @fastify/jwt, its verifier's cache on, as in `realtime`. Without `check` (`fastify-ws-open`, D only),
 * nothing is checked before the upgrade: the most a server that routes its upgrades through Fastify can reach.
 */
async function fastifyWs (check = true): Promise<number> {
  const { default: Fastify } = await import('fastify')
  const { default: websocket } = await import('@fastify/websocket')
  const { default: jwt } = await import('@fastify/jwt')
  const app = Fastify()
  await app.register(jwt, { secret: SECRET, verify: { cache: true } })
  await app.register(websocket)
  app.get('/rt', {
    websocket: true,
    ...check
      ? {
          preValidation: async (request: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) => {
            try { await request.jwtVerify() } catch { return await reply.code(401).send({ code: 'INVALID_TOKEN' }) }
          }
        }
      : {}
  }, (ws) => {
    connections++
    ws.on('close', () => { connections-- })
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString())
      if (m.type === 'echo') ws.send(JSON.stringify({ type: 'reply', id: m.id, data: m.data }))
    })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as { port: number }).port
}

/**
 * What an APM does with the tracing channels, at its least: a start time per operation, a duration at its end. The
 * `realtime-observed` server runs it on every channel, with Prometheus metrics on too.
 */
async function observe (): Promise<import('../lib/index.js').RealtimeOptions['metrics']> {
  const diagnostics = await import('node:diagnostics_channel')
  const { Registry } = await import('prom-client')
  const { realtimeMetrics } = await import('../lib/metrics.js')
  const { TracingChannelName } = await import('../lib/index.js')
  const apm = { spans: 0, seconds: 0 }
  const finish = (context: any): void => { apm.spans++; apm.seconds += (performance.now() - (context.startedAt as number)) / 1000 }
  for (const name of Object.values(TracingChannelName)) {
    diagnostics.tracingChannel(name).subscribe({
      start: (context: any) => { context.startedAt = performance.now() },
      // A synchronous operation has its result (or error) at `end`; an async one finishes at `asyncEnd`.
      end: (context: any) => { if ('result' in context || context.error !== undefined) finish(context) },
      asyncStart () {},
      asyncEnd: finish,
      error () {}
    })
  }
  const registry = new Registry()
  // Scraped every second, as a busy Prometheus would.
  setInterval(() => { registry.metrics().catch(() => {}) }, 1000).unref()
  return realtimeMetrics({ registry })
}

/**
 * fastify-realtime from lib/ (through tsx), its defaults but the rate limit, on an app whose @fastify/jwt keeps its
 * verifier's cache (`verify: { cache: true }`, which docs/12 advises: the handshake uses the app's verifier); with a
 * Redis URL, on the Redis broker.
 * With `history`, the room keeps history (`realtime-history`): numbered frames, and a join that replays. With
 * `observed`, Prometheus metrics and a tracing subscriber are on (`realtime-observed`). With `fallback`, the route
 * also serves the HTTP-streaming fallback (`realtime-stream`, G): the same handlers over an SSE stream and POSTed
 * batches, and over a WebSocket too.
 */
async function fastifyRealtime ({ history = false, observed = false, rooms = false, fallback = false } = {}): Promise<number> {
  const { default: Fastify } = await import('fastify')
  const { default: jwt } = await import('@fastify/jwt')
  const { Type } = await import('@sinclair/typebox')
  const { default: realtime } = await import('../lib/index.js')
  const app = Fastify()
  await app.register(jwt, { secret: SECRET, verify: { cache: true } })
  const broker = redisUrl !== undefined ? (await import('../lib/redis.js')).redisBroker(brokerConnection(redisUrl, prefix)) : undefined
  const metrics = observed ? await observe() : undefined
  // The echo runs 16 requests in flight per connection, far above the default 100 messages a second.
  await app.register(realtime, {
    limits: { rate: 1e6, burst: 1e6 },
    ...(broker !== undefined ? { broker } : {}),
    ...(history ? { history: { rooms: ['room'] } } : {}),
    ...(metrics !== undefined ? { metrics } : {}),
    ...(fallback ? { fallback: true } : {})
  })
  app.realtimeRoute({
    url: '/rt',
    messages: {
      echo: { schema: await echoSchema(), handler: (data) => data },
      // A history room's join replies after rt.position and the replay.
      join: { schema: Type.Null(), handler: history ? async (_data, conn) => { await conn.join('room') } : (_data, conn) => { conn.join('room') } },
      fanout: { schema: Type.Null(), handler: () => { app.realtime.to('room').send('news', NEWS) } },
      // F (`realtime-rooms`): many rooms, each joined and published to by name.
      ...(rooms
        ? {
            enter: { schema: Type.String({ maxLength: 40 }), handler: (room: string, conn) => { conn.join(room) } },
            publish: { schema: Type.String({ maxLength: 40 }), handler: (room: string) => { app.realtime.to(room).send('news', NEWS) } }
          }
        : {})
    },
    onOpen: () => { connections++ },
    onClose: () => { connections-- }
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as { port: number }).port
}

/**
 * The broker's connection: `redis://…` is one Redis; `cluster:host:port,host:port,…` is a Redis Cluster on
 * sharded pub/sub (F).
 */
function brokerConnection (url: string, prefix: string | undefined): import('../lib/redis.js').RedisBrokerOptions {
  if (!url.startsWith('cluster:')) return { url, prefix }
  const nodes = url.slice('cluster:'.length).split(',').map((hostPort) => {
    const [host, port] = hostPort.split(':') as [string, string]
    return { host, port: Number(port) }
  })
  return { cluster: { nodes }, sharded: true, prefix }
}

/**
 * socket.io 4 on the websocket transport alone: acks for replies, `io.to(room).emit` for the fan-out. With
 * `polling`, on HTTP long-polling alone (`socket.io-polling`, G): what socket.io falls back to without WebSockets.
 */
async function socketIo (transport: 'websocket' | 'polling' = 'websocket'): Promise<number> {
  const { createServer } = await import('node:http')
  const { Server } = await import('socket.io')
  const http = createServer()
  const io = new Server(http, { transports: [transport], serveClient: false })
  io.on('connection', (socket) => {
    connections++
    socket.on('disconnect', () => { connections-- })
    socket.on('echo', (data: unknown, ack: (reply: unknown) => void) => { ack(data) })
    socket.on('join', async (ack: () => void) => { await socket.join('room'); ack() })
    socket.on('fanout', () => { io.to('room').emit('news', NEWS) })
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  return (http.address() as { port: number }).port
}

const servers: Record<string, () => Promise<number>> = {
  'raw-ws': rawWs,
  'raw-ws-preframed': rawWsPreframed,
  minimal,
  'fastify-ws': async () => await fastifyWs(),
  'fastify-ws-open': async () => await fastifyWs(false),
  realtime: async () => await fastifyRealtime(),
  'realtime-history': async () => await fastifyRealtime({ history: true }),
  'realtime-observed': async () => await fastifyRealtime({ observed: true }),
  'realtime-rooms': async () => await fastifyRealtime({ rooms: true }),
  'realtime-stream': async () => await fastifyRealtime({ fallback: true }),
  'socket.io': async () => await socketIo(),
  'socket.io-polling': async () => await socketIo('polling')
}
const start = servers[kind]
if (start === undefined) throw new Error(`unknown server kind ${kind}`)
const port = await start()
process.on('message', (m: { cmd: string }) => {
  // 'cpu' is cheap and leaves the heap alone; 'heap' collects garbage first (twice: weak references need two).
  if (m.cmd === 'cpu') {
    process.send?.({ cpu: process.cpuUsage(), connections })
  } else if (m.cmd === 'heap') {
    globalThis.gc?.()
    globalThis.gc?.()
    process.send?.({ heap: process.memoryUsage().heapUsed, connections })
  } else if (m.cmd === 'snapshot') {
    // bench/heap-objects.ts: a heap snapshot, to count what each connection keeps.
    globalThis.gc?.()
    process.send?.({ snapshot: writeHeapSnapshot(), connections })
  }
})
// The runner closes the IPC channel to stop a server: exiting normally lets --cpu-prof write its profile.
process.on('disconnect', () => { process.exit(0) })
process.send?.({ port })
