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

/** The `alg` of a token header segment, by segment: the tokens of one issuer share a handful of headers. */
const algorithms = new Map<string, string | undefined>()
const MAX_HEADERS = 64

function algorithmOf (token: string): string | undefined {
  const dot = token.indexOf('.')
  if (dot <= 0) return undefined
  const segment = token.slice(0, dot)
  if (algorithms.has(segment)) return algorithms.get(segment)
  let alg: string | undefined
  try {
    const header: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString())
    const value = (header as { alg?: unknown } | null)?.alg
    alg = typeof value === 'string' ? value : undefined
  } catch {
    alg = undefined
  }
  // Bounded: a client can make up headers; starting over costs one parse a header.
  if (algorithms.size >= MAX_HEADERS) algorithms.clear()
  algorithms.set(segment, alg)
  return alg
}

type Verify = (this: FastifyRequest, options?: object) => Promise<unknown>

/**
 * Whether @fastify/jwt, left to find the token itself, reads the Authorization header: not when the app gave it
 * `verify.extractToken` or `verify.onlyCookie`.
 */
function readsHeader (request: FastifyRequest, auth: ResolvedAuth): boolean {
  const jwt = (request.server as unknown as { jwt?: Record<string, unknown> }).jwt
  const decorator = (auth.namespace === undefined ? jwt : jwt?.[auth.namespace]) as { options?: { verify?: { extractToken?: unknown, onlyCookie?: unknown } } } | undefined
  const verify = decorator?.options?.verify
  // Strict: anything but plainly absent or false may steer @fastify/jwt's lookup away from the header.
  return verify !== undefined && verify.extractToken === undefined && (verify.onlyCookie === undefined || verify.onlyCookie === false)
}

/**
 * Runs the request's verifier without options, so that @fastify/jwt uses the app's own verifier (built once, with
 * its `verify.cache`): handed any options, it builds a new verifier for the call and no cache can ever hit. It then
 * finds the token itself, in the Authorization header: for the synchronous part of the call, where @fastify/jwt reads
 * it, the raw request's headers are a copy that says `Bearer <token>`, and the request's own headers object, never
 * written to, is put back before anything else runs. Undefined when the header cannot carry the token there (the app
 * looks elsewhere, or a hook replaced `request.headers`).
 */
function verifyWithAppVerifier (request: FastifyRequest, auth: ResolvedAuth, verify: Verify, token: string): Promise<unknown> | undefined {
  if (!readsHeader(request, auth)) return undefined
  const raw = request.raw
  const headers = raw.headers
  const bearer = `Bearer ${token}`
  if (headers.authorization !== bearer) raw.headers = { ...headers, authorization: bearer }
  try {
    return request.headers.authorization === bearer ? verify.call(request) : undefined
  } finally {
    raw.headers = headers
  }
}

/**
 * Verifies a JWT through the request's own @fastify/jwt verifier (`request.jwtVerify()`, or `<namespace>JwtVerify`
 * with `auth.namespace`), on the token found wherever it came from: every option the app gave @fastify/jwt
 * applies exactly as on its HTTP routes (`verify` options such as `allowedIss`/`allowedAud` and `cache`, `trusted`
 * for revoked tokens, `formatUser`, a `decoratorName`, a namespace). The app's verifier is used as it is (see
 * `verifyWithAppVerifier`); when the app looks for tokens elsewhere (`verify.extractToken`, `onlyCookie`), the token
 * is handed over as an option, which costs a verifier a call. Every failure is a 401 code: @fastify/jwt answers
 * some (a future `nbf`, an algorithm outside the list) with 500, and a garbage token must never be a 500. The
 * algorithm is pinned here first, from the token's header.
 */
export async function verifyToken (request: FastifyRequest, auth: ResolvedAuth, token: string): Promise<unknown> {
  if (token.length > 8192) throw new HandshakeError('INVALID_TOKEN', 'session token too long')
  const alg = algorithmOf(token)
  if (alg === undefined || !auth.algorithms.includes(alg)) throw new HandshakeError('INVALID_TOKEN')
  const verify = (request as unknown as Record<string, unknown>)[auth.verifier]
  if (typeof verify !== 'function') throw new HandshakeError('INVALID_TOKEN', `no request.${auth.verifier}(): is @fastify/jwt registered${auth.namespace === undefined ? '' : ` with namespace "${auth.namespace}"`}?`)
  try {
    return await (verifyWithAppVerifier(request, auth, verify as Verify, token) ?? (verify as Verify).call(request, { extractToken: () => token }))
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
