import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import jwt from '@fastify/jwt'
import realtime, { type RealtimeOptions } from '../../lib/index.js'

export const SECRET = 'test-secret-that-is-long-enough-for-hs256'

export interface StartOptions {
  realtime?: RealtimeOptions
  jwt?: false | Record<string, unknown>
  fastify?: FastifyServerOptions
  /** Registers routes (and anything else) before the app listens. */
  setup?: (app: FastifyInstance) => void | Promise<void>
  /** The port to listen on (to come back on the same one). @default 0 */
  port?: number
}

export interface TestApp {
  app: FastifyInstance
  /** `ws://127.0.0.1:<port>` */
  wsBase: string
  /** `http://127.0.0.1:<port>` */
  httpBase: string
  port: number
  /** Signs a JWT with the test secret. */
  sign: (payload: Record<string, unknown>, options?: Record<string, unknown>) => string
  close: () => Promise<void>
}

/** An app with @fastify/jwt and fastify-realtime on 127.0.0.1, port 0. */
export async function startApp (options: StartOptions = {}): Promise<TestApp> {
  const app = Fastify({ logger: false, ...options.fastify })
  if (options.jwt !== false) await app.register(jwt, { secret: SECRET, ...options.jwt })
  await app.register(realtime, { heartbeat: false, ...options.realtime })
  await options.setup?.(app)
  await app.listen({ host: '127.0.0.1', port: options.port ?? 0 })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return {
    app,
    port,
    wsBase: `ws://127.0.0.1:${port}`,
    httpBase: `http://127.0.0.1:${port}`,
    sign: (payload, signOptions) => (app as any).jwt.sign(payload, signOptions),
    close: async () => { await app.close() }
  }
}
