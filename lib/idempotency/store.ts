import { RT_ERR_OPTIONS } from '../errors.js'
import { checkKeys } from '../option-keys.js'

/**
 * Idempotency keys: a request that carries `key` runs its handler once per key, scope and window; a retry (the
 * same key, type and data, from any connection of the same user) is answered with the first outcome instead.
 *
 * An outcome is kept as a string: `r` + the reply's data as JSON, `e` + the error object `{ code, message,
 * details? }` as JSON, or `x` when the request ran but its reply was too large to keep.
 */
export type Claim =
  /** Nobody had the key: run the handler, then `complete()`. */
  | { kind: 'run' }
  /** The key's request finished: answer with this outcome. */
  | { kind: 'done', outcome: string }
  /** The key's request is still running; `settled` (memory store) resolves when it finishes, else poll. */
  | { kind: 'pending', settled?: Promise<void> }
  /** The key was used by a request of another type or data. */
  | { kind: 'conflict' }

/** Where the keys live: this instance's memory (the memory broker) or Redis (the Redis broker), shared by instances. */
export interface IdempotencyStore {
  /** Claims `key` for a request of fingerprint `fp` (its type and data), or says who has it. */
  claim: (scope: string, key: string, fp: string) => Promise<Claim>
  /** Records the outcome of a claimed request (again, when a late result replaces a `HANDLER_TIMEOUT`). */
  complete: (scope: string, key: string, fp: string, outcome: string) => Promise<void>
  close: () => void
}

/** The `idempotency` option. */
export interface IdempotencyOptions {
  /**
   * Milliseconds a key is remembered after its request ran. Retries come within a request's timeout (the client's
   * default is 10 s, counted from the call): the window only needs to outlast the longest of them.
   * @default 120000
   */
  window?: number
  /** Memory store: keys kept per user (per scope) at most; past it the oldest are forgotten. @default 1000 */
  maxKeys?: number
  /**
   * Memory store: bytes of outcomes and keys kept for all users at most; past it the oldest are forgotten.
   * @default 16777216
   */
  memoryBudget?: number
  /** Outcomes larger than this (bytes) are not kept: a retry gets `ALREADY_HANDLED`. @default 65536 */
  maxOutcomeBytes?: number
}

export interface ResolvedIdempotency {
  window: number
  maxKeys: number
  memoryBudget: number
  maxOutcomeBytes: number
  /** How long a claim stays pending without an outcome (an instance that died mid-handler frees it after this). */
  pendingTtl: number
}

export const IDEMPOTENCY_KEYS = ['window', 'maxKeys', 'memoryBudget', 'maxOutcomeBytes']

/** A key: 16 to 64 characters of [A-Za-z0-9_-] (a UUID fits), so that it is unguessable and safe in a Redis key. */
export const KEY_PATTERN = /^[A-Za-z0-9_-]{16,64}$/

/** The defaults, and the checks: every number a positive integer. `handlerTimeout` (ms, 0: none) bounds a pending claim. */
export function resolveIdempotency (options: IdempotencyOptions | false | undefined, handlerTimeout: number): ResolvedIdempotency | undefined {
  if (options === false) return undefined
  if (options !== undefined && (options === null || typeof options !== 'object')) throw new RT_ERR_OPTIONS(`idempotency: expected an object or false, got ${String(options)}`)
  checkKeys(options ?? {}, IDEMPOTENCY_KEYS, 'idempotency')
  const resolved = {
    window: options?.window ?? 120_000,
    maxKeys: options?.maxKeys ?? 1000,
    memoryBudget: options?.memoryBudget ?? 16 * 1024 * 1024,
    maxOutcomeBytes: options?.maxOutcomeBytes ?? 64 * 1024
  }
  for (const [name, value] of Object.entries(resolved)) {
    if (!(Number.isSafeInteger(value) && value > 0)) throw new RT_ERR_OPTIONS(`idempotency.${name}: expected a positive integer, got ${String(value)}`)
  }
  // A claim whose instance died mid-handler is freed once the handler could no longer be running.
  const pendingTtl = handlerTimeout > 0 ? Math.min(resolved.window, handlerTimeout + 5000) : resolved.window
  return { ...resolved, pendingTtl }
}
