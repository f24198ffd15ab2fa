import type { FastifyReply, FastifyRequest } from 'fastify'
import { normalizeOrigin, type OriginCheck } from './origin.js'

/**
 * CORS for a realtime route's plain HTTP answers. A browser client on another origin learns why its handshake failed
 * by fetching the same URL with an Authorization header (see the client's diagnosis); that fetch needs a preflight
 * and readable answers. Only origins the route's allowlist accepts get CORS headers: for the others the browser
 * keeps the answer from the page, and no socket is ever opened for them either.
 */
export async function allowedOrigin (request: FastifyRequest, check: OriginCheck): Promise<string | undefined> {
  const origin = request.headers.origin
  if (origin === undefined) return undefined
  const normalized = normalizeOrigin(origin)
  if (normalized === undefined || normalized === 'null') return undefined
  return await check(normalized, request) ? origin : undefined
}

/** Marks a plain GET's answer readable by `origin`. */
export function allowOrigin (reply: FastifyReply, origin: string): void {
  reply.header('access-control-allow-origin', origin).header('vary', 'Origin')
}

/**
 * The preflight of the client's diagnosis fetch (GET with an Authorization header) from an allowed origin, and on a
 * fallback route of its stream and batches.
 */
export async function answerPreflight (request: FastifyRequest, reply: FastifyReply, check: OriginCheck, fallback = false): Promise<void> {
  const origin = await allowedOrigin(request, check)
  if (origin === undefined) {
    await reply.code(204).header('vary', 'Origin').send()
    return
  }
  allowOrigin(reply, origin)
  // A fallback route's stream and batches: POSTed JSON, with the page's cookies or an Authorization header.
  if (fallback) reply.header('access-control-allow-credentials', 'true')
  await reply.code(204)
    .header('access-control-allow-methods', fallback ? 'GET, POST' : 'GET')
    .header('access-control-allow-headers', fallback ? 'authorization, x-realtime-protocol, content-type' : 'authorization, x-realtime-protocol')
    .header('access-control-max-age', '600')
    .send()
}
