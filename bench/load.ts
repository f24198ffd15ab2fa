// A load generator in its own process: `node --import tsx --expose-gc bench/load.ts`. The runner starts a few once
// and hands them work over IPC, `{ cmd: 'run', mode, kind, port, args }`, then `{ cmd: 'reset' }` to close every
// connection; a fresh process per step would cost a second of start-up each time. It speaks each server's protocol
// (JSON envelopes over ws or over the HTTP-streaming fallback, or socket.io on either of its transports). Receipt times are `performance.timeOrigin + performance.now()`,
// comparable across the processes of one machine.
import http from 'node:http'
import WebSocket from 'ws'
import { io as ioClient, type Socket } from 'socket.io-client'
import { createSigner } from 'fast-jwt'
import { SECRET } from './shared.js'
import { publish, resetRooms, roomCounts, roomMembers } from './load-rooms.js'

const now = (): number => performance.timeOrigin + performance.now()
const token = createSigner({ key: SECRET })({ sub: `bench-${process.pid}` })
const DATA = { text: 'hello world, this is a benchmark message', n: 1, tags: ['a', 'b'] }

/** One client, whatever the server: `request` for echo, `join`, `fanout`, and a `news` callback. */
interface Peer {
  request: (data: unknown) => Promise<void>
  join: () => Promise<void>
  fanout: () => void
  onNews: (fn: () => void) => void
  close: () => void
}

/** socket.io's own client, on the websocket transport or (`socket.io-polling`) on HTTP long-polling alone. */
async function openSocketIo (port: number, transport: 'websocket' | 'polling' = 'websocket'): Promise<Peer> {
  const socket: Socket = ioClient(`http://127.0.0.1:${port}`, { transports: [transport], reconnection: false, forceNew: true })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject) })
  return {
    request: async (data) => { await new Promise<void>((resolve) => socket.emit('echo', data, () => { resolve() })) },
    join: async () => { await new Promise<void>((resolve) => socket.emit('join', () => { resolve() })) },
    fanout: () => { socket.emit('fanout') },
    onNews: (fn) => { socket.on('news', fn) },
    close: () => { socket.disconnect() }
  }
}

