// A load generator in its own process: `tsx bench/load.ts <mode> <kind> <port> ...`. It speaks each server's
// protocol (JSON envelopes over ws, or socket.io) and reports over IPC.
import WebSocket from 'ws'
import { io as ioClient, type Socket } from 'socket.io-client'
import { createSigner } from 'fast-jwt'
import { SECRET } from './shared.js'

const [mode, kind, portText, ...rest] = process.argv.slice(2) as [string, string, string, ...string[]]
const url = `ws://127.0.0.1:${portText}${kind === 'socket.io' ? '' : '/rt'}`
const now = (): number => performance.timeOrigin + performance.now()
const token = createSigner({ key: SECRET })({ sub: `bench-${process.pid}` })
const DATA = { text: 'hello world, this is a benchmark message', n: 1, tags: ['a', 'b'] }

/** One client, whatever the server: `request` for echo, `join`, `fanout`, and a `news` callback. */
interface Peer { request: (data: unknown) => Promise<void>, join: () => Promise<void>, fanout: () => void, onNews: (fn: () => void) => void, close: () => void }

async function open (): Promise<Peer> {
  if (kind === 'socket.io') {
    const socket: Socket = ioClient(`http://127.0.0.1:${portText}`, { transports: ['websocket'], reconnection: false, forceNew: true })
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject) })
    return {
      request: async (data) => { await new Promise<void>((resolve) => socket.emit('echo', data, () => { resolve() })) },
      join: async () => { await new Promise<void>((resolve) => socket.emit('join', () => { resolve() })) },
      fanout: () => { socket.emit('fanout') },
      onNews: (fn) => { socket.on('news', fn) },
      close: () => { socket.disconnect() }
    }
  }
  const headers = kind === 'realtime' || kind === 'fastify-ws' ? { authorization: `Bearer ${token}` } : {}
  const ws = new WebSocket(url, { headers, perMessageDeflate: false })
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const waiting = new Map<number, () => void>()
  let seq = 0
  let news: (() => void) | undefined
  ws.on('message', (raw) => {
    const m = JSON.parse(raw.toString())
    if (m.type === 'news') news?.()
    else waiting.get(m.id)?.()
    waiting.delete(m.id)
  })
  const call = async (type: string, data: unknown): Promise<void> => {
    const id = ++seq
    await new Promise<void>((resolve) => { waiting.set(id, resolve); ws.send(JSON.stringify({ type, id, data })) })
  }
  return {
    request: async (data) => { await call('echo', data) },
    join: async () => { await call('join', null) },
    fanout: () => { ws.send(JSON.stringify({ type: 'fanout', data: null })) },
    onNews: (fn) => { news = fn },
    close: () => { ws.terminate() }
  }
}

async function openMany (count: number, concurrency = 100): Promise<Peer[]> {
  const peers: Peer[] = []
  for (let i = 0; i < count; i += concurrency) {
    peers.push(...await Promise.all(Array.from({ length: Math.min(concurrency, count - i) }, open)))
  }
  return peers
}

const send = (m: object): void => { process.send?.(m) }
process.on('disconnect', () => { process.exit(0) })

if (mode === 'echo') {
  const [conns, inflight, ms] = rest.map(Number) as [number, number, number]
  const peers = await openMany(conns)
  let done = 0
  let running = true
  const started = now()
  await Promise.all(peers.flatMap((p) => Array.from({ length: inflight }, async () => {
    while (running) {
      await p.request(DATA)
      done++
      if (now() - started > ms) running = false
    }
  })))
  send({ messages: done, seconds: (now() - started) / 1000 })
  for (const p of peers) p.close()
} else if (mode === 'members') {
  const [count, trigger] = rest.map(Number) as [number, number]
  const peers = await openMany(count)
  await Promise.all(peers.map(async (p) => { await p.join() }))
  let last = 0
  let received = 0
  for (const p of peers) p.onNews(() => { last = now(); received++ })
  const firer = trigger === 1 ? await open() : undefined
  send({ ready: true })
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'fire') {
      last = 0
      received = 0
      const at = now()
      firer?.fanout()
      send({ fired: at })
    } else if (m.cmd === 'report') {
      send({ last, received })
    }
  })
} else if (mode === 'idle') {
  const [count] = rest.map(Number) as [number]
  await openMany(count)
  send({ ready: true })
} else if (mode === 'setup') {
  const [total, concurrency] = rest.map(Number) as [number, number]
  const started = now()
  let ok = 0
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      next++
      try {
        const p = await open()
        ok++
        p.close()
      } catch {}
    }
  }))
  send({ ok, seconds: (now() - started) / 1000 })
}
