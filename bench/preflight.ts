// Checks before a run: what the machine allows (open files) and whether the Redis row can run.
import { existsSync, readFileSync } from 'node:fs'
import { connect } from 'node:net'

/** The soft limit on open files (Linux; undefined elsewhere), which every child process inherits. */
export function openFileLimit (): number | undefined {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return match === null ? undefined : match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1])
  } catch {
    return undefined
  }
}

/** Whether a Redis answers PING at `url` within a second (NOAUTH counts: the broker sends the URL's password). */
async function redisAnswers (url: string): Promise<boolean> {
  const { hostname, port } = new URL(url)
  return await new Promise((resolve) => {
    const socket = connect(Number(port === '' ? 6379 : port), hostname === '' ? '127.0.0.1' : hostname)
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(1000, () => { done(false) })
    socket.on('error', () => { done(false) })
    socket.on('connect', () => { socket.write('PING\r\n') })
    socket.on('data', (data) => { done(/^(\+PONG|-NOAUTH)/.test(data.toString())) })
  })
}

/** Why the Redis row cannot run, or undefined when it can. */
export async function redisUnavailable (url: string, disabled: boolean): Promise<string | undefined> {
  if (disabled) return 'B through the Redis broker skipped (--no-redis)'
  if (!existsSync(new URL('../lib/redis.ts', import.meta.url))) return 'B through the Redis broker skipped: lib/redis.ts does not exist'
  if (!await redisAnswers(url)) return `B through the Redis broker skipped: no Redis answered at ${url} (set REDIS_URL)`
  return undefined
}
