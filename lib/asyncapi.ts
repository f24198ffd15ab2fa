// The AsyncAPI 3.0 document of an instance's realtime routes, generated from their definitions (no I/O).
// Perspective: the document describes the server, so a client's message is a `receive` operation (with its reply)
// and an event is a `send` operation. One channel per route; one message per type, its payload the whole envelope
// with `type` as a const, which keeps the messages of a channel mutually exclusive.
import { RECOVERY_REASONS } from './history/store.js'
import { ErrorCode } from './protocol/codes.js'
import { SchemaConverter, type Direction, type JsonSchema } from './asyncapi-schema.js'
import { channelBinding, channelDescription, securitySchemes, type DocumentedRoute } from './asyncapi-handshake.js'

export type { DocumentedRoute } from './asyncapi-handshake.js'

/** An AsyncAPI Server Object: `host` (with the port) and `protocol` (`ws` or `wss`) at least. */
export interface AsyncApiServer {
  host: string
  protocol: string
  pathname?: string
  description?: string
  [key: string]: unknown
}

/** What `app.realtime.asyncapi()` takes. */
export interface AsyncApiOptions {
  /** The Info Object: `title` and `version` at least (`description`, `contact`, `license`... as AsyncAPI defines them). */
  info: { title: string, version: string, [key: string]: unknown }
  /** Servers, by name, e.g. `{ production: { host: 'chat.example.com', protocol: 'wss' } }`. @default none */
  servers?: Record<string, AsyncApiServer>
}

/** An AsyncAPI 3.0.0 document, as plain JSON data. */
export interface AsyncApiDocument {
  asyncapi: '3.0.0'
  info: AsyncApiOptions['info']
  servers?: Record<string, AsyncApiServer>
  defaultContentType: 'application/json'
  channels: Record<string, JsonSchema>
  operations: Record<string, JsonSchema>
  components: { schemas?: Record<string, JsonSchema>, securitySchemes?: Record<string, JsonSchema> }
}

const ID: JsonSchema = {
  description: 'Chosen by the client; the reply or error carries it back.',
  anyOf: [{ type: 'string', minLength: 1, maxLength: 128 }, { type: 'number' }]
}
const CORRELATION = { location: '$message.payload#/id' }
const KEY: JsonSchema = {
  description: 'An idempotency key, the same on every retry of one request: the handler runs once per key and user within `idempotency.window`; a retry is answered with the first outcome (`replayed: true`).',
  type: 'string',
  pattern: '^[A-Za-z0-9_-]{16,64}$'
}
const REPLAYED: JsonSchema = { description: 'The answer of the first request with this idempotency key, not a new run.', const: true }

function envelope (type: string, body: Record<string, JsonSchema>, required: string[]): JsonSchema {
  return { type: 'object', required: ['type', ...required], properties: { type: { const: type }, ...body } }
}

const ERROR_PAYLOAD = envelope('error', {
  id: ID,
  replayed: REPLAYED,
  error: {
    type: 'object',
    required: ['code', 'message'],
    properties: {
      code: {
        type: 'string',
        anyOf: [
          { enum: Object.values(ErrorCode), description: 'The protocol\'s codes.' },
          { description: 'A code the handler threw with `RealtimeError`.' }
        ]
      },
      message: { type: 'string' },
      details: { description: 'For VALIDATION_FAILED, a list of `{ path, message }`; else what the handler gave.' }
    }
  }
}, ['error'])

/** Keys unique within a map, made of the characters every AsyncAPI tool accepts. */
function uniqueKey (taken: Record<string, unknown>, wanted: string): string {
  const base = wanted.replace(/[^A-Za-z0-9._-]/g, '_') || '_'
  let key = base
  for (let n = 2; key in taken; n++) key = `${base}_${n}`
  return key
}