async function openWs (kind: string, port: number): Promise<Peer> {
  // fastify-ws and realtime check a JWT before the upgrade (for D; the other workloads pay it once per connection);
  // fastify-ws-open is sent the same request and checks nothing.
  const headers = kind.startsWith('realtime') || kind.startsWith('fastify-ws') ? { authorization: `Bearer ${token}` } : {}
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rt`, { headers, perMessageDeflate: false })
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  // Errors after the open (a reset when a server stops) are the runner's business, not a crash.
  ws.on('error', () => {})
  const waiting = new Map<number, () => void>()
  let seq = 0
  let news: (() => void) | undefined
  ws.on('message', (raw) => {
    const m = JSON.parse(raw.toString())
    if (m.type === 'news') {
      news?.()
    } else {
      waiting.get(m.id)?.()
      waiting.delete(m.id)
    }
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

/**
 * The fallback's streams and batches (G). node:http with a keep-alive agent, not fetch: undici's fetch costs the
 * client so much that it, not the server, would be measured. A batch reuses a free connection, as a browser's would.
 */
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, noDelay: true })
/** Batches POSTed by this process's fallback clients (the echo reports them: frames a batch). */
let batches = 0

/**
 * A client of the HTTP-streaming fallback (docs/15-fallback.md), as the real one behaves: the SSE stream read as it
 * arrives, one frame per `data:` event; frames sent as POSTed batches, one batch in flight per session, and every
 * frame queued since the last POST in the next (64 at most). The first frames of a tick wait for its end, so that a
 * burst goes as one batch.
 */
async function openStream (port: number): Promise<Peer> {
  const authorization = `Bearer ${token}`
  const waiting = new Map<number, () => void>()
  let id = 0
  let news: (() => void) | undefined
  let session = ''
  let seq = 0
  let queue: string[] = []
  let posting = false
  let scheduled = false
  let closed = false
  const fail = (message: string): void => { if (!closed) send({ error: `stream client: ${message}` }) }
  const onFrame = (text: string): void => {
    const m = JSON.parse(text)
    if (m.type === 'news') {
      news?.()
    } else {
      waiting.get(m.id)?.()
      waiting.delete(m.id)
    }
  }
  const flush = (): void => {
    scheduled = false
    if (posting || queue.length === 0 || closed) return
    posting = true
    const frames = queue.length <= 64 ? queue : queue.slice(0, 64)
    queue = queue.length <= 64 ? [] : queue.slice(64)
    const body = JSON.stringify({ session, seq: ++seq, frames })
    batches++
    const post = http.request({
      host: '127.0.0.1',
      port,
      path: '/rt',
      method: 'POST',
      agent,
      headers: { authorization, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    }, (res) => {
      let answer = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { answer += chunk })
      res.on('end', () => {
        posting = false
        if (res.statusCode !== 200) return fail(`batch ${seq}: ${res.statusCode ?? '?'} ${answer}`)
        flush()
      })
    })
    post.on('error', (err) => { fail(`batch ${seq}: ${err.message}`) })
    post.end(body)
  }
  const push = (frame: string): void => {
    queue.push(frame)
    if (posting || scheduled) return
    scheduled = true
    queueMicrotask(flush)
  }
  const stream = http.request({ host: '127.0.0.1', port, path: '/rt', method: 'GET', agent, headers: { accept: 'text/event-stream', authorization } })
  await new Promise<void>((resolve, reject) => {
    stream.once('error', reject)
    stream.once('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        reject(new Error(`stream: ${res.statusCode ?? '?'}`))
        return
      }
      res.setEncoding('utf8')
      res.on('error', () => {})
      let buffered = ''
      // An event ends at a blank line; `data:` lines, `event:` names and `:` comments (the heartbeat) before it.
      res.on('data', (chunk: string) => {
        buffered += chunk
        let end = buffered.indexOf('\n\n')
        if (end === -1) return
        let start = 0
        while (end !== -1) {
          const event = buffered.slice(start, end)
          start = end + 2
          end = buffered.indexOf('\n\n', start)
          if (event.startsWith('data: ') && !event.includes('\n')) {
            onFrame(event.slice(6))
          } else if (event.startsWith('event: rt.open\n')) {
            session = (JSON.parse(event.slice(event.indexOf('data: ') + 6)) as { session: string }).session
            resolve()
          }
        }
        buffered = buffered.slice(start)
      })
    })
    stream.end()
  })
  stream.on('error', () => {})
  const call = async (type: string, data: unknown): Promise<void> => {
    const n = ++id
    await new Promise<void>((resolve) => { waiting.set(n, resolve); push(JSON.stringify({ type, id: n, data })) })
  }
  return {
    request: async (data) => { await call('echo', data) },
    join: async () => { await call('join', null) },
    fanout: () => { push(JSON.stringify({ type: 'fanout', data: null })) },
    onNews: (fn) => { news = fn },
    close: () => {
      closed = true
      stream.destroy()
    }
  }
}

async function open (kind: string, port: number): Promise<Peer> {
  if (kind === 'socket.io') return await openSocketIo(port)
  if (kind === 'socket.io-polling') return await openSocketIo(port, 'polling')
  if (kind === 'realtime-stream') return await openStream(port)
  return await openWs(kind, port)
}

/** Every connection this process holds; `reset` closes them. */
let peers: Peer[] = []
/** Connections kept for echo rounds, by server: A opens them on every server first, then runs short rounds in turn. */
let groups = new Map<string, Peer[]>()
/** What `arm`, `fire` and `report` act on in the current step. */
let handlers: Record<string, () => void> = {}

async function openMany (kind: string, port: number, count: number, concurrency = 100): Promise<Peer[]> {
  const opened: Peer[] = []
  for (let i = 0; i < count; i += concurrency) {
    const batch = await Promise.all(Array.from({ length: Math.min(concurrency, count - i) }, async () => await open(kind, port)))
    opened.push(...batch)
    peers.push(...batch)
  }
  return opened
}

const send = (m: object): void => { process.send?.(m) }

/** Connect: `count` connections kept as `group`, for the echo rounds. */
async function connect (kind: string, port: number, [count]: number[], group: string): Promise<void> {
  groups.set(group, [...groups.get(group) ?? [], ...await openMany(kind, port, count as number)])
  send({ ready: true })
}

/** Echo: every connection of `group` keeps `inflight` requests in flight for `ms`. */
async function echo (_kind: string, _port: number, [inflight, ms]: number[], group: string): Promise<void> {
  const mine = groups.get(group) ?? []
  if (mine.length === 0) throw new Error(`no connections in group ${group}`)
  let done = 0
  let running = true
  const started = now()
  const batchesBefore = batches
  await Promise.all(mine.flatMap((p) => Array.from({ length: inflight as number }, async () => {
    while (running) {
      await p.request(DATA)
      done++
      if (now() - started > (ms as number)) running = false
    }
  })))
  send({ messages: done, seconds: (now() - started) / 1000, batches: batches - batchesBefore })
}

/** Fan-out: `count` members join the room; with `trigger` 1, one more connection sends what fans out. */
async function members (kind: string, port: number, [count, trigger]: number[]): Promise<void> {
  const mine = await openMany(kind, port, count as number)
  await Promise.all(mine.map(async (p) => { await p.join() }))
  let last = 0
  let received = 0
  for (const p of mine) p.onNews(() => { last = now(); received++ })
  const firer = trigger === 1 ? (await openMany(kind, port, 1))[0] : undefined
  handlers = {
    // Every generator forgets the previous fan-out before the next is sent; only one of them sends it.
    arm: () => {
      last = 0
      received = 0
      send({ armed: true })
    },
    fire: () => {
      const at = now()
      firer?.fanout()
      send({ fired: at })
    },
    report: () => { send({ last, received }) }
  }
  send({ ready: true })
}

/** Idle: `count` connections that do nothing. */
async function idle (kind: string, port: number, [count]: number[]): Promise<void> {
  await openMany(kind, port, count as number)
  send({ ready: true })
}

/** Set-up: `total` connections opened and closed, `concurrency` at a time. */
async function setup (kind: string, port: number, [total, concurrency]: number[]): Promise<void> {
  const started = now()
  let ok = 0
  let next = 0
  let firstError: string | undefined
  await Promise.all(Array.from({ length: concurrency as number }, async () => {
    while (next < (total as number)) {
      next++
      try {
        const p = await open(kind, port)
        ok++
        p.close()
      } catch (err) {
        firstError ??= (err as Error).message
      }
    }
  }))
  send({ ok, seconds: (now() - started) / 1000, firstError })
}

/** One client of the storm: opens, sends its position (history rooms), joins; resolves with the events it got before the reply. */
async function comeBack (kind: string, port: number, resume: string | undefined): Promise<number> {
  const headers = kind.startsWith('realtime') ? { authorization: `Bearer ${token}` } : {}
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rt`, { headers, perMessageDeflate: false })
  peers.push({ request: async () => {}, join: async () => {}, fanout: () => {}, onNews: () => {}, close: () => { ws.terminate() } })
  ws.on('error', () => {})
  return await new Promise<number>((resolve, reject) => {
    let events = 0
    ws.once('error', reject)
    ws.on('open', () => {
      if (resume !== undefined) ws.send(resume)
      ws.send('{"type":"join","id":1,"data":null}')
    })
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString())
      if (m.type === 'news') events++
      else if (m.id === 1) resolve(events)
    })
  })
}

