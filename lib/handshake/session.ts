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

/** @fastify/jwt's `request.jwtVerify(options, callback)`: with a callback it returns nothing, and calls it once. */
type Verify = (this: FastifyRequest, options: object | undefined, callback: (err: unknown, user?: unknown) => void) => unknown

/** A value, or the promise of one: what the handshake's steps return, so that one done without waiting never waits. */
export type Settled<T> = T | Promise<T>

export function isPromise<T> (value: Settled<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}

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
 * Calls the request's verifier in its callback form, and gives its result as it came: at once when the verifier
 * answered within the call (@fastify/jwt does, for a static key, its `verify.cache` and a synchronous `trusted`),
 * so that a handshake with nothing to wait for never waits a tick; otherwise a promise. A verifier that answers with
 * a promise instead (not @fastify/jwt's) is waited for too.
 */
function callVerify (request: FastifyRequest, verify: Verify, options: object | undefined): Settled<unknown> {
  // 0 waiting, 1 verified (value: the user), 2 refused (value: the error).
  let state = 0 as 0 | 1 | 2
  let value: unknown
  let settled: (() => void) | undefined
  const settle = (err: unknown, user?: unknown): void => {
    if (state !== 0) return
    state = err === null || err === undefined ? 1 : 2
    value = state === 1 ? user : err
    settled?.()
  }
  const returned = verify.call(request, options, settle)
  if (state === 1) return value
  if (state === 2) throw value
  return new Promise((resolve, reject) => {
    settled = () => { if (state === 1) resolve(value); else reject(value) }
    if (isPromise(returned)) returned.then((user) => { settle(null, user) }, (err: unknown) => { settle(err ?? new Error('verifier rejected')) })
  })
}

/**
 * Runs the request's verifier without options, so that @fastify/jwt uses the app's own verifier (built once, with
 * its `verify.cache`): handed any options, it builds a new verifier for the call and no cache can ever hit. It then
 * finds the token itself, in the Authorization header: for the synchronous part of the call, where @fastify/jwt reads
 * it, the raw request's headers are a copy that says `Bearer <token>`, and the request's own headers object, never
 * written to, is put back before anything else runs. Undefined when the header cannot carry the token there (the app
 * looks elsewhere, or a hook replaced `request.headers`).
 */
function verifyWithAppVerifier (request: FastifyRequest, auth: ResolvedAuth, verify: Verify, token: string): { result: Settled<unknown> } | undefined {
  if (!readsHeader(request, auth)) return undefined
  const raw = request.raw
  const headers = raw.headers
  const bearer = `Bearer ${token}`
  if (headers.authorization !== bearer) raw.headers = { ...headers, authorization: bearer }
  try {
    return request.headers.authorization === bearer ? { result: callVerify(request, verify, undefined) } : undefined
  } finally {
    raw.headers = headers
  }
}

/** Every verifier failure is a 401 code: @fastify/jwt answers some (a future `nbf`, an algorithm outside the list) with 500. */
function refusalOf (err: unknown): HandshakeError {
  const code = (err as { code?: string } | null)?.code
  if (code === 'FAST_JWT_EXPIRED' || code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') return new HandshakeError('TOKEN_EXPIRED')
  if (code === 'FST_JWT_AUTHORIZATION_TOKEN_UNTRUSTED') return new HandshakeError('INVALID_TOKEN', 'session token not trusted (revoked)')
  return new HandshakeError('INVALID_TOKEN')
}

const refuseWith = (err: unknown): never => { throw refusalOf(err) }

/**
 * Verifies a JWT through the request's own @fastify/jwt verifier (`request.jwtVerify()`, or `<namespace>JwtVerify`
 * with `auth.namespace`), on the token found wherever it came from: every option the app gave @fastify/jwt
 * applies exactly as on its HTTP routes (`verify` options such as `allowedIss`/`allowedAud` and `cache`, `trusted`
 * for revoked tokens, `formatUser`, a `decoratorName`, a namespace). The app's verifier is used as it is (see
 * `verifyWithAppVerifier`); when the app looks for tokens elsewhere (`verify.extractToken`, `onlyCookie`), the token
 * is handed over as an option, which costs a verifier a call. Every failure is a 401 code: @fastify/jwt answers
 * some (a future `nbf`, an algorithm outside the list) with 500, and a garbage token must never be a 500. The
 * algorithm is pinned here first, from the token's header. The user at once when the verifier answered at once
 * (see `callVerify`), else a promise of it; a refusal is thrown, or rejects the promise.
 */
export function verifyToken (request: FastifyRequest, auth: ResolvedAuth, token: string): Settled<unknown> {
  if (token.length > 8192) throw new HandshakeError('INVALID_TOKEN', 'session token too long')
  const alg = algorithmOf(token)
  if (alg === undefined || !auth.algorithms.includes(alg)) throw new HandshakeError('INVALID_TOKEN')
  const verify = (request as unknown as Record<string, unknown>)[auth.verifier]
  if (typeof verify !== 'function') throw new HandshakeError('INVALID_TOKEN', `no request.${auth.verifier}(): is @fastify/jwt registered${auth.namespace === undefined ? '' : ` with namespace "${auth.namespace}"`}?`)
  let result: Settled<unknown>
  try {
    result = (verifyWithAppVerifier(request, auth, verify as Verify, token) ?? { result: callVerify(request, verify as Verify, { extractToken: () => token }) }).result
  } catch (err) {
    throw refusalOf(err)
  }
  return isPromise(result) ? result.then(undefined, refuseWith) : result
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

type Checked = { session: Session, fromCookie: boolean }

/**
 * The session check of the handshake. Throws a `HandshakeError` for every refusal; at once when nothing in it had to
 * wait (a verifier or an `authenticate` that answers within the call), else through the promise it returns.
 */
export function checkSession (app: FastifyInstance, request: FastifyRequest, auth: ResolvedAuth): Settled<Checked> {
  if (auth.authenticate !== undefined) {
    let user: unknown
    try {
      user = auth.authenticate(request)
    } catch (err) {
      throw authenticateRefusal(err)
    }
    return isPromise(user) ? user.then((u) => authenticated(auth, u), (err: unknown) => { throw authenticateRefusal(err) }) : authenticated(auth, user)
  }
  const found = findToken(request, auth)
  if (found === undefined) throw new HandshakeError('MISSING_TOKEN', missingTokenMessage(request, auth))
  const user = verifyToken(request, auth, found.token)
  const fromCookie = found.fromCookie
  return isPromise(user) ? user.then((u) => ({ session: sessionOf(auth, u), fromCookie })) : { session: sessionOf(auth, user), fromCookie }
}

function authenticateRefusal (err: unknown): HandshakeError {
  return err instanceof HandshakeError ? err : new HandshakeError('INVALID_TOKEN')
}

function authenticated (auth: ResolvedAuth, user: unknown): Checked {
  if (user === undefined || user === null || user === false) throw new HandshakeError('MISSING_TOKEN')
  return { session: sessionOf(auth, user), fromCookie: false }
}
