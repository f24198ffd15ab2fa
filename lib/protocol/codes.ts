/**
 * The whole wire vocabulary: error codes sent in error envelopes, close codes, and the codes of refused
 * handshakes. Every code is defined here and nowhere else; `test/codes.test.ts` keeps the reference's tables (docs/14-reference.md) in step.
 */

/** Codes of the error envelope `{ type: 'error', error: { code, message } }`, with what a client should do. */
export const ErrorCode = {
  /** The frame was not parseable JSON (or carried a `__proto__` / `constructor.prototype` key). Fix the sender. */
  BAD_JSON: 'BAD_JSON',
  /** Not an object, no string `type`, or an `id` that is neither a short string nor a finite number. */
  BAD_ENVELOPE: 'BAD_ENVELOPE',
  /** No handler for this `type` on this route. */
  UNKNOWN_TYPE: 'UNKNOWN_TYPE',
  /** `data` did not match the type's schema; `details` is a list of `{ path, message }`. */
  VALIDATION_FAILED: 'VALIDATION_FAILED',
  /** Over `limits.rate` (or too many messages waiting for their handler); the message was not handled. */
  RATE_LIMITED: 'RATE_LIMITED',
  /** A binary frame on a route without a `binary` handler. */
  BINARY_NOT_ACCEPTED: 'BINARY_NOT_ACCEPTED',
  /** `auth.refresh` with a bad token, or one of another user; the old expiry stands. */
  INVALID_TOKEN: 'INVALID_TOKEN',
  /** `auth.refresh` with a token that has already expired; the old expiry stands. */
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
  /** `conn.join` of a room name that is empty or longer than `limits.maxRoomNameLength`. Do not retry as is. */
  INVALID_ROOM: 'INVALID_ROOM',
  /** `conn.join` past `limits.maxRoomsPerConnection`: leave a room first. */
  TOO_MANY_ROOMS: 'TOO_MANY_ROOMS',
  /** `conn.presence(room).update()` for a room the connection is not a member of: join it first. */
  NOT_IN_ROOM: 'NOT_IN_ROOM',
  /** A presence room already has `presence.maxMembers` members: this key is not listed (room delivery still works). */
  PRESENCE_FULL: 'PRESENCE_FULL',
  /** The handler failed unexpectedly; the server logged the details, the client gets none. */
  INTERNAL: 'INTERNAL',
  /** An async handler did not settle within `limits.handlerTimeout`; it may still complete: retry with the same key to learn its outcome. */
  HANDLER_TIMEOUT: 'HANDLER_TIMEOUT',
  /** The first request with this idempotency key is still running: retry with the same key after a short delay. */
  REQUEST_IN_PROGRESS: 'REQUEST_IN_PROGRESS',
  /** This idempotency key was used by a request of another type or data: a bug in the caller; do not retry. */
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  /** The store of idempotency keys (Redis) did not answer; nothing ran: retry with the same key later. */
  STORE_UNAVAILABLE: 'STORE_UNAVAILABLE',
  /** A retried request that ran already, whose reply was over `idempotency.maxOutcomeBytes` to keep. Do not retry. */
  ALREADY_HANDLED: 'ALREADY_HANDLED'
} as const
export type ErrorCodeName = typeof ErrorCode[keyof typeof ErrorCode]

/** WebSocket close codes the server uses. A dead peer is terminated without a close frame (the client sees 1006). */
export const CloseCode = {
  /** Normal closure. */
  NORMAL: 1000,
  /** The server is shutting down; reconnect (to another instance) with backoff. */
  GOING_AWAY: 1001,
  /** A frame that breaks the WebSocket protocol (ws closes with it). */
  PROTOCOL_ERROR: 1002,
  /** A text frame that is not valid UTF-8 (ws closes with it). */
  INVALID_PAYLOAD: 1007,
  /** Policy violation: too many rate-limited or invalid messages in a row. Do not reconnect blindly. */
  POLICY_VIOLATION: 1008,
  /** A message larger than `limits.maxPayload` (ws closes with it). */
  MESSAGE_TOO_BIG: 1009,
  /** Internal error, for example the route's `onOpen` failed. Reconnect with backoff. */
  INTERNAL_ERROR: 1011,
  /** The session's token expired; reconnect with a fresh token. */
  SESSION_EXPIRED: 4401,
  /** The client read too slowly and its send buffer passed `limits.maxBufferedBytes`. */
  SLOW_CONSUMER: 4408
} as const
export type CloseCodeNumber = typeof CloseCode[keyof typeof CloseCode]

/** Close codes counted under their own number: the plugin's, and those RFC 6455 defines (1000-1015). */
const COUNTED_CLOSE_CODES: ReadonlySet<number> = new Set([...Object.values(CloseCode), ...Array.from({ length: 16 }, (_, i) => 1000 + i)])