/** Storm: `events` fanned out to the room, then `clients` connections come back at once and join it. */
async function storm (kind: string, port: number, [clients, events]: number[]): Promise<void> {
  const history = kind.startsWith('realtime-history')
  // The position before the events, from the first join's rt.position (history rooms only).
  const headers = kind.startsWith('realtime') ? { authorization: `Bearer ${token}` } : {}
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rt`, { headers, perMessageDeflate: false })
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  let position: { epoch: string, offset: number } | undefined
  let got = 0
  let allGot: () => void = () => {}
  const received = new Promise<void>((resolve) => { allGot = resolve })
  const joined = new Promise<void>((resolve) => {
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString())
      if (m.type === 'rt.position') position = { epoch: m.data.epoch, offset: m.data.offset }
      else if (m.type === 'news' && ++got === events) allGot()
      else if (m.id === 1) resolve()
    })
  })
  ws.send('{"type":"join","id":1,"data":null}')
  await joined
  for (let i = 0; i < (events as number); i++) ws.send('{"type":"fanout","data":null}')
  await received
  ws.terminate()
  const resume = history && position !== undefined ? JSON.stringify({ type: 'rt.resume', data: { rooms: { room: position } } }) : undefined
  const started = now()
  const counts = await Promise.all(Array.from({ length: clients as number }, async () => await comeBack(kind, port, resume)))
  send({ ms: now() - started, recovered: counts.filter((n) => n === events).length })
}

const modes: Record<string, (kind: string, port: number, args: number[], group: string) => Promise<void>> = {
  connect,
  echo,
  members,
  idle,
  setup,
  storm,
  // F: the ports of a setup's instances are in args (see load-rooms.ts).
  roomMembers: async (_kind, _port, args, group) => { await roomMembers(args, group) },
  publish: async (_kind, _port, args) => { await publish(args) }
}

interface Command { cmd: string, mode?: string, kind?: string, port?: number, args?: number[], group?: string }

process.on('message', (m: Command) => {
  if (m.cmd === 'run') {
    const run = modes[m.mode as string]
    if (run === undefined) return send({ error: `unknown mode ${String(m.mode)}` })
    run(m.kind as string, m.port as number, m.args ?? [], m.group ?? '').catch((err: Error) => { send({ error: `${m.mode} ${m.kind}: ${err.message}` }) })
  } else if (m.cmd === 'reset') {
    for (const p of peers) p.close()
    peers = []
    resetRooms()
    groups = new Map()
    handlers = {}
    globalThis.gc?.()
    send({ reset: true })
  } else if (m.cmd === 'counts') {
    send(roomCounts())
  } else {
    handlers[m.cmd]?.()
  }
})
process.on('disconnect', () => { process.exit(0) })
process.on('uncaughtException', (err) => { send({ error: `load generator: ${err.message}` }); process.exit(1) })
send({ started: true })
