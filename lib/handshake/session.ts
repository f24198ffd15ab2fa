import type { FastifyInstance, FastifyRequest } from 'fastify'
import { HandshakeError } from '../protocol/codes.js'
import type { ResolvedAuth, TokenSource } from '../options.js'
import { kProtocolToken, kQueryToken } from '../symbols.js'

/** Who opened the socket, as the session check found it. */
export interface Session {
  user: unknown
  userId: string | undefined
  /** Expiry in ms since the epoch, or undefined. */
  expiresAt: number | undefined
}

type RawWithTokens = FastifyRequest['raw'] & { [kProtocolToken]?: string, [kQueryToken]?: string }

/**
 * Where the token is looked for: the configured sources; a plain GET (the client's diagnosis of a failed
 * handshake) may always carry it in Authorization.
 */
function sourcesOf (request: FastifyRequest, auth: ResolvedAuth): readonly TokenSource[] {
  return request.ws || auth.sources.includes('header') ? auth.sources : ['header', ...auth.sources]
}

/** Finds the token in the configured sources, in order; notes whether it came from a cookie. */
export function findToken (request: FastifyRequest, auth: ResolvedAuth): { token: string, fromCookie: boolean } | undefined {
  const raw = request.raw as RawWithTokens
  const sources = sourcesOf(request, auth)
  for (const source of sources) {
    let token: string | undefined
    if (source === 'header') {
      const header = request.headers.authorization
      if (typeof header === 'string' && /^bearer /i.test(header)) token = header.slice(7).trim()
    } else if (source === 'protocol') {
      token = raw[kProtocolToken]
    } else if (source === 'query') {
      token = raw[kQueryToken]
    } else {
      token = (request as FastifyRequest & { cookies?: Record<string, string | undefined> }).cookies?.[auth.cookieName]
    }
    if (token !== undefined && token !== '') return { token, fromCookie: source === 'cookie' }
  }
  return undefined
}

function expiryOf (user: unknown): number | undefined {
  const exp = (user as { exp?: unknown } | null)?.exp
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined
}

function algorithmOf (token: string): string | undefined {
  const dot = token.indexOf('.')
  if (dot <= 0) return undefined
  try {
    const header: unknown = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString())
    const alg = (header as { alg?: unknown } | null)?.alg
    return typeof alg === 'string' ? alg : undefined
  } catch {
    return undefined
  }
}

/**
 * Verifies a JWT through the request's own @fastify/jwt verifier (`request.jwtVerify()`, or `<namespace>JwtVerify`
 * with `auth.namespace`), handed the token found wherever it came from: every option the app gave @fastify/jwt
 * applies exactly as on its HTTP routes (`verify` options such as `allowedIss`/`allowedAud`, `trusted` for revoked
 * tokens, `formatUser`, a `decoratorName`, a namespace). Every failure is a 401 code: @fastify/jwt answers some (a
 * future `nbf`, an algorithm outside the list) with 500, and a garbage token must never be a 500. The algorithm is
 * pinned here first, from the token's header.
 */
export async function verifyToken (request: FastifyRequest, auth: ResolvedAuth, token: string): Promise<unknown> {
  if (token.length > 8192) throw new HandshakeError('INVALID_TOKEN', 'session token too long')
  const alg = algorithmOf(token)
  if (alg === undefined || !auth.algorithms.includes(alg)) throw new HandshakeError('INVALID_TOKEN')
  const verify = (request as unknown as Record<string, unknown>)[auth.verifier]
  if (typeof verify !== 'function') throw new HandshakeError('INVALID_TOKEN', `no request.${auth.verifier}(): is @fastify/jwt registered${auth.namespace === undefined ? '' : ` with namespace "${auth.namespace}"`}?`)
  try {
    return await (verify as (options: object) => Promise<unknown>).call(request, { extractToken: () => token })
  } catch (err) {
    const code = (err as { code?: string }).code
    if (code === 'FAST_JWT_EXPIRED' || code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') throw new HandshakeError('TOKEN_EXPIRED')
    if (code === 'FST_JWT_AUTHORIZATION_TOKEN_UNTRUSTED') throw new HandshakeError('INVALID_TOKEN', 'session token not trusted (revoked)')
    throw new HandshakeError('INVALID_TOKEN')
  }
}

/** Builds the session from a verified token or from `auth.authenticate`. */
export function sessionOf (auth: ResolvedAuth, user: unknown): Session {
  return { user, userId: auth.userId(user), expiresAt: auth.closeOnExpiry ? expiryOf(user) : undefined }
}

const PLACES: Record<string, (auth: ResolvedAuth) => string> = {
  header: () => 'the Authorization header (Bearer)',
  protocol: () => 'a `bearer.<token>` Sec-WebSocket-Protocol entry',
  cookie: (auth) => `the cookie "${auth.cookieName}"`,
  query: () => '?token='
}

/** Says where the token was looked for, and whether one was sent where this route does not look. */
function missingTokenMessage (request: FastifyRequest, auth: ResolvedAuth): string {
  const sources = sourcesOf(request, auth)
  let message = `no session token; looked in ${sources.map((s) => PLACES[s]?.(auth)).join(', ')}`
  const raw = request.raw as RawWithTokens
  if (raw[kQueryToken] !== undefined && !auth.sources.includes('query')) {
    message += '; a ?token= was sent, but `query` is not in auth.sources'
  }
  if (raw[kProtocolToken] !== undefined && !auth.sources.includes('protocol')) {
    message += '; a bearer. subprotocol entry was sent, but `protocol` is not in auth.sources'
  }
  return message
}

/** The session check of the handshake. Throws a `HandshakeError` for every refusal. */
export async function checkSession (app: FastifyInstance, request: FastifyRequest, auth: ResolvedAuth): Promise<{ session: Session, fromCookie: boolean }> {
  if (auth.authenticate !== undefined) {
    let user: unknown
    try {
      user = await auth.authenticate(request)
    } catch (err) {
      if (err instanceof HandshakeError) throw err
      throw new HandshakeError('INVALID_TOKEN')
    }
    if (user === undefined || user === null || user === false) throw new HandshakeError('MISSING_TOKEN')
    return { session: sessionOf(auth, user), fromCookie: false }
  }
  const found = findToken(request, auth)
  if (found === undefined) throw new HandshakeError('MISSING_TOKEN', missingTokenMessage(request, auth))
  const user = await verifyToken(request, auth, found.token)
  return { session: sessionOf(auth, user), fromCookie: found.fromCookie }
}
