// Where the Redis-backed tests find a Redis, so that `npm test` needs nothing a fresh machine lacks and never writes
// into a developer's own Redis unasked:
//   1. REDIS_URL when set (scripts/test.ts sets it for the whole run);
//   2. else a throw-away `redis-server` of the tests' own on a free port, when one is on the PATH;
//   3. else 127.0.0.1:6379 when it answers;
//   4. else none: the Redis tests skip with one loud line, or fail under CI=true.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'

export interface RedisServer {
  url: string
  port: number
  /** Stops the server (`kill`: SIGKILL, as a crash would) and waits for it to exit. */
  stop: (kill?: boolean) => Promise<void>
}

export const answers = async (port: number, host = '127.0.0.1', timeout = 500): Promise<boolean> =>
  await new Promise((resolve) => {
    const socket = net.connect(port, host)
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(timeout, () => { done(false) })
    socket.on('error', () => { done(false) })
    socket.on('connect', () => { socket.write('PING\r\n') })
    socket.on('data', (chunk) => { done(chunk.toString().startsWith('+PONG')) })
  })

export const hasRedisServerBinary = (env = process.env): boolean =>
  spawnSync('redis-server', ['--version'], { stdio: 'ignore', env }).status === 0

/** A port nobody listens on right now (the kernel's choice; the server binds it a moment later). */
export async function freePort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => { resolve() }))
  return port
}

/**
 * Starts a `redis-server` that keeps nothing on disk, on a free port of 127.0.0.1, and stops it when this process
 * exits. Extra arguments go to redis-server as they are (`['--cluster-enabled', 'yes']`).
 */
export async function startRedisServer (args: string[] = [], port?: number): Promise<RedisServer> {
  for (let attempt = 0; ; attempt++) {
    const chosen = port ?? await freePort()
    const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(chosen), '--save', '', '--appendonly', 'no', ...args], { stdio: 'ignore' })
    const exited = new Promise<void>((resolve) => { child.once('exit', () => { resolve() }) })
    const killOnExit = (): void => { child.kill('SIGKILL') }
    process.once('exit', killOnExit)
    const deadline = Date.now() + 5000
    while (Date.now() < deadline && child.exitCode === null) {
      if (await answers(chosen)) {
        return { url: `redis://127.0.0.1:${chosen}`, port: chosen, stop: async (kill = false) => { await stop(child, exited, kill); process.off('exit', killOnExit) } }
      }
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    await stop(child, exited)
    process.off('exit', killOnExit)
    // The port may have been taken between choosing and binding it: choose again, a few times.
    if (port !== undefined || attempt >= 3) throw new Error(`redis-server did not start on 127.0.0.1:${chosen}`)
  }
}

async function stop (child: ChildProcess, exited: Promise<void>, kill = false): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill(kill ? 'SIGKILL' : 'SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000)
  await exited
  clearTimeout(timer)
}

export interface ProvidedRedis {
  /** The URL to use, or undefined when there is no Redis (see `skip`). */
  url: string | undefined
  /** Why the Redis tests cannot run, when they cannot. */
  skip: string | undefined
  /** Stops the server when it is the tests' own; nothing otherwise. */
  stop: () => Promise<void>
}

export const HOW_TO_RUN = 'install redis-server (apt-get install redis-server) or set REDIS_URL=redis://host:port'

/** Finds or starts a Redis in the order above (`env` and `fallbackPort` only change for this helper's own tests). */
export async function provideRedis (env = process.env, fallbackPort = 6379): Promise<ProvidedRedis> {
  const none = async (): Promise<void> => {}
  if (env.REDIS_URL !== undefined && env.REDIS_URL !== '') return { url: env.REDIS_URL, skip: undefined, stop: none }
  if (hasRedisServerBinary(env)) {
    const server = await startRedisServer()
    return { url: server.url, skip: undefined, stop: server.stop }
  }
  if (await answers(fallbackPort)) return { url: `redis://127.0.0.1:${fallbackPort}`, skip: undefined, stop: none }
  const skip = `no Redis: redis-server is not on the PATH, REDIS_URL is not set and nothing answers on 127.0.0.1:${fallbackPort}; ${HOW_TO_RUN}`
  if (env.CI === 'true') throw new Error(`The Redis tests cannot run under CI=true: ${skip}`)
  return { url: undefined, skip, stop: none }
}
