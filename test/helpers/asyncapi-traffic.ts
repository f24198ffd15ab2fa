// Recorded WebSocket traffic checked against an AsyncAPI 3 document, frame by frame, as a client written in another
// language from the document alone would read it: a client frame is a message of one of the channel's `receive`
// operations; a server frame is a reply of the operation its `id` answers (the document's correlationId), else a
// message of a `send` operation. Payloads are JSON Schema draft-07 (AsyncAPI's default schema format), checked by ajv 8
// (draft-07 is its default; not strict, since the document around the schemas is AsyncAPI, not JSON Schema).
import WebSocket, { type ClientOptions } from 'ws'
import { Ajv, type ValidateFunction } from 'ajv'
import type { AsyncApiDocument } from '../../lib/index.js'

type JsonSchema = Record<string, unknown>

/** One text frame as it crossed the socket. `rejected`: sent on purpose as a frame the server refuses. */
export interface RecordedFrame {
  socket: number
  direction: 'client' | 'server'
  text: string
  rejected?: boolean
}

/** Every frame of every `RecordingSocket`, in the order the sockets saw them. */
export class Traffic {
  readonly frames: RecordedFrame[] = []
  private sockets = 0

  /** A `ws` WebSocket class whose sockets record here: give it to the typed client as its `WebSocket`. */
  socketClass (): new (url: string, protocols?: string | string[], options?: ClientOptions) => RecordingSocket {
    const traffic = this
    return class extends RecordingSocket {
      constructor (url: string, protocols?: string | string[], options?: ClientOptions) {
        super(traffic, url, protocols, options)
      }
    }
  }

  /** @internal */
  open (): number {
    return ++this.sockets
  }
}

/** A `ws` WebSocket that records the text frames it sends and receives. */
export class RecordingSocket extends WebSocket {
  /** The socket's number in the traffic's frames. */
  readonly number: number
  private readonly traffic: Traffic

  constructor (traffic: Traffic, url: string, protocols?: string | string[], options?: ClientOptions) {
    super(url, protocols, options)
    this.traffic = traffic
    this.number = traffic.open()
    this.on('message', (data, isBinary) => {
      if (isBinary) throw new Error('the example sends no binary frames')
      traffic.frames.push({ socket: this.number, direction: 'server', text: String(data) })
    })
  }

  override send (data: unknown, ...rest: unknown[]): void {
    if (typeof data === 'string') this.traffic.frames.push({ socket: this.number, direction: 'client', text: data })
    super.send(data as string, ...rest as [])
  }

  /** Sends a frame the server is meant to refuse: the document must refuse it too. */
  sendRejected (text: string): void {
    this.traffic.frames.push({ socket: this.number, direction: 'client', text, rejected: true })
    super.send(text)
  }
}

interface Message {
  ref: string
  validate: ValidateFunction
  payload: JsonSchema
}

interface Operation {
  action: 'send' | 'receive'
  messages: Message[]
  replies: Message[]
}

/** What a frame was checked as: its direction, type and the message it matched (none for a rejected frame). */
export interface CheckedFrame {
  frame: RecordedFrame
  value: Record<string, unknown>
  message: string | undefined
}

/** One channel of a document, ready to check frames. */
export class ChannelChecker {
  private readonly ajv = new Ajv({ allErrors: true, strict: false })
  private readonly operations: Operation[]
  private readonly unasked: Message[]
  private readonly sent: Message[]
  private readonly cache = new Map<string, Message>()

  constructor (private readonly document: AsyncApiDocument, address: string) {
    const entry = Object.entries(document.channels).find(([, c]) => c.address === address)
    if (entry === undefined) throw new Error(`no channel at ${address} in the document`)
    const channelRef = `#/channels/${entry[0]}`
    this.ajv.addSchema(document as object, 'asyncapi')
    this.operations = Object.entries(document.operations)
      .filter(([, op]) => (op.channel as { $ref: string }).$ref === channelRef)
      .map(([, op]) => ({
        action: op.action as 'send' | 'receive',
        messages: (op.messages as Array<{ $ref: string }>).map((m) => this.message(m.$ref)),
        replies: ((op.reply as { messages?: Array<{ $ref: string }> } | undefined)?.messages ?? []).map((m) => this.message(m.$ref))
      }))
    // What the server sends unasked (the send operations' messages) and, for a frame with no id to correlate (a pong
    // to an id-less ping), the replies as well.
    this.unasked = unique(this.operations.filter((o) => o.action === 'send').flatMap((o) => o.messages))
    this.sent = unique([...this.unasked, ...this.operations.flatMap((o) => o.replies)])
  }

