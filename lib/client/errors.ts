/** Codes the client itself gives (the server's own error and refusal codes pass through as they are). */
export const ClientErrorCode = {
  /** No reply within the request's timeout. */
  TIMEOUT: 'TIMEOUT',
  /** The connection dropped while the request was in flight: it may have run (retry it with `err.key`, if it had one). */
  DISCONNECTED: 'DISCONNECTED',
  /** `client.close()` was called, a close code the client does not reconnect after, or `maxAttempts` ran out. */
  CLOSED: 'CLOSED',
  /** More than `maxQueue` messages wait for the connection. */
  QUEUE_FULL: 'QUEUE_FULL',
  /** `refreshToken()` without a token and without `getToken`. */
  NO_TOKEN: 'NO_TOKEN',
  /** `onReconnect` threw or rejected (the queue is sent anyway). */
  RECONNECT_HOOK_FAILED: 'RECONNECT_HOOK_FAILED',
  /** `getToken` threw, rejected, or did not settle within `connectTimeout`: a failed attempt, retried with backoff. */
  GET_TOKEN_FAILED: 'GET_TOKEN_FAILED',
  /** A handshake refusal whose answer carried no code of its own. */
  REFUSED: 'REFUSED'
} as const
export type ClientErrorCodeName = typeof ClientErrorCode[keyof typeof ClientErrorCode]

/**
 * An error of the realtime client: a server error envelope (its `code`, `message` and `details`), a refused
 * handshake (`code` from the server's JSON answer, `status` its HTTP status), a close the client will not
 * reconnect after (`closeCode`), or one of the client's own `ClientErrorCode`s.
 */
export class RealtimeClientError extends Error {
  /** The server's code (`VALIDATION_FAILED`, `INVALID_TOKEN`, your own…) or a `ClientErrorCode`. */
  readonly code: string
  /** The `details` of the server's error envelope (for `VALIDATION_FAILED`: `[{ path, message }]`). */
  readonly details: unknown
  /** The HTTP status of a refused handshake. */
  readonly status: number | undefined
  /** The close code that ended the connection, when one did. */
  readonly closeCode: number | undefined
  /** The idempotency key of the request this rejects: `request(type, data, { key: err.key })` retries it safely. */
  readonly key: string | undefined

  constructor (code: string, message: string, extra: { details?: unknown, status?: number, closeCode?: number, key?: string } = {}) {
    super(message)
    this.name = 'RealtimeClientError'
    this.code = code
    this.details = extra.details
    this.status = extra.status
    this.closeCode = extra.closeCode
    this.key = extra.key
  }
}
