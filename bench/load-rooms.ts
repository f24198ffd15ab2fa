// F's side of a load generator (bench/load.ts runs it): room members spread over the instances of a setup, counting
// what they receive, and a publisher that keeps requests to publish to the rooms in flight. Deliveries are counted
// per setup (`group`: 'single' or 'cluster'), so that both setups stay connected and are measured in turns.
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { SECRET } from './shared.js'

const token = createSigner({ key: SECRET })({ sub: `bench-rooms-${process.pid}` })
const NEWS = Buffer.from('"news"')

/** Every socket this process opened for F; `resetRooms` closes them. */
let sockets: WebSocket[] = []
/** Deliveries received, by setup. */
const received = new Map<string, number>()

async function open (port: number): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rt`, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false })
  sockets.push(ws)
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  // A reset when a server stops is the runner's business, not a crash.
  ws.on('error', () => {})
  return ws
}

/** Sends `{ type, id: 1, data }` and resolves at the reply (a connection sends one such request at a time). */
async function request (ws: WebSocket, type: string, data: unknown): Promise<void> {
  await new Promise<void>((resolve) => {
    const onReply = (raw: Buffer): void => {
      if (raw.includes(NEWS)) return
      ws.off('message', onReply)
      resolve()
    }
    ws.on('message', onReply)
    ws.send(JSON.stringify({ type, id: 1, data }))
  })
}

/**
 * Members: rooms `from` to `to - 1`, `perRoom` members each, member j of room r on `ports[(r * perRoom + j) % n]`,
 * so every room has members on every instance (with perRoom ≥ n). Each joins its room, then counts the news it gets.
 */
export async function roomMembers ([from, to, perRoom, ...ports]: number[], group: string): Promise<void> {
  received.set(group, received.get(group) ?? 0)
  const jobs: Array<[number, number]> = []
  for (let r = from as number; r < (to as number); r++) {
    for (let j = 0; j < (perRoom as number); j++) jobs.push([r, ports[(r * (perRoom as number) + j) % ports.length] as number])
  }
  for (let i = 0; i < jobs.length; i += 100) {
    await Promise.all(jobs.slice(i, i + 100).map(async ([room, port]) => {
      const ws = await open(port)
      await request(ws, 'enter', `r${room}`)
      ws.on('message', (raw: Buffer) => { if (raw.includes(NEWS)) received.set(group, (received.get(group) ?? 0) + 1) })
    }))
  }
  process.send?.({ ready: true })
}

/**
 * Publisher: `inflight` requests to publish at a time on each of `connections` connections per instance, room after
 * room (rooms 0 to `rooms - 1`), for `ms`; reports what was published and this process's CPU µs meanwhile.
 */
export async function publish ([rooms, connections, inflight, ms, ...ports]: number[]): Promise<void> {
  const peers = await Promise.all(ports.flatMap((port) => Array.from({ length: connections as number }, async () => await open(port))))
  const cpu = process.cpuUsage()
  const started = performance.now()
  let published = 0
  let next = 0
  await Promise.all(peers.map(async (ws) => {
    // Replies come in order on one connection: a counter is enough to match them.
    let answered = 0
    let sent = 0
    let wake: () => void = () => {}
    ws.on('message', (raw: Buffer) => { if (!raw.includes(NEWS)) { answered++; wake() } })
    while (performance.now() - started < (ms as number)) {
      while (sent - answered < (inflight as number)) {
        ws.send(`{"type":"publish","id":${++sent},"data":"r${next++ % (rooms as number)}"}`)
      }
      await new Promise<void>((resolve) => { wake = resolve })
    }
    // The last replies: the loop's condition changes in the message listener.
    for (;;) {
      if (answered >= sent) break
      await new Promise<void>((resolve) => { wake = resolve })
    }
    published += sent
  }))
  const seconds = (performance.now() - started) / 1000
  const used = process.cpuUsage(cpu)
  for (const ws of peers) ws.terminate()
  sockets = sockets.filter((s) => !peers.includes(s))
  process.send?.({ published, seconds, cpu: used.user + used.system })
}

/** Deliveries received so far by setup, and this process's CPU µs in all. */
export function roomCounts (): { counts: Record<string, number>, cpu: number } {
  const cpu = process.cpuUsage()
  return { counts: Object.fromEntries(received), cpu: cpu.user + cpu.system }
}

/** Closes every socket F opened here and forgets the counts (the generator's `reset`). */
export function resetRooms (): void {
  for (const ws of sockets) ws.terminate()
  sockets = []
  received.clear()
}
