// Instructions per connection set-up, counted by valgrind (callgrind), which the machine's load cannot move:
// `node --import tsx bench/setup-instructions.ts [kind=realtime] [--dir=<checkout>] [--conns=300] [--warm=300]`.
// Runs `bench/server.ts <kind>` (from `--dir`, another checkout, if given) under callgrind with instrumentation
// off, opens `--warm` connections (one at a time, so the JIT has compiled the set-up path), switches it on around
// `--conns` more, and prints the instructions counted ÷ connections. Slow: a minute or two a server.
import { execFileSync, spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import { resolve } from 'node:path'
import { tmpdir } from 'node:os'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { SECRET } from './shared.js'

const argv = process.argv.slice(2)
const flag = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const kind = argv.find((a) => !a.startsWith('--')) ?? 'realtime'
const conns = Number(flag('conns') ?? 300)
const warm = Number(flag('warm') ?? 300)
const dir = resolve(flag('dir') ?? resolve(import.meta.dirname, '..'))
const out = resolve(tmpdir(), `callgrind.setup.${process.pid}`)
const token = createSigner({ key: SECRET })({ sub: 'setup-instructions' })

const child = spawn('valgrind', ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}`,
  process.execPath, '--import', 'tsx', resolve(dir, 'bench/server.ts'), kind], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] })
// valgrind's summary (`I refs: 123,456`) counts the instrumented stretch only.
let log = ''
child.stderr?.on('data', (chunk: Buffer) => { log += chunk.toString() })
const { port } = await new Promise<{ port: number }>((resolve) => { child.once('message', (m) => { resolve(m as { port: number }) }) })

async function openClose (n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const headers = kind === 'raw-ws' ? {} : { authorization: `Bearer ${token}` }
    const ws = new WebSocket(`ws://127.0.0.1:${port}/rt`, { headers, perMessageDeflate: false })
    await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    await new Promise<void>((resolve) => { ws.once('close', () => { resolve() }); ws.close() })
  }
}

await openClose(warm)
execFileSync('callgrind_control', ['-i', 'on', String(child.pid)], { stdio: 'ignore' })
await openClose(conns)
await new Promise((resolve) => setTimeout(resolve, 500))
execFileSync('callgrind_control', ['-i', 'off', String(child.pid)], { stdio: 'ignore' })
child.disconnect()
await new Promise((resolve) => child.once('exit', resolve))
rmSync(out, { force: true })
const refs = Number(/I\s+refs:\s+([\d,]+)/.exec(log)?.[1]?.replaceAll(',', ''))
process.stdout.write(`${kind}${flag('dir') === undefined ? '' : ` (${dir})`}: ${(refs / conns / 1000).toFixed(0)} k instructions per connection set-up\n`)
