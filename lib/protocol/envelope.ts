import sjson from 'secure-json-parse'
import { ErrorCode } from './codes.js'
import { KEY_PATTERN } from '../idempotency/store.js'

/** A request id as the client sent it: a short string or a finite number. */
export type EnvelopeId = string | number

/** A client envelope that passed the shape check. */
export interface ClientEnvelope {
  type: string
  data: unknown
  id: EnvelopeId | undefined
  /** The idempotency key (16-64 characters of [A-Za-z0-9_-]): a retry with it is answered from the first outcome. */
  key: string | undefined
}

/** Why a frame is not an envelope, with the id when it could be read, so the error can carry it. */
export interface DecodeFailure {
  error: typeof ErrorCode.BAD_JSON | typeof ErrorCode.BAD_ENVELOPE
  message: string
  id: EnvelopeId | undefined
}

const MAX_TYPE_LENGTH = 128
const MAX_ID_LENGTH = 128
const PARSE_OPTIONS = { protoAction: 'error', constructorAction: 'error' } as const

function isValidId (id: unknown): id is EnvelopeId {
  return (typeof id === 'string' && id.length > 0 && id.length <= MAX_ID_LENGTH) ||
    (typeof id === 'number' && Number.isFinite(id))
}

/**
 * Decodes a text frame into an envelope. Never throws: a failure is returned, so that the caller answers with an
 * error envelope and the connection lives on. `__proto__` and `constructor.prototype` keys are refused.
 */
export function decodeEnvelope (text: string): ClientEnvelope | DecodeFailure {
  let value: unknown
  try {
    value = sjson.parse(text, undefined, PARSE_OPTIONS)
  } catch (err) {
    const forbidden = err instanceof SyntaxError && /prototype/.test(err.message)
    return { error: ErrorCode.BAD_JSON, message: forbidden ? 'forbidden __proto__ or constructor.prototype key' : 'frame is not valid JSON', id: undefined }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { error: ErrorCode.BAD_ENVELOPE, message: 'an envelope is a JSON object { type, data?, id? }', id: undefined }
  }
  const { type, data, id, key } = value as Record<string, unknown>
  const readableId = isValidId(id) ? id : undefined
  if (id !== undefined && readableId === undefined) {
    return { error: ErrorCode.BAD_ENVELOPE, message: `id must be a string of 1 to ${MAX_ID_LENGTH} characters or a finite number`, id: undefined }
  }
  if (typeof type !== 'string' || type.length === 0 || type.length > MAX_TYPE_LENGTH) {
    return { error: ErrorCode.BAD_ENVELOPE, message: `type must be a string of 1 to ${MAX_TYPE_LENGTH} characters`, id: readableId }
  }
  if (key !== undefined && (typeof key !== 'string' || !KEY_PATTERN.test(key))) {
    return { error: ErrorCode.BAD_ENVELOPE, message: 'key must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -', id: readableId }
  }
  return { type, data, id: readableId, key }
}

export function isDecodeFailure (result: ClientEnvelope | DecodeFailure): result is DecodeFailure {
  return 'error' in result
}

/** `{ type, data }`: an event. `data` that is undefined becomes null so the envelope always has it. */
export function encodeEvent (type: string, data: unknown): string {
  return JSON.stringify({ type, data: data === undefined ? null : data })
}

/**
 * `{"type":"reply","id":…,"data":…}`, spelled out around the data's own JSON (one per answered message: no wrapper
 * object to build and walk). Data that JSON has no text for (undefined, a function) is `null`, so a reply always has
 * its `data`; data JSON cannot encode (a BigInt, a cycle) throws, as JSON.stringify does.
 */
export function encodeReply (id: EnvelopeId, data: unknown): string {
  return `{"type":"reply","id":${typeof id === 'number' ? String(id) : JSON.stringify(id)},"data":${JSON.stringify(data) ?? 'null'}}`
}

export function encodeError (id: EnvelopeId | undefined, code: string, message: string, details?: unknown): string {
  const error = details === undefined ? { code, message } : { code, message, details }
  return JSON.stringify(id === undefined ? { type: 'error', error } : { type: 'error', id, error })
}

export function encodePong (id: EnvelopeId | undefined): string {
  return id === undefined ? '{"type":"pong"}' : JSON.stringify({ type: 'pong', id })
}

const TYPE_HEAD = '{"type":"'
/** How far into a frame its type is looked for: further than any type a route declares. */
const TYPE_SCAN = 1024

/**
 * The type of an encoded envelope, for metrics: every envelope the plugin encodes starts with `{"type":"`, so the
 * type is read there without parsing the rest (a history replay, a fan-out from an older instance). Empty when the
 * frame does not start so (an app's own frame), which metrics count as `unknown`.
 */
export function envelopeType (frame: Buffer | string): string {
  const text = typeof frame === 'string' ? frame.slice(0, TYPE_SCAN) : frame.toString('utf8', 0, TYPE_SCAN)
  if (!text.startsWith(TYPE_HEAD)) return ''
  let end = text.indexOf('"', TYPE_HEAD.length)
  // A quote after an odd run of backslashes is inside the string.
  while (end !== -1 && oddBackslashesBefore(text, end)) end = text.indexOf('"', end + 1)
  if (end === -1) return ''
  const body = text.slice(TYPE_HEAD.length, end)
  if (!body.includes('\\')) return body
  try {
    return String(JSON.parse(`"${body}"`))
  } catch {
    return ''
  }
}

function oddBackslashesBefore (text: string, at: number): boolean {
  let i = at
  while (i > 0 && text.charCodeAt(i - 1) === 0x5c) i--
  return (at - i) % 2 === 1
}
