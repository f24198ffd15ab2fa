import type { IncomingMessage } from 'node:http'
import { kProtocolToken, kQueryToken } from '../symbols.js'

type RawRequest = IncomingMessage & { [kQueryToken]?: string, [kProtocolToken]?: string }

/** Turns a route path (`/rooms/:id/ws`, `/files/*`) into a RegExp over request paths spelled as `spelling` leaves them. */
function pathPattern (path: string): RegExp {
  const source = spelling(path).split('/').map((part) => {
    if (part.startsWith(':')) return '[^/]+'
    if (part === '*') return '.*'
    return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  }).join('/')
  return new RegExp(`^${source}/?$`)
}

function decodeSafely (text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

/**
 * A request path as the most permissive router would read it: percent-escapes decoded, case folded, duplicate
 * slashes collapsed, a `;` parameter cut. Fastify routes `/ch%61t`, `/CHAT` (`caseSensitive: false`), `//chat`
 * (`ignoreDuplicateSlashes`) and `/chat;x` (`useSemicolonDelimiter`) to `/chat`: whatever the app's router options,
 * each spelling that could reach a realtime route is redacted (a token on a 404 is kept out of the log too).
 */
function spelling (path: string): string {
  let p = path
  const semicolon = p.indexOf(';')
  if (semicolon !== -1) p = p.slice(0, semicolon)
  // An escaped slash stays one: routers split the path before they decode a parameter.
  if (p.includes('%')) p = p.split(/%2f/i).map(decodeSafely).join('%2f')
  return p.replace(/\/{2,}/g, '/').toLowerCase()
}

/**
 * Moves session tokens out of a request before Fastify (or anything else) logs it: `?token=` leaves the URL and a
 * `bearer.<token>` entry leaves the Sec-WebSocket-Protocol header; both wait in private symbols for the session
 * check. Attached with `prependListener`, so it runs before Fastify's and @fastify/websocket's listeners.
 * Only requests to realtime routes are touched.
 */
export class TokenRedactor {
  private readonly patterns: RegExp[] = []

  addPath (path: string): void {
    this.patterns.push(pathPattern(path))
  }

  readonly onRequest = (req: IncomingMessage): void => {
    const raw = req as RawRequest
    const url = raw.url ?? ''
    // Any query may spell the key `token` with escapes (`%74oken=`); it is parsed only on a realtime route's path.
    const hasQueryToken = url.includes('?')
    const protocols = req.headers['sec-websocket-protocol']
    const hasProtocolToken = typeof protocols === 'string' && protocols.includes('bearer.')
    // Fastify's `injectWS` sends the version as the number 13; ws 8.23.1 and later accept only the string.
    const numericVersion = typeof (req.headers['sec-websocket-version'] as unknown) === 'number'
    if (!hasQueryToken && !hasProtocolToken && !numericVersion) return
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    const spelled = spelling(path)
    if (!this.patterns.some((p) => p.test(spelled))) return
    if (numericVersion) req.headers['sec-websocket-version'] = String(req.headers['sec-websocket-version'])
    if (hasQueryToken && q !== -1) {
      const params = new URLSearchParams(url.slice(q + 1))
      const token = params.get('token')
      if (params.has('token')) {
        raw[kQueryToken] = token ?? undefined
        params.delete('token')
        const rest = params.toString()
        raw.url = rest === '' ? path : `${path}?${rest}`
      }
    }
    if (hasProtocolToken) {
      const entries = protocols.split(',').map((p) => p.trim())
      const bearer = entries.find((p) => p.startsWith('bearer.'))
      if (bearer !== undefined) raw[kProtocolToken] = bearer.slice('bearer.'.length)
      const kept = entries.filter((p) => !p.startsWith('bearer.')).join(', ')
      if (kept === '') delete req.headers['sec-websocket-protocol']
      else req.headers['sec-websocket-protocol'] = kept
      // `injectWS` builds a request without rawHeaders.
      const rawHeaders = req.rawHeaders as string[] | undefined
      if (rawHeaders !== undefined) {
        for (let i = 0; i < rawHeaders.length; i += 2) {
          if (rawHeaders[i]?.toLowerCase() === 'sec-websocket-protocol') rawHeaders[i + 1] = kept
        }
      }
    }
  }
}
