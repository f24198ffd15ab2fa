// The benchmark's child processes: forked through tsx, each awaited message bounded by a timeout and by the run's
// time budget, every one of them killed when the run ends, however it ends.
import { fork, type ChildProcess } from 'node:child_process'

/** Thrown when the run's time budget is spent: the runner stops there and reports what it has. */
export class BudgetSpent extends Error {}

const children = new Set<ChildProcess>()
let deadline = Number.POSITIVE_INFINITY

/** Every wait ends by `at` (ms since the epoch); past it, waits reject with `BudgetSpent`. */
export function setDeadline (at: number): void {
  deadline = at
}

export function remaining (): number {
  return deadline - Date.now()
}

/** Kills every child at once (SIGKILL): for exits, signals and the hard stop. */
export function killAll (): void {
  for (const child of children) child.kill('SIGKILL')
}
process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\nbench: ${signal}, stopping every child\n`)
    killAll()
    process.exit(130)
  })
}

function describe (child: ChildProcess): string {
  return child.spawnargs.slice(-5).join(' ')
}

/** Forks `bench/<file>` under tsx; its stdout and stderr go to ours. */
export function spawn (file: string, args: string[], execArgv: string[] = []): ChildProcess {
  const child = fork(new URL(file, import.meta.url), args, {
    execArgv: ['--import', 'tsx', ...execArgv],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  children.add(child)
  child.on('exit', () => { children.delete(child) })
  child.on('error', () => {})
  return child
}

/**
 * The next IPC message of `child` that has `key`; rejects after `ms`, at the deadline, when the child exits, or
 * when it reports `{ error }`.
 */
export async function expect<T> (child: ChildProcess, key: string, ms: number): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const left = remaining()
    const budget = left < ms
    const timer = setTimeout(() => {
      cleanup()
      reject(budget ? new BudgetSpent('the time budget ran out') : new Error(`no "${key}" from ${describe(child)} within ${ms} ms`))
    }, Math.max(0, Math.min(ms, left)))
    const onMessage = (m: Record<string, unknown>): void => {
      if (m === null || typeof m !== 'object') return
      if (typeof m.error === 'string') { cleanup(); reject(new Error(m.error)) } else if (key in m) { cleanup(); resolve(m as T) }
    }
    const onExit = (code: number | null, signal: string | null): void => {
      cleanup()
      reject(new Error(`${describe(child)} exited (${signal ?? code}) before sending "${key}"`))
    }
    const cleanup = (): void => { clearTimeout(timer); child.off('message', onMessage); child.off('exit', onExit) }
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

/** Sends a command; a child that has gone is ignored (the `expect` that follows reports it). */
export function command (child: ChildProcess, message: object): void {
  if (child.connected) child.send(message)
}

/**
 * Stops a child: it is asked to exit (closing its IPC channel; a server profiled with --cpu-prof writes its profile
 * then), and killed if it has not within `graceMs`.
 */
export async function stop (child: ChildProcess, graceMs = 300): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  if (child.connected) child.disconnect()
  const timer = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
  await exited
  clearTimeout(timer)
}

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
