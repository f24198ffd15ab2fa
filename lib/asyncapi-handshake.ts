// What the AsyncAPI document says about a route's handshake: security schemes for its token sources, the
// WebSocket channel binding (query and headers), and the refusals and close codes, in the channel's description.
import { CloseCode, CloseReason, HandshakeCode, type HandshakeCodeName } from './protocol/codes.js'
import type { ResolvedAuth, ResolvedLimits, OriginsOption } from './options.js'
import type { JsonSchema } from './asyncapi-schema.js'

/** What the document needs of a registered route. */
export interface DocumentedRoute {
  /** The full path, the prefix included. */
  path: string
  definition: {
    messages: Record<string, { schema?: unknown, reply?: unknown }>
    events?: Record<string, unknown>
    binary?: unknown
    protocols?: readonly string[]
  }
  auth: ResolvedAuth | false
  origins: OriginsOption | undefined
  requireOrigin: boolean
  limits: ResolvedLimits
}

/** A security scheme of the document, under the key the operations refer to. */
export interface NamedScheme {
  key: string
  scheme: JsonSchema
}

/** The security schemes a route's handshake accepts (any one of them), in the order they are tried. */
export function securitySchemes (auth: ResolvedAuth | false): NamedScheme[] {
  if (auth === false || auth.authenticate !== undefined) return []
  return auth.sources.map((source): NamedScheme => {
    if (source === 'header') {
      return { key: 'bearerHeader', scheme: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: '`Authorization: Bearer <token>` on the upgrade request (not settable by browsers).' } }
    }
    if (source === 'protocol') {
      return {
        key: 'bearerSubprotocol',
        scheme: {
          type: 'httpApiKey',
          name: 'Sec-WebSocket-Protocol',
          in: 'header',
          description: 'A `bearer.<token>` entry among the offered subprotocols (`new WebSocket(url, [\'bearer.\' + token, \'realtime.v1\'])`), beside an application protocol. It is never echoed.'
        }
      }
    }
    if (source === 'cookie') {
      return { key: `cookie_${auth.cookieName.replace(/[^A-Za-z0-9._-]/g, '_')}`, scheme: { type: 'httpApiKey', name: auth.cookieName, in: 'cookie', description: `The \`${auth.cookieName}\` cookie; a cookie session also needs an Origin header.` } }
    }
    return { key: 'queryToken', scheme: { type: 'httpApiKey', name: 'token', in: 'query', description: '`?token=<token>`; removed from the URL before anything logs the request.' } }
  })
}

/** The `ws` channel binding: the method, and the query and headers the handshake reads. */
export function channelBinding (route: DocumentedRoute): JsonSchema {
  const binding: JsonSchema = { method: 'GET' }
  const auth = route.auth
  const jwt = auth !== false && auth.authenticate === undefined
  if (jwt && auth.sources.includes('query')) {
    binding.query = { type: 'object', properties: { token: { type: 'string', description: 'The session token (JWT).' } } }
  }
  const headers: Record<string, JsonSchema> = {}
  const required: string[] = []
  if (jwt && auth.sources.includes('header')) headers.Authorization = { type: 'string', pattern: '^[Bb]earer ', description: 'Bearer <token>' }
  const protocols = route.definition.protocols
  if (protocols !== undefined || (jwt && auth.sources.includes('protocol'))) {
    const accepted = protocols === undefined ? 'any application protocol' : protocols.map((p) => `\`${p}\``).join(', ')
    headers['Sec-WebSocket-Protocol'] = { type: 'string', description: `Offered subprotocols: the first one the route accepts is selected (${accepted}); \`bearer.\` entries carry the token and are never selected.` }
  }
  headers.Origin = { type: 'string', description: describeOrigins(route.origins) }
  if (route.requireOrigin) required.push('Origin')
  binding.headers = { type: 'object', properties: headers, ...(required.length > 0 ? { required } : {}) }
  binding.bindingVersion = '0.1.0'
  return binding
}

function describeOrigins (origins: OriginsOption | undefined): string {
  if (origins === undefined) return 'Checked before the upgrade: same origin only (its host equals the request\'s Host).'
  if (origins === '*') return 'Any origin.'
  if (Array.isArray(origins)) return `Checked before the upgrade: ${origins.map((o) => `\`${String(o)}\``).join(', ')}.`
  return 'Checked before the upgrade by the application.'
}

const SESSION_REFUSALS: ReadonlySet<HandshakeCodeName> = new Set(['MISSING_TOKEN', 'INVALID_TOKEN', 'TOKEN_EXPIRED', 'TOO_MANY_CONNECTIONS'])

/** The channel's description: the envelope, the session, the limits, the refusals and the close codes. */
export function channelDescription (route: DocumentedRoute): string {
  const auth = route.auth
  const lines = [
    'A WebSocket endpoint. Each text frame is a JSON envelope `{ type, data, id? }`; a message that carries an `id` is answered ' +
      'with a `reply` or an `error` carrying the same `id`. Messages of one connection are handled one at a time, in order.',
    '',
    auth === false
      ? '**Session:** none.'
      : auth.authenticate !== undefined
        ? '**Session:** checked before the upgrade by the application\'s `authenticate`.'
        : `**Session:** a JWT, looked for in ${auth.sources.map((s) => `\`${s}\``).join(', ')} (in that order), checked before the upgrade.`,
    '',
    `**Limits:** frames up to ${route.limits.maxPayload} bytes; ${route.limits.rate} messages a second (bursts of ${route.limits.burst}); ` +
      `${route.limits.maxViolations} rejected messages in a row close the connection.`,
    '',
    '**Handshake refusals** (plain HTTP responses with the JSON body `{ statusCode, code, message }`):',
    '',
    '| status | code | message |',
    '| --- | --- | --- |'
  ]
  for (const [code, { statusCode, message }] of Object.entries(HandshakeCode)) {
    if (auth === false && SESSION_REFUSALS.has(code as HandshakeCodeName)) continue
    lines.push(`| ${statusCode} | \`${code}\` | ${message} |`)
  }
  lines.push('', '**Close codes:**', '', '| code | name | reason sent |', '| --- | --- | --- |')
  for (const [name, code] of Object.entries(CloseCode)) {
    if (auth === false && code === CloseCode.SESSION_EXPIRED) continue
    lines.push(`| ${code} | \`${name}\` | ${(CloseReason as Record<number, string>)[code] ?? ''} |`)
  }
  return lines.join('\n')
}