const ref = (...path: string[]): { $ref: string } => ({ $ref: '#/' + path.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/') })

/** A path parameter of a channel: its name, and whether Fastify lets it be empty (`:id?`). */
interface PathParameter { name: string, optional: boolean }

/**
 * Fastify's (find-my-way's) route syntax → an AsyncAPI address and its parameters, exactly: `/rooms/:id` →
 * `/rooms/{id}`; several parameters in one segment, ended by `-` or `.` (`/:from-:to`, `/:name.:ext`); a regexp
 * after the name (`:id(^\\d+)`), left out; `:id?`, optional; `::`, a literal colon; `*`, the `wildcard` parameter.
 */
function address (path: string): { address: string, parameters: PathParameter[] } {
  const parameters: PathParameter[] = []
  let out = ''
  for (let i = 0; i < path.length;) {
    const c = path[i] as string
    if (c === ':' && path[i + 1] === ':') {
      out += ':'
      i += 2
    } else if (c === ':') {
      let j = i + 1
      while (j < path.length && !'/-.(?:'.includes(path[j] as string)) j++
      const name = path.slice(i + 1, j)
      if (path[j] === '(') {
        for (let depth = 0; j < path.length; j++) {
          if (path[j] === '\\') { j++; continue }
          if (path[j] === '(') depth++
          else if (path[j] === ')' && --depth === 0) { j++; break }
        }
      }
      const optional = path[j] === '?'
      if (optional) j++
      parameters.push({ name, optional })
      out += `{${name}}`
      i = j
    } else if (c === '*') {
      parameters.push({ name: 'wildcard', optional: true })
      out += '{wildcard}'
      i++
    } else {
      out += c
      i++
    }
  }
  return { address: out, parameters }
}

const POSITION = { epoch: { type: 'string', description: 'changes whenever the room\'s stored stream was lost' }, offset: { type: 'integer', minimum: 0 } }

/** `rt.resume` and `rt.position`: the reserved messages of rooms with history (see docs/05-delivery-guarantees.md). */
function historyMessages (): { resume: JsonSchema, position: JsonSchema } {
  return {
    resume: {
      name: 'rt.resume',
      title: 'rt.resume',
      summary: 'The first frame after a reconnect: the positions the client holds, per room (no reply; kept until the room is joined).',
      payload: envelope('rt.resume', { data: { type: 'object', required: ['rooms'], properties: { rooms: { type: 'object', description: 'room → the position the client holds; entries the server cannot use, and rooms past the first 256, are ignored', additionalProperties: { type: 'object', required: ['epoch', 'offset'], properties: { epoch: { ...POSITION.epoch, minLength: 1, maxLength: 16 }, offset: POSITION.offset } } } } } }, ['data'])
    },
    position: {
      name: 'rt.position',
      title: 'rt.position',
      summary: 'Sent on every join of a history room, with `recovery` when the join resumed from a position (the missed events follow it); again with `recovered: false` when the member\'s stream lost continuity; `offset: null` on a leave.',
      payload: envelope('rt.position', {
        data: {
          type: 'object',
          required: ['room', 'offset'],
          properties: {
            room: { type: 'string' },
            epoch: { ...POSITION.epoch, description: `${POSITION.epoch.description}; present whenever \`offset\` is a number` },
            offset: {
              type: ['integer', 'null'],
              minimum: 0,
              description: 'The member\'s position in the room\'s stream: the last event it has. null: it has none (after a leave, or while the store does not answer, `unavailable`): forget the room\'s position.'
            },
            recovery: {
              description: 'Recovered: `missed` events follow. Not recovered: reload the room (a snapshot from the app), then go on from this position.',
              oneOf: [
                { type: 'object', required: ['recovered', 'missed'], properties: { recovered: { const: true }, missed: { type: 'integer', minimum: 0 } } },
                { type: 'object', required: ['recovered', 'reason'], properties: { recovered: { const: false }, reason: { type: 'string', enum: [...RECOVERY_REASONS] } } }
              ]
            }
          },
          if: { properties: { offset: { type: 'integer' } } },
          then: { required: ['epoch'] },
          else: { not: { required: ['epoch'] } }
        }
      }, ['data'])
    }
  }
}

const NUMBERED = {
  room: { type: 'string', description: 'The history room the event was sent to (with `offset`).' },
  offset: {
    type: 'integer',
    minimum: 1,
    description: 'The event\'s offset in the room\'s stream, under the epoch of the room\'s last `rt.position` (events carry no epoch): keep the highest per room, and send it in `rt.resume` after a reconnect.'
  }
}

/**
 * An event's envelope. With history, an event sent to a room that keeps one carries the room and its offset; the
 * same type sent anywhere else (a room without history, a user, everyone, one connection, `volatile`) carries
 * neither: both optional, never one without the other.
 */
function eventPayload (type: string, data: JsonSchema, history: boolean): JsonSchema {
  if (!history) return envelope(type, { data }, ['data'])
  return { ...envelope(type, { data, ...NUMBERED }, ['data']), dependencies: { room: ['offset'], offset: ['room'] } }
}

const PRESENCE_EPOCH = { type: 'string', description: 'changes whenever the room\'s list was lost: versions compare only within one epoch' }
const MEMBERS = { type: 'object', description: 'member key → `{ data }`', additionalProperties: { type: 'object', required: ['data'], properties: { data: {} } } }

/** `rt.presence`, `rt.presence.diff` and `rt.presence.left`: the reserved messages of presence rooms (see docs/06-presence.md). */
function presenceMessages (): { snapshot: JsonSchema, diff: JsonSchema, left: JsonSchema } {
  return {
    left: {
      name: 'rt.presence.left',
      title: 'rt.presence.left',
      summary: 'The connection left a presence room: no more snapshots or diffs of it follow until it joins again; drop its list.',
      payload: envelope('rt.presence.left', {
        data: { type: 'object', required: ['room'], properties: { room: { type: 'string' } } }
      }, ['data'])
    },
    snapshot: {
      name: 'rt.presence',
      title: 'rt.presence',
      summary: 'After each join of a presence room (and after a lost diff or a new epoch): the members and the list\'s version `v` and `epoch`.',
      payload: envelope('rt.presence', {
        data: { type: 'object', required: ['room', 'v', 'members'], properties: { room: { type: 'string' }, v: { type: 'integer', minimum: 0 }, epoch: PRESENCE_EPOCH, members: MEMBERS } }
      }, ['data'])
    },
    diff: {
      name: 'rt.presence.diff',
      title: 'rt.presence.diff',
      summary: 'A change of a presence room\'s members; ignore it when `v` is at or below the snapshot\'s, or its `epoch` is not the snapshot\'s.',
      payload: envelope('rt.presence.diff', {
        data: {
          type: 'object',
          required: ['room', 'v', 'joins', 'leaves', 'updates'],
          properties: { room: { type: 'string' }, v: { type: 'integer', minimum: 1 }, epoch: PRESENCE_EPOCH, joins: MEMBERS, leaves: { type: 'array', items: { type: 'string' } }, updates: MEMBERS }
        }
      }, ['data'])
    }
  }
}

/** Builds the document. Throws `RT_ERR_ASYNCAPI_SCHEMA` for a schema JSON cannot express. */
export function buildAsyncApi (routes: readonly DocumentedRoute[], options: AsyncApiOptions, features: { history?: boolean, presence?: boolean } = {}): AsyncApiDocument {
  const converter = new SchemaConverter()
  for (const route of routes) {
    for (const m of Object.values(route.definition.messages)) { converter.collect(m.schema); converter.collect(m.reply) }
    for (const e of Object.values(route.definition.events ?? {})) converter.collect(e)
  }
  const channels: Record<string, JsonSchema> = {}
  const operations: Record<string, JsonSchema> = {}
  const schemes: Record<string, JsonSchema> = {}

  for (const route of routes) {
    const channelId = uniqueKey(channels, route.path.replace(/^\/+|\/+$/g, '').replace(/\//g, '.') || 'root')
    const messages: Record<string, JsonSchema> = {}
    const named = securitySchemes(route.auth)
    for (const { key, scheme } of named) schemes[key] = scheme
    const security = named.length > 0 ? { security: named.map(({ key }) => ref('components', 'securitySchemes', key)) } : {}
    const schema = (value: unknown, type: string, direction: Direction): JsonSchema =>
      converter.convert(value, { route: route.path, type, direction })
    const addMessage = (wanted: string, message: JsonSchema): { $ref: string } => {
      const key = uniqueKey(messages, wanted)
      messages[key] = message
      return ref('channels', channelId, 'messages', key)
    }
    const addOperation = (action: 'send' | 'receive', type: string, message: { $ref: string }, reply?: Array<{ $ref: string }>, extra: JsonSchema = {}): void => {
      operations[uniqueKey(operations, `${channelId}.${action}.${type}`)] = {
        action,
        channel: ref('channels', channelId),
        messages: [message],
        ...(reply !== undefined ? { reply: { channel: ref('channels', channelId), messages: reply } } : {}),
        ...security,
        ...extra
      }
    }
    const errorRef = addMessage('error', { name: 'error', title: 'error', summary: 'An error envelope: a refused message or a failed handler.', correlationId: CORRELATION, payload: ERROR_PAYLOAD })

    for (const [type, message] of Object.entries(route.definition.messages)) {
      const data = schema(message.schema, type, 'in')
      const replyData = message.reply === undefined ? {} : schema(message.reply, type, 'out')
      const inRef = addMessage(type, { name: type, title: type, ...summaryOf(message.schema), correlationId: CORRELATION, payload: envelope(type, { id: ID, key: KEY, data }, ['data']) })
      const replyRef = addMessage(`${type}.reply`, { name: 'reply', title: `${type} reply`, summary: `The reply to \`${type}\`, sent when the message carried an \`id\`.`, correlationId: CORRELATION, payload: envelope('reply', { id: ID, data: replyData, replayed: REPLAYED }, ['id', 'data']) })
      addOperation('receive', type, inRef, [replyRef, errorRef])
    }
    const pingRef = addMessage('ping', { name: 'ping', title: 'ping', summary: 'An application-level ping (reserved type); answered with `pong`.', correlationId: CORRELATION, payload: envelope('ping', { id: ID }, []) })
    const pongRef = addMessage('pong', { name: 'pong', title: 'pong', summary: 'The answer to `ping`, with its `id`.', correlationId: CORRELATION, payload: envelope('pong', { id: ID }, []) })
    addOperation('receive', 'ping', pingRef, [pongRef])
    if (route.auth !== false && route.auth.authenticate === undefined) {
      const refreshRef = addMessage('auth.refresh', {
        name: 'auth.refresh',
        title: 'auth.refresh',
        summary: 'Renews the session with a new token of the same user (reserved type); errors INVALID_TOKEN or TOKEN_EXPIRED leave the old expiry.',
        correlationId: CORRELATION,
        payload: envelope('auth.refresh', { id: ID, data: { type: 'object', required: ['token'], properties: { token: { type: 'string' } } } }, ['data'])
      })
      const refreshedRef = addMessage('auth.refresh.reply', {
        name: 'reply',
        title: 'auth.refresh reply',
        summary: 'The new expiry, seconds since the epoch (null: none).',
        correlationId: CORRELATION,
        payload: envelope('reply', { id: ID, data: { type: 'object', required: ['exp'], properties: { exp: { type: ['number', 'null'] } } } }, ['id', 'data'])
      })
      addOperation('receive', 'auth.refresh', refreshRef, [refreshedRef, errorRef])
    }
    if (features.history === true) {
      const { resume, position } = historyMessages()
      addOperation('receive', 'rt.resume', addMessage('rt.resume', resume))
      addOperation('send', 'rt.position', addMessage('rt.position', position))
    }
    if (features.presence === true) {
      const { snapshot, diff, left } = presenceMessages()
      addOperation('send', 'rt.presence', addMessage('rt.presence', snapshot))
      addOperation('send', 'rt.presence.diff', addMessage('rt.presence.diff', diff))
      addOperation('send', 'rt.presence.left', addMessage('rt.presence.left', left))
    }
    if (route.definition.binary !== undefined) {
      const binaryRef = addMessage('binary', { name: 'binary', title: 'binary frame', summary: 'A binary frame, handed to the route\'s binary handler as it is.', contentType: 'application/octet-stream', payload: { type: 'string', format: 'binary' } })
      addOperation('receive', 'binary', binaryRef)
    }
    for (const [type, event] of Object.entries(route.definition.events ?? {})) {
      const payload = eventPayload(type, schema(event, type, 'out'), features.history === true)
      const eventRef = addMessage(`${type}.event`, { name: type, title: type, ...summaryOf(event), payload })
      addOperation('send', type, eventRef)
    }
    addOperation('send', 'error', errorRef, undefined, {
      summary: 'An error that answers no message of an operation: a frame that is no valid envelope, or of a type the route does not know (with its `id` when one could be read), a refused binary frame, or `PRESENCE_FULL` (`details.room`).'
    })

    const { address: channelAddress, parameters } = address(route.path)
    channels[channelId] = {
      address: channelAddress,
      title: route.path,
      description: channelDescription(route),
      ...(parameters.length > 0 ? { parameters: Object.fromEntries(parameters.map((p) => [p.name, p.optional ? { description: 'May be empty.' } : {}])) } : {}),
      messages,
      bindings: { ws: channelBinding(route) }
    }
  }

  const components: AsyncApiDocument['components'] = {}
  if (Object.keys(converter.components).length > 0) components.schemas = converter.components
  if (Object.keys(schemes).length > 0) components.securitySchemes = schemes
  // A copy: the shared envelope parts must not change when a caller edits its document.
  return structuredClone({
    asyncapi: '3.0.0',
    info: options.info,
    ...(options.servers !== undefined ? { servers: options.servers } : {}),
    defaultContentType: 'application/json',
    channels,
    operations,
    components
  } satisfies AsyncApiDocument)
}

/** A TypeBox schema's own `description` becomes the message's summary. */
function summaryOf (schema: unknown): { summary?: string } {
  const description = (schema as { description?: unknown } | null | undefined)?.description
  return typeof description === 'string' ? { summary: description } : {}
}
