// One benchmark server in its own process: `tsx --expose-gc bench/server.ts <kind> [redisUrl] [prefix]`.
// Every kind speaks the same small protocol: echo with a reply, join the room, fan out one message to the room.
// It reports its port over IPC and answers 'measure' with its CPU time, heap after GC and connection count.
import { WebSocketServer, type WebSocket } from 'ws'
import Fastify from 'fastify'
import websocket from '@fastify/websocket'
import jwt from '@fastify/jwt'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { Server as SocketIOServer } from 'socket.io'
import realtime from '../lib/index.js'

import { SECRET } from './shared.js'
const [kind, redisUrl, prefix] = process.argv.slice(2) as [string, string | undefined, string | undefined]
const Echo = Type.Object({ text: Type.String({ maxLength: 200 }), n: Type.Integer(), tags: Type.Array(Type.String()) })
const NEWS = { headline: 'a one-hundred-byte message to every member of the room, encoded once', n: 1 }
let connections = 0

async function rawWs (): Promise<number> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, clientTracking: false })
  const room = new Set<WebSocket>()
  wss.on('connection', (ws) => {
    connections++
    ws.on('close', () => { connections--; room.delete(ws) })
    ws.on('error', () => {})
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString())
      if (m.type === 'echo') ws.send(JSON.stringify({ type: 'reply', id: m.id, data: m.data }))
      else if (m.type === 'join') { room.add(ws); ws.send(JSON.stringify({ type: 'reply', id: m.id, data: null })) } else if (m.type === 'fanout') {
        const frame = Buffer.from(JSON.stringify({ type: 'news', data: NEWS }))
        for (const member of room) member.send(frame, { binary: false })
      }
    })
  })
  await new Promise((resolve) => wss.once('listening', resolve))
  return (wss.address() as { port: number }).port
}

async function minimal (): Promise<number> {
  const check = TypeCompiler.Compile(Echo)
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, clientTracking: false })
  wss.on('connection', (ws) => {
    connections++
    ws.on('close', () => { connections-- })
    ws.on('error', () => {})
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString())
      if (m.type === 'echo' && check.Check(m.data)) ws.send(JSON.stringify({ type: 'reply', id: m.id, data: m.data }))
    })
  })
  await new Promise((resolve) => wss.once('listening', resolve))
  return (wss.address() as { port: number }).port
}

async function fastifyWs (): Promise<number> {
  const app = Fastify()
  await app.register(jwt, { secret: SECRET })
  await app.register(websocket)
  app.get('/rt', {
    websocket: true,
    // The same check before the upgrade as fastify-realtime's, by hand.
    preValidation: async (request, reply) => {
      try { await request.jwtVerify() } catch { return await reply.code(401).send({ code: 'INVALID_TOKEN' }) }
    }
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

async function fastifyRealtime (): Promise<number> {
  const app = Fastify()
  await app.register(jwt, { secret: SECRET })
  const broker = redisUrl !== undefined ? (await import('../lib/redis.js')).redisBroker({ url: redisUrl, prefix }) : undefined
  await app.register(realtime, { limits: { rate: 1e6, burst: 1e6 }, ...(broker !== undefined ? { broker } : {}) })
  app.realtimeRoute({
    url: '/rt',
    messages: {
      echo: { schema: Echo, handler: (data) => data },
      join: { schema: Type.Null(), handler: (_data, conn) => { conn.join('room') } },
      fanout: { schema: Type.Null(), handler: () => { app.realtime.to('room').send('news', NEWS) } }
    },
    onOpen: () => { connections++ },
    onClose: () => { connections-- }
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as { port: number }).port
}

async function socketIo (): Promise<number> {
  const { createServer } = await import('node:http')
  const http = createServer()
  const io = new SocketIOServer(http, { transports: ['websocket'], serveClient: false })
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

const servers: Record<string, () => Promise<number>> = { 'raw-ws': rawWs, minimal, 'fastify-ws': fastifyWs, realtime: fastifyRealtime, 'socket.io': socketIo }
const start = servers[kind]
if (start === undefined) throw new Error(`unknown server kind ${kind}`)
const port = await start()
process.on('message', (m: { cmd: string }) => {
  if (m.cmd !== 'measure') return
  globalThis.gc?.()
  globalThis.gc?.()
  process.send?.({ cpu: process.cpuUsage(), heap: process.memoryUsage().heapUsed, connections })
})
process.on('disconnect', () => { process.exit(0) })
process.send?.({ port })
