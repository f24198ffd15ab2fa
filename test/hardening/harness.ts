import assert from 'node:assert/strict'
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { Writable } from 'node:stream'
import { Type } from '@sinclair/typebox'
import cookie from '@fastify/cookie'
import { RealtimeError, type LimitsOptions } from '../../lib/index.js'
import { startApp, type TestApp } from '../helpers/app.js'
import { connect, waitFor } from '../helpers/client.js'

export const ALLOWED_ORIGIN = 'https://allowed.example'
export const MAX_PAYLOAD = 16 * 1024

/** The RSA key pair of the harness's @fastify/jwt (RS256), so that algorithm confusion can be tried. */
export const keys = generateKeyPairSync('rsa', { modulusLength: 2048 })
export const publicPem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString()
export const privateKey: KeyObject = keys.privateKey

/**
 * One app for a whole hardening file, with one invariant checked after every case: no uncaught exception or
 * unhandled rejection, a canary client doing a request every 50 ms saw no failure, the registry, rooms and user
 * index are back to the canary alone, the process's handles are back to the baseline, and no log line holds a
 * token the case used.
 */
export interface Harness {
  h: TestApp
  logs: string[]
  /** Signs a valid token for a user. */
  token: (sub: string, claims?: Record<string, unknown>) => string
  /** Tokens that must never appear in a log line. */
  secrets: Set<string>
  /** The registry's sizes and the process's handles now, to compare with after a case. */
  snapshot: () => Snapshot
  check: (baseline: Snapshot) => Promise<void>
  close: () => Promise<void>
}

export interface Snapshot { registry: number[], handles: Record<string, number> }

function resources (): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1
  return counts
}

export async function startHarness (options: { limits?: LimitsOptions, fallback?: boolean } = {}): Promise<Harness> {
  const faults: string[] = []
  const onUncaught = (err: Error): void => { faults.push(`uncaught: ${err.stack ?? String(err)}`) }
  const onUnhandled = (reason: unknown): void => { faults.push(`unhandled rejection: ${String(reason)}`) }
  process.on('uncaughtException', onUncaught)
  process.on('unhandledRejection', onUnhandled)

  const logs: string[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { logs.push(chunk.toString()); cb() } })
  const h = await startApp({
    // fetch's pool (the fallback's cases) may open a connection it never sends a request on: Node closes such a
    // connection at app.close() only after its headers timeout (60 s), unless told to close every connection.
    fastify: { logger: { level: 'debug', stream }, forceCloseConnections: options.fallback === true },
    jwt: {
      secret: { private: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), public: publicPem },
      sign: { algorithm: 'RS256', iss: 'rt-tests', aud: 'rt' },
      verify: { allowedIss: 'rt-tests', allowedAud: 'rt' }
    },
    realtime: {
      origins: [ALLOWED_ORIGIN],
      auth: { sources: ['header', 'protocol', 'cookie', 'query'] },
      heartbeat: { interval: 2000 },
      fallback: options.fallback ?? false,
      limits: { maxPayload: MAX_PAYLOAD, rate: 1000, burst: 1000, maxViolations: 1000, maxBufferedBytes: 256 * 1024, ...options.limits }
    },
    setup: async (app) => {
      await app.register(cookie)
      app.realtimeRoute({
        url: '/rt',
        messages: {
          echo: { schema: Type.Any(), handler: (data) => data },
          typed: { schema: Type.Object({ text: Type.String({ maxLength: 100 }), n: Type.Integer() }), handler: ({ n }) => n + 1 },
          join: { schema: Type.String({ maxLength: 64 }), handler: (room, conn) => { conn.join(room); return room } },
          // No schema bound on the name: the plugin's own room limits are what refuses.
          joinAny: { schema: Type.String({ maxLength: 4096 }), handler: (room, conn) => { conn.join(room); return conn.rooms.size } },
          crash: { schema: Type.Any(), handler: () => { throw new Error('boom') } },
          refuse: { schema: Type.Any(), handler: () => { throw new RealtimeError('NOPE', 'refused by the app') } }
        }
      })
    }
  })
  const secrets = new Set<string>()
  const token = (sub: string, claims: Record<string, unknown> = {}): string => {
    const t = (h.app as unknown as { jwt: { sign: (p: object) => string } }).jwt.sign({ sub, ...claims })
    secrets.add(t)
    return t
  }

  // The canary keeps no timer of its own beyond its interval, so the handle count is steady between requests.
  const canary = await connect(`${h.wsBase}/rt`, { headers: { authorization: `Bearer ${token('canary')}` } })
  await canary.request('join', 'canary-room')
  const canaryFailures: string[] = []
  let n = 0
  let sentAt = 0
  canary.ws.on('message', (data) => {
    const reply = JSON.parse(data.toString())
    if (reply.type !== 'reply' || reply.id !== n || reply.data !== n + 1) canaryFailures.push(`unexpected answer ${data.toString()}`)
    sentAt = 0
  })
  const canaryTimer = setInterval(() => {
    if (sentAt !== 0) {
      if (Date.now() - sentAt > 1000) canaryFailures.push(`no answer to request ${n} within a second`)
      return
    }
    n++
    sentAt = Date.now()
    canary.sendJson({ type: 'typed', id: n, data: { text: 'canary', n } })
  }, 50)
  await new Promise((resolve) => setTimeout(resolve, 120))
  const sizes = (): number[] => {
    const stats = h.app.realtime.stats()
    return [stats.connections, stats.users, stats.rooms]
  }

  return {
    h,
    logs,
    token,
    secrets,
    snapshot: () => ({ registry: sizes(), handles: resources() }),
    async check (baseline) {
      try {
        await waitFor(() => JSON.stringify(sizes()) === JSON.stringify(baseline.registry), 5000, 'the registry to be back')
      } catch {
        assert.deepEqual(sizes(), baseline.registry, 'registry, user index and rooms back to where they were')
      }
      try {
        await waitFor(() => JSON.stringify(resources()) === JSON.stringify(baseline.handles), 3000, 'handles back to the baseline')
      } catch {
        assert.deepEqual(resources(), baseline.handles, 'handles back to the baseline')
      }
      assert.equal(canary.ws.readyState, canary.ws.OPEN, 'the canary is connected')
      assert.deepEqual(canaryFailures, [], 'the canary saw no failure')
      assert.deepEqual(faults, [], 'no uncaught exception, no unhandled rejection')
      for (const secret of secrets) {
        const leak = logs.find((line) => line.includes(secret) || line.includes(secret.split('.')[2] as string))
        assert.equal(leak, undefined, 'no token in a log line')
      }
    },
    async close () {
      clearInterval(canaryTimer)
      canary.destroy()
      await h.close()
      process.off('uncaughtException', onUncaught)
      process.off('unhandledRejection', onUnhandled)
    }
  }
}