  /**
   * Checks every frame in order; throws naming the first frame that matches no message, more than one, or carries a
   * property the matched message does not name. A frame sent as `rejected` must match no message.
   */
  check (frames: readonly RecordedFrame[]): CheckedFrame[] {
    // Per socket, the operation each request id was sent for, so that its answer is checked as that operation's reply.
    const asked = new Map<string, Operation | undefined>()
    const receive = this.operations.filter((o) => o.action === 'receive')
    return frames.map((frame) => {
      let value: Record<string, unknown>
      try {
        value = JSON.parse(frame.text)
      } catch (err) {
        if (frame.rejected === true) return { frame, value: {}, message: undefined }
        throw err
      }
      const where = `socket ${frame.socket}, ${frame.direction} frame ${frame.text}`
      const id = typeof value.id === 'string' || typeof value.id === 'number' ? `${frame.socket}:${JSON.stringify(value.id)}` : undefined
      if (frame.direction === 'client') {
        const operation = receive.find((o) => o.messages.some((m) => constOf(m.payload) === value.type))
        if (id !== undefined) asked.set(id, operation)
        const matched = receive.flatMap((o) => o.messages).filter((m) => m.validate(value) === true)
        if (frame.rejected === true) {
          if (matched.length > 0) throw new Error(`${where}: the server refuses it, yet it matches ${matched.map((m) => m.ref).join(', ')}`)
          return { frame, value, message: undefined }
        }
        return { frame, value, message: this.one(where, value, matched, receive.flatMap((o) => o.messages)) }
      }
      if (id !== undefined && !asked.has(id)) throw new Error(`${where}: its id answers no frame the client sent`)
      const operation = id === undefined ? undefined : asked.get(id)
      // A frame answering a type no operation receives (an unknown type) is one the server sends unasked: an error.
      const candidates = operation !== undefined ? operation.replies : id !== undefined ? this.unasked : this.sent
      return { frame, value, message: this.one(where, value, candidates.filter((m) => m.validate(value) === true), candidates) }
    })
  }

  private one (where: string, value: unknown, matched: Message[], candidates: Message[]): string {
    if (matched.length !== 1) {
      const why = candidates.map((m) => `  ${m.ref}: ${this.errorsOf(m, value)}`).join('\n')
      throw new Error(`${where}: matches ${matched.length} messages (${matched.map((m) => m.ref).join(', ')}), not exactly one of:\n${why}`)
    }
    const message = matched[0] as Message
    const extra = undocumented(value, message.payload, '', this.document)
    if (extra.length > 0) throw new Error(`${where}: ${extra.join(', ')} not described by ${message.ref}`)
    return message.ref
  }

  private errorsOf (message: Message, value: unknown): string {
    message.validate(value)
    return this.ajv.errorsText(message.validate.errors)
  }

  private message (ref: string): Message {
    let message = this.cache.get(ref)
    if (message === undefined) {
      message = { ref, validate: this.ajv.compile({ $ref: `asyncapi${ref}/payload` }), payload: resolve(this.document, `${ref}/payload`) }
      this.cache.set(ref, message)
    }
    return message
  }
}

function unique<T> (items: T[]): T[] {
  return [...new Set(items)]
}

/** The `type` const of a message's envelope. */
function constOf (payload: JsonSchema): unknown {
  return ((payload.properties as JsonSchema | undefined)?.type as JsonSchema | undefined)?.const
}

function resolve (document: unknown, ref: string): JsonSchema {
  return ref.replace(/^#\//, '').split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce<any>((node, key) => node?.[key], document) as JsonSchema
}

/** The schema and every branch that applies along with it (allOf, anyOf, oneOf, then, else), refs resolved. */
function branches (schema: unknown, document: unknown): JsonSchema[] {
  if (schema === null || typeof schema !== 'object') return []
  const s = typeof (schema as JsonSchema).$ref === 'string' ? resolve(document, (schema as { $ref: string }).$ref) : schema as JsonSchema
  const nested = ['allOf', 'anyOf', 'oneOf'].flatMap((k) => (s[k] as unknown[] | undefined) ?? []).concat([s.then, s.else].filter((x) => x !== undefined))
  return [s, ...nested.flatMap((n) => branches(n, document))]
}

/**
 * The properties of `value` that its schema does not name: JSON Schema lets an object carry properties its schema
 * never mentions, so a validator alone would not see a field the server sends and the document forgets. Objects
 * whose schema names no properties at all, or allows more (`additionalProperties`, `patternProperties`), are open.
 */
export function undocumented (value: unknown, schema: unknown, path: string, document: unknown): string[] {
  const all = branches(schema, document)
  if (Array.isArray(value)) {
    const items = all.flatMap((s) => s.items !== undefined && !Array.isArray(s.items) ? [s.items] : [])
    return items.length === 0 ? [] : value.flatMap((v, i) => undocumented(v, { anyOf: items }, `${path}/${i}`, document))
  }
  if (value === null || typeof value !== 'object') return []
  const named = all.filter((s) => s.properties !== undefined)
  const more = all.flatMap((s) => s.additionalProperties !== undefined && s.additionalProperties !== false ? [s.additionalProperties] : [])
  const open = named.length === 0 || all.some((s) => s.patternProperties !== undefined)
  const out: string[] = []
  for (const [key, v] of Object.entries(value)) {
    const schemas = named.flatMap((s) => key in (s.properties as JsonSchema) ? [(s.properties as JsonSchema)[key]] : [])
    if (schemas.length > 0) out.push(...undocumented(v, { anyOf: schemas }, `${path}/${key}`, document))
    else if (more.length > 0) out.push(...undocumented(v, { anyOf: more }, `${path}/${key}`, document))
    else if (!open) out.push(`${path}/${key}`)
  }
  return out
}
