// The presence benchmark: a room of `members` members split over two instances on Redis, `rate` joins and leaves a
// second. It reports the server CPU per presence change and per plain room message at the same rate, and the delay
// from a join to the last member's `join` diff as a ratio to the delay of a plain room message to the same members.
//   node --import tsx bench/presence.ts [members=1000] [rate=100] [seconds=5]
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import WebSocket from 'ws'

const [members = 1000, rate = 100, seconds = 5] = process.argv.slice(2).map(Number)
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const prefix = `bench-presence-${randomBytes(4).toString('hex')}:`
const ROOM = 'p:bench'

const servers: ChildProcess[] = []
const deadline = setTimeout(() => { console.error('presence bench: over 5 minutes, stopping'); stop(1) }, 300_000)
function stop (code: number): void {
  for (const s of servers) s.kill('SIGKILL')
  clearTimeout(deadline)
  process.exit(code)
}

async function server (): Promise<{ port: number, cpu: () => Promise<number> }> {
  const child = fork(new URL('./presence-server.ts', import.meta.url), [url, prefix], { execArgv: ['--import', 'tsx'] })
  servers.push(child)
  const [{ port }] = await once(child, 'message') as [{ port: number }]
  return {
    port,
    cpu: async () => {
      child.send({ type: 'cpu' })
      const [{ cpu }] = await once(child, 'message') as [{ cpu: number }]
      return cpu
    }
  }
}

/** A member: counts `said` frames and presence diffs that join a given key, and calls back when a target is reached. */
class Member {
  ws!: WebSocket
  onFrame: ((m: any) => void) | undefined
  async open (port: number, user: string): Promise<void> {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/rt?user=${user}`)
    await once(this.ws, 'open')
    // Parsed only while a measurement listens: the set-up's N² join diffs cost the generator nothing.
    this.ws.on('message', (raw) => { if (this.onFrame !== undefined) this.onFrame(JSON.parse(raw.toString())) })
  }

  async call (type: string, data: unknown): Promise<void> {
    const reply = new Promise<void>((resolve) => {
      const listener = (raw: WebSocket.RawData): void => {
        if ((raw as Buffer).length < 64 && raw.toString().startsWith('{"type":"reply"')) { this.ws.off('message', listener); resolve() }
      }
      this.ws.on('message', listener)
    })
    this.ws.send(JSON.stringify({ type, data, id: 1 }))
    await reply
  }
}

/** ms until every member saw a frame `match` accepts, after `act`. */
async function delay (all: Member[], match: (m: any) => boolean, act: () => void): Promise<number> {
  let left = all.length
  const done = new Promise<void>((resolve) => {
    for (const m of all) m.onFrame = (f) => { if (match(f)) { m.onFrame = undefined; if (--left === 0) resolve() } }
  })
  const start = performance.now()
  act()
  await done
  return performance.now() - start
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

const [a, b] = [await server(), await server()]
const all: Member[] = []
for (let i = 0; i < members; i += 50) {
  await Promise.all(Array.from({ length: Math.min(50, members - i) }, async (_, j) => {
    const m = new Member()
    await m.open((i + j) % 2 === 0 ? a.port : b.port, `m${i + j}`)
    await m.call('join', { room: ROOM })
    all.push(m)
  }))
}
process.stderr.write(`presence bench: ${members} members joined\n`)
const actor = new Member()
await actor.open(a.port, 'actor')
await actor.call('join', { room: ROOM, watch: true })

// Delay: a plain room message vs a join's diff, to the same members (median of 7, after one warm-up each).
const plain: number[] = []
const joined: number[] = []
for (let i = 0; i < 8; i++) {
  plain.push(await delay(all, (f) => f.type === 'said' && f.data.n === i, () => { actor.ws.send(JSON.stringify({ type: 'say', data: { room: ROOM, n: i } })) }))
  const joiner = new Member()
  await joiner.open(a.port, `j${i}`)
  joined.push(await delay(all, (f) => f.type === 'rt.presence.diff' && f.data.joins[`j${i}`] !== undefined, () => { joiner.ws.send(JSON.stringify({ type: 'join', data: { room: ROOM } })) }))
  joiner.ws.close()
  await new Promise((resolve) => setTimeout(resolve, 100))
}
plain.shift()
joined.shift()
process.stderr.write('presence bench: delays measured\n')

// CPU: `rate` presence changes a second (churners joining and leaving, half on each instance) vs `rate` plain messages.
async function cpuPer (count: number, act: (i: number) => void): Promise<number> {
  const before = await a.cpu() + await b.cpu()
  const interval = 1000 / rate
  for (let i = 0; i < count; i++) {
    act(i)
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
  await new Promise((resolve) => setTimeout(resolve, 500))
  return (await a.cpu() + await b.cpu() - before) / count
}
const churners: Member[] = []
for (let i = 0; i < 20; i++) {
  const c = new Member()
  await c.open(i % 2 === 0 ? a.port : b.port, `c${i}`)
  churners.push(c)
}
const changes = rate * seconds
const presenceCpu = await cpuPer(changes, (i) => {
  const c = churners[Math.floor(i / 2) % churners.length] as Member
  c.ws.send(JSON.stringify({ type: i % 2 === 0 ? 'join' : 'leave', data: { room: ROOM } }))
})
const plainCpu = await cpuPer(changes, (i) => { actor.ws.send(JSON.stringify({ type: 'say', data: { room: ROOM, n: 1000 + i } })) })

console.log(`presence bench: ${members} members on two instances (Redis ${url}), ${rate} changes/s for ${seconds} s`)
console.log('| measure | presence | plain room message | ratio |')
console.log('| --- | --- | --- | --- |')
console.log(`| delay to the last member, ms (median of 7) | ${median(joined).toFixed(1)} | ${median(plain).toFixed(1)} | ${(median(joined) / median(plain)).toFixed(2)} |`)
console.log(`| server CPU per change / message, µs (both instances) | ${presenceCpu.toFixed(0)} | ${plainCpu.toFixed(0)} | ${(presenceCpu / plainCpu).toFixed(2)} |`)
for (const m of [...all, ...churners, actor]) m.ws.terminate()
stop(0)