/**
 * A close code as a counter key and metric label: a client chooses the code of a close it starts (any of 1000-4999),
 * so anything outside the fixed set counts as `other` and no client can make up series.
 */
export function closeLabel (code: number): string {
  return COUNTED_CLOSE_CODES.has(code) ? String(code) : 'other'
}

/**
 * The close code ws sent for one of its protocol errors, so the server's own records show it: ws stops reading
 * after such an error, so the peer's echo of the code never arrives. ws keeps the code on the error under a
 * symbol described 'status-code' (see its `createError`).
 */
export function closeCodeOfSocketError (err: Error & { code?: string }): number | undefined {
  if (typeof err.code !== 'string' || !err.code.startsWith('WS_ERR_')) return undefined
  const key = Object.getOwnPropertySymbols(err).find((s) => s.description === 'status-code')
  const code = key === undefined ? undefined : (err as unknown as Record<symbol, unknown>)[key]
  return typeof code === 'number' ? code : CloseCode.PROTOCOL_ERROR
}

/** Reasons sent with the server's own close frames. */
export const CloseReason = {
  [CloseCode.GOING_AWAY]: 'server shutting down',
  [CloseCode.POLICY_VIOLATION]: 'too many rejected messages',
  [CloseCode.INTERNAL_ERROR]: 'internal error',
  [CloseCode.SESSION_EXPIRED]: 'session expired',
  [CloseCode.SLOW_CONSUMER]: 'slow consumer'
} as const

/** Refusals before the upgrade: a plain HTTP response with the JSON body `{ statusCode, code, message }`. */
export const HandshakeCode = {
  FORBIDDEN_ORIGIN: { statusCode: 403, message: 'origin not allowed by the server\'s `origins` option' },
  MISSING_TOKEN: { statusCode: 401, message: 'no session token' },
  INVALID_TOKEN: { statusCode: 401, message: 'invalid session token' },
  TOKEN_EXPIRED: { statusCode: 401, message: 'session token expired' },
  TOO_MANY_CONNECTIONS: { statusCode: 429, message: 'too many connections for this user' },
  TOO_MANY_FROM_ADDRESS: { statusCode: 429, message: 'too many connections from this address' },
  SERVER_FULL: { statusCode: 503, message: 'server is at its connection limit' },
  SHUTTING_DOWN: { statusCode: 503, message: 'server is shutting down' },
  UPGRADE_REQUIRED: { statusCode: 426, message: 'this endpoint speaks WebSocket; send an upgrade request' },
  BODY_NOT_ALLOWED: { statusCode: 400, message: 'an upgrade request carries no body' },
  UNSUPPORTED_PROTOCOL: { statusCode: 400, message: 'none of the offered subprotocols is one this route speaks' }
} as const
export type HandshakeCodeName = keyof typeof HandshakeCode

/**
 * Refusals of a POSTed batch of the HTTP-streaming fallback (docs/15-fallback.md), with the JSON body
 * `{ statusCode, code, message }`; nothing of a refused batch reaches a handler. (Its authentication and Origin are
 * refused with the handshake's codes.)
 */
export const BatchCode = {
  BAD_BATCH: { statusCode: 400, message: 'the body is not { session, seq, frames }' },
  BATCH_TOO_LARGE: { statusCode: 413, message: 'too many frames, or a frame over limits.maxPayload' },
  FORBIDDEN_SESSION: { statusCode: 403, message: 'the session belongs to another user or route' },
  UNKNOWN_SESSION: { statusCode: 404, message: 'no such open session: it ended or never existed' },
  SEQ_GAP: { statusCode: 409, message: 'a batch came before the one it follows; send them one at a time' },
  SESSION_UNREACHABLE: { statusCode: 503, message: 'the instance holding the session did not answer; retry the same batch' }
} as const
export type BatchCodeName = keyof typeof BatchCode

/** Message types the protocol itself uses; a route may not declare them. */
export const RESERVED_TYPES: ReadonlySet<string> = new Set(['reply', 'error', 'ping', 'pong', 'auth.refresh', 'rt.resume', 'rt.position', 'rt.presence', 'rt.presence.diff', 'rt.presence.left'])

/**
 * Throw it from a handler to send the client an error envelope with your own code: a business error, logged at
 * most at info level.
 */
export class RealtimeError extends Error {
  readonly code: string
  readonly details: unknown

  constructor (code: string, message: string, details?: unknown) {
    super(message)
    this.name = 'RealtimeError'
    this.code = code
    this.details = details
  }
}

/** An error refusing a handshake; `code` names the HTTP status and body. */
export class HandshakeError extends Error {
  readonly code: HandshakeCodeName
  readonly statusCode: number

  constructor (code: HandshakeCodeName, message?: string) {
    super(message ?? HandshakeCode[code].message)
    this.name = 'HandshakeError'
    this.code = code
    this.statusCode = HandshakeCode[code].statusCode
  }
}
