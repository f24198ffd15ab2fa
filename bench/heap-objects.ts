// What each idle connection keeps on a server's heap, object by object:
// `node --import tsx bench/heap-objects.ts [kind=realtime] [--conns=2000] [--join] [--dir=<checkout>] [--top=40] [--keep]`.
// Starts `bench/server.ts <kind>` (from `--dir`, another checkout, if given), writes a heap snapshot, opens
// `--conns` idle connections (with `--join`, each joins the room), writes another, and prints the difference grouped
// by V8's node type and name (an object's constructor, a closure's function name), per connection, largest first.
// Two servers' lists side by side show which objects are a framework's own.
import { fork } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { resolve } from 'node:path'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { SECRET } from './shared.js'

const argv = process.argv.slice(2)
const flag = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const kind = argv.find((a) => !a.startsWith('--')) ?? 'realtime'
const conns = Number(flag('conns') ?? 2000)
const top = Number(flag('top') ?? 40)
const join = argv.includes('--join')
// `--keep` leaves the snapshots on disk (their paths are printed), to open in Chrome DevTools (Memory).
const keep = argv.includes('--keep')
const dir = resolve(flag('dir') ?? resolve(import.meta.dirname, '..'))
const token = createSigner({ key: SECRET })({ sub: 'heap-objects' })

const child = fork(resolve(dir, 'bench/server.ts'), [kind], { execArgv: ['--import', 'tsx', '--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
async function next<T> (key: string): Promise<T> {
  return await new Promise<T>((resolve) => {
    const onMessage = (m: Record<string, unknown>): void => {
      if (!(key in m)) return
      child.off('message', onMessage)
      resolve(m as T)
    }
    child.on('message', onMessage)
  })
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[], node_types: [string[]] } }
  nodes: number[]
  strings: string[]
}

/** Self bytes and counts by `type:name`. */
function summarize (file: string): Map<string, { bytes: number, count: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot
  if (!keep) rmSync(file)
  const fields = snap.snapshot.meta.node_fields
  const types = snap.snapshot.meta.node_types[0]
  const width = fields.length
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [number, number, number]
  const out = new Map<string, { bytes: number, count: number }>()
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType] as number] as string
    // Strings and numbers are grouped by type: their "name" is their value.
    const name = type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' || type === 'array' ? snap.strings[snap.nodes[i + iName] as number] : ''
    const key = `${type}:${name ?? ''}`.slice(0, 80)
    const entry = out.get(key) ?? { bytes: 0, count: 0 }
    entry.bytes += snap.nodes[i + iSize] as number
    entry.count++
    out.set(key, entry)
  }
  return out
}

async function open (port: number): Promise<WebSocket> {
  const headers = kind === 'raw-ws' || kind === 'minimal' ? {} : { authorization: `Bearer ${token}` }
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rt`, { headers, perMessageDeflate: false })
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  if (join) {
    await new Promise<void>((resolve) => {
      ws.once('message', () => { resolve() })
      ws.send(JSON.stringify({ type: 'join', id: 1, data: null }))
    })
  }
  return ws
}

const { port } = await next<{ port: number }>('port')
// A few connections first, so that what the first one creates once (compiled code, pools) is not counted.
const warm = await Promise.all(Array.from({ length: 20 }, async () => await open(port)))
for (const ws of warm) ws.terminate()
await new Promise((resolve) => setTimeout(resolve, 300))
child.send({ cmd: 'snapshot' })
const before = await next<{ snapshot: string }>('snapshot')
const sockets: WebSocket[] = []
for (let i = 0; i < conns; i += 100) sockets.push(...await Promise.all(Array.from({ length: Math.min(100, conns - i) }, async () => await open(port))))
await new Promise((resolve) => setTimeout(resolve, 300))
child.send({ cmd: 'snapshot' })
const after = await next<{ snapshot: string, connections: number }>('snapshot')
if (keep) process.stdout.write(`snapshots: ${resolve(before.snapshot)} ${resolve(after.snapshot)}\n`)
const a = summarize(resolve(before.snapshot))
const b = summarize(resolve(after.snapshot))
const rows = [...b].map(([key, v]) => {
  const w = a.get(key) ?? { bytes: 0, count: 0 }
  return { key, bytes: (v.bytes - w.bytes) / conns, count: (v.count - w.count) / conns }
}).sort((x, y) => y.bytes - x.bytes)
const total = rows.reduce((n, r) => n + r.bytes, 0)
process.stdout.write(`${kind}${join ? ' (joined)' : ''}: ${after.connections} connections, ${total.toFixed(0)} B each in the snapshot\n`)
for (const r of rows.slice(0, top)) process.stdout.write(`${r.bytes.toFixed(0).padStart(7)} B ${r.count.toFixed(2).padStart(6)}×  ${r.key}\n`)
for (const ws of sockets) ws.terminate()
child.disconnect()
