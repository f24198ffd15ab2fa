import { LinkProxy } from './link-proxy.js'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { after, test } from 'node:test'
import type { FastifyBaseLogger } from 'fastify'
import { HOW_TO_RUN, provideRedis } from './redis-server.js'

// REDIS_URL, a throw-away redis-server of this test file's own, or 127.0.0.1:6379 (see redis-server.ts).
const provided = await provideRedis()
if (provided.skip !== undefined) process.stderr.write(`\n*** SKIPPING the Redis tests of this file: ${provided.skip} ***\n\n`)
after(async () => { await provided.stop() })

export const REDIS_URL = provided.url ?? 'redis://127.0.0.1:6379'
/** Why the Redis tests cannot run on this machine, when they cannot (never under CI=true: that fails instead). */
export const REDIS_SKIP = provided.skip
/** `test`, or `test.skip` when this machine has no Redis for the tests. */
export const redisTest: typeof test.skip = REDIS_SKIP === undefined ? test : test.skip

/** Connects to the tests' Redis; fails, saying how to get one, when it does not answer. */
export async function requireRedis (): Promise<Redis> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  try {
    await redis.connect()
    await redis.ping()
    return redis
  } catch (err) {
    redis.disconnect()
    throw new Error(`These tests need a Redis at ${REDIS_URL} (${(err as Error).message}); ${HOW_TO_RUN}`)
  }
}

/** A key and channel prefix of its own for each test, so runs never see each other. */
export const uniquePrefix = (): string => `rt-test-${randomBytes(4).toString('hex')}:`

/** The ids of the connections Redis knows by this name (`CLIENT SETNAME`, ioredis's `connectionName`). */
export async function clientIds (redis: Redis, name: string): Promise<string[]> {
  const list = await redis.client('LIST') as string
  return list.split('\n').flatMap((line) => {
    const fields = new Map(line.trim().split(' ').map((kv) => kv.split('=', 2) as [string, string]))
    return fields.get('name') === name && fields.has('id') ? [fields.get('id') as string] : []
  })
}

/** Kills the connections of that name, as a failing network or `CLIENT KILL` by an operator would; returns how many. */
export async function killClients (redis: Redis, name: string): Promise<number> {
  let killed = 0
  for (const id of await clientIds(redis, name)) killed += Number(await redis.client('KILL', 'ID', id))
  return killed
}

/** A logger for `Fastify({ loggerInstance })` that keeps every line, to count what an outage logs. */
export function captureLogger (): { logger: FastifyBaseLogger, lines: Array<{ level: string, msg: string }> } {
  const lines: Array<{ level: string, msg: string }> = []
  const at = (level: string) => (obj: unknown, msg?: string) => { lines.push({ level, msg: typeof obj === 'string' ? obj : msg ?? '' }) }
  const logger = {
    level: 'info',
    fatal: at('fatal'),
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    trace: at('trace'),
    silent: () => {},
    child: () => logger
  }
  return { logger: logger as unknown as FastifyBaseLogger, lines }
}

/** A proxy (test/helpers/link-proxy.ts) in front of the test files' Redis: cut and restore, stall and resume. */
export class RedisProxy extends LinkProxy {
  constructor () {
    const target = new URL(REDIS_URL)
    super({ host: target.hostname, port: Number(target.port === '' ? 6379 : target.port) })
  }
}
