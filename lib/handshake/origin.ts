import type { FastifyRequest } from 'fastify'
import type { OriginsOption } from '../options.js'

const DEFAULT_PORTS: Record<string, string> = { 'http:': '80', 'https:': '443', 'ws:': '80', 'wss:': '443' }

/**
 * The Origin header normalized to `scheme://host[:port]`, lower-cased with a default port dropped, or `'null'`
 * for an opaque origin, or undefined when it is not an origin at all.
 */
export function normalizeOrigin (origin: string): string | undefined {
  if (origin === 'null') return 'null'
  // Only `scheme://host[:port]`: a path, a query, userinfo or anything a browser never sends is no origin.
  if (!/^[a-z][a-z\d+.-]*:\/\/[^/?#@\s]+$/i.test(origin)) return undefined
  try {
    const url = new URL(origin)
    return url.origin === 'null' ? undefined : url.origin
  } catch {
    return undefined
  }
}

/** A compiled origin check: `true` when the request's Origin header may open a socket. */
export type OriginCheck = (origin: string, request: FastifyRequest) => boolean | Promise<boolean>

function sameOrigin (origin: string, request: FastifyRequest): boolean {
  if (origin === 'null') return false
  const url = new URL(origin)
  const port = url.port === '' ? DEFAULT_PORTS[url.protocol] : url.port
  let host = request.host.toLowerCase()
  if (!/:\d+$/.test(host)) host += `:${DEFAULT_PORTS[url.protocol] ?? ''}`
  return `${url.hostname}:${port ?? ''}` === host
}

/**
 * Compiles `origins` once. Exact origins are compared after normalization; never a substring or suffix match.
 * The default (undefined) allows same-origin only.
 */
export function compileOriginCheck (origins: OriginsOption | undefined): OriginCheck {
  if (origins === undefined) return sameOrigin
  if (origins === '*') return () => true
  if (origins instanceof RegExp) {
    const re = new RegExp(origins.source, origins.flags.replace(/[gy]/g, ''))
    return (origin) => re.test(origin)
  }
  if (typeof origins === 'function') return origins
  const allowed = new Set(origins.map((o) => normalizeOrigin(o)))
  return (origin) => allowed.has(origin)
}
