// The in-process benchmark harnesses build fastify-realtime's internals by hand (a Connection, a Registry, a route),
// through imports the type check cannot see: a change to those internals must not leave them broken. Each runs here
// at a size that only shows it works (its figures mean nothing at this size).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'

async function run (file: string, args: string[]): Promise<{ code: number | null, out: string, err: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 60_000)
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  clearTimeout(timer)
  return { code, out, err }
}

/** The rows of the harness's table: variant and its median figure. */
function rows (out: string): Map<string, number> {
  return new Map(out.split('\n').filter((l) => /^\| [a-z+]+ \| \d/.test(l)).map((l) => {
    const [, name, figure] = l.split('|').map((c) => c.trim())
    return [name as string, Number(figure)]
  }))
}

test('bench/overhead.ts runs the dispatcher with metrics and tracing off and on', { timeout: 90_000 }, async () => {
  const { code, out, err } = await run('bench/overhead.ts', ['--rounds=1', '--messages=5000'])
  assert.equal(code, 0, err)
  const table = rows(out)
  assert.deepEqual([...table.keys()], ['off', 'metrics', 'tracing', 'both'], out)
  for (const [variant, ns] of table) assert.ok(ns > 0, `${variant}: ${ns} ns a message`)
})

test('bench/fanout-cpu.ts fans out to a room of connections, plain and history, metrics off and on', { timeout: 90_000 }, async () => {
  const { code, out, err } = await run('bench/fanout-cpu.ts', ['--rounds=1', '--members=200', '--sends=8', '--pad=0'])
  assert.equal(code, 0, err)
  const table = rows(out)
  assert.deepEqual([...table.keys()].sort(), ['history', 'history+metrics', 'plain', 'plain+metrics'], out)
  for (const [variant, ns] of table) assert.ok(ns > 0, `${variant}: ${ns} ns a delivery`)
})
