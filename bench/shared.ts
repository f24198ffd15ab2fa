import { spawn } from 'node:child_process'
/** The JWT secret the benchmark's servers verify and its load generators sign with. */
export const SECRET = 'bench-secret-bench-secret-bench-secret'

/**
 * The in-process harnesses (overhead.ts, fanout-cpu.ts): runs `file` again in a fresh process with `args` (this
 * process's loader flags kept) and returns the `ns` it printed as JSON.
 */
export async function nsInChild (file: string, args: string[], what: string): Promise<number> {
  const proc = spawn(process.execPath, [...process.execArgv, file, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const code = await new Promise((resolve) => proc.on('close', resolve))
  if (code !== 0) throw new Error(`${what} failed (exit ${String(code)})`)
  return (JSON.parse(out) as { ns: number }).ns
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
