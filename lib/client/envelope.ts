import { RealtimeClientError } from './errors.js'
import { isOffset } from './positions.js'

/** What a frame from the server means to the client. */
export type Incoming =
  | { kind: 'pong' }
  | { kind: 'reply', id: string, data: unknown }
  | { kind: 'error', id: string | undefined, error: RealtimeClientError }
  | { kind: 'event', type: string, data: unknown, room?: string, offset?: number }
  | { kind: 'binary', data: unknown }

interface Envelope { type?: unknown, id?: unknown, data?: unknown, room?: unknown, offset?: unknown, error?: { code?: unknown, message?: unknown, details?: unknown } }

/** The server's error envelope as an error: its code, message and details. */
function errorOf (error: Envelope['error']): RealtimeClientError {
  const code = typeof error?.code === 'string' ? error.code : 'ERROR'
  return new RealtimeClientError(code, typeof error?.message === 'string' ? error.message : code, { details: error?.details })
}

/**
 * Decodes a frame from the server (`{ type, data }`, `{ type: 'reply', id, data }`, `{ type: 'error', id?, error }`,
 * `{ type: 'pong' }`); undefined for anything else, which the client ignores. A reply's missing data is null.
 */
export function decodeIncoming (raw: unknown): Incoming | undefined {
  if (typeof raw !== 'string') return { kind: 'binary', data: raw }
  let message: Envelope
  try {
    message = JSON.parse(raw)
  } catch {
    return undefined
  }
  if (typeof message !== 'object' || message === null || typeof message.type !== 'string') return undefined
  const id = typeof message.id === 'string' || typeof message.id === 'number' ? String(message.id) : undefined
  switch (message.type) {
    case 'pong': return { kind: 'pong' }
    case 'reply': return id === undefined ? undefined : { kind: 'reply', id, data: message.data ?? null }
    case 'error': return { kind: 'error', id, error: errorOf(message.error) }
    default:
      // A history room's event carries its room and offset.
      // An offset that is no integer in [0, 2^53 - 1] (1e300, -1, 1.5, "7") is not one: the event is delivered unnumbered.
      return typeof message.room === 'string' && isOffset(message.offset)
        ? { kind: 'event', type: message.type, data: message.data, room: message.room, offset: message.offset }
        : { kind: 'event', type: message.type, data: message.data }
  }
}

/** A frame for the server: `{ type, data, id?, key? }`. */
export function encodeOutgoing (type: string, data: unknown, id?: string, key?: string): string {
  if (id === undefined) return JSON.stringify({ type, data })
  return JSON.stringify(key === undefined ? { type, data, id } : { type, data, id, key })
}

/** What an idempotency key may be (the server's rule). */
export const KEY_PATTERN = /^[A-Za-z0-9_-]{16,64}$/

/** A fresh idempotency key: a random UUID (36 characters), or 32 random characters where randomUUID is missing. */
export function newKey (): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string, getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  if (typeof crypto?.randomUUID === 'function') return crypto.randomUUID()
  const bytes = new Uint8Array(16)
  if (typeof crypto?.getRandomValues === 'function') crypto.getRandomValues(bytes)
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}
