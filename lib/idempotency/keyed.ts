import { createHash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Claim, IdempotencyStore, ResolvedIdempotency } from './store.js'

/** How long a retry waits for the first request of its key to finish before it is told `REQUEST_IN_PROGRESS`. */
const WAIT_MS = 5000
/** A store write that failed is tried this many times (an outcome not written leaves the key pending until `pendingTtl`). */
const WRITES = 3

/** The store and its options, once per instance. */
export interface Idempotency {
  store: IdempotencyStore
  options: ResolvedIdempotency
  log: FastifyBaseLogger
  /** Until when a store failure is logged at debug only: one warning per `QUIET_MS`, not one per refused request. */
  quietUntil?: number
}

/** An outage of the store refuses every keyed request: it is told once in this long, the rest at debug. */
const QUIET_MS = 10_000

/** What a keyed request is, for its store entry: the scope its key lives in and its fingerprint. */
export interface KeyedRequest {
  /** The route and the user (anonymous connections of a route share one scope: keys are 16+ random characters). */
  scope: string
  key: string
  /** The type and the data: the same key with another one is `IDEMPOTENCY_KEY_REUSED`. */
  fp: string
}

export function keyedRequest (path: string, userId: string | undefined, key: string, type: string, data: unknown): KeyedRequest {
  const fp = createHash('sha256').update(type).update('\0').update(JSON.stringify(data ?? null)).digest('base64url').slice(0, 22)
  return { scope: JSON.stringify(userId === undefined ? [path] : [path, userId]), key, fp }
}

/** What the claim decided: run the handler, answer with a stored outcome, or refuse with an error code. */
export type Decision =
  | { kind: 'run' }
  | { kind: 'replay', outcome: string }
  | { kind: 'refuse', code: 'REQUEST_IN_PROGRESS' | 'IDEMPOTENCY_KEY_REUSED' | 'STORE_UNAVAILABLE', message: string }

/** Waits `ms`, or less when `wake` settles first; the timer goes with the wait (nothing holds an app's close). */
async function sleep (ms: number, wake?: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([new Promise((resolve) => { timer = setTimeout(resolve, ms) }), wake])
  clearTimeout(timer)
}

/**
 * Claims the request's key. A key whose first request still runs is waited for (woken by the memory store,
 * polled in Redis) up to `WAIT_MS`; `stillWanted` stops the wait when the asking connection is gone.
 */
export async function decide (idem: Idempotency, request: KeyedRequest, stillWanted: () => boolean): Promise<Decision> {
  const until = performance.now() + WAIT_MS
  let delay = 25
  for (;;) {
    let claim: Claim
    try {
      claim = await idem.store.claim(request.scope, request.key, request.fp)
    } catch (err) {
      const now = performance.now()
      if (now >= (idem.quietUntil ?? 0)) {
        idem.quietUntil = now + QUIET_MS
        idem.log.warn({ err }, 'realtime: the idempotency store did not answer; keyed requests are refused (STORE_UNAVAILABLE), nothing runs (told once per 10 s)')
      } else {
        idem.log.debug({ err }, 'realtime: the idempotency store did not answer; the request was refused')
      }
      return { kind: 'refuse', code: 'STORE_UNAVAILABLE', message: 'the server could not check the request\'s key; nothing ran: retry with the same key' }
    }
    switch (claim.kind) {
      case 'run': return claim
      case 'done': return { kind: 'replay', outcome: claim.outcome }
      case 'conflict': return { kind: 'refuse', code: 'IDEMPOTENCY_KEY_REUSED', message: 'this key was used by a request of another type or data' }
    }
    const left = until - performance.now()
    if (left <= 0 || !stillWanted()) {
      return { kind: 'refuse', code: 'REQUEST_IN_PROGRESS', message: 'the first request with this key is still running: retry with the same key later' }
    }
    await (claim.settled !== undefined ? sleep(left, claim.settled) : sleep(Math.min(delay, left)))
    delay = Math.min(delay * 2, 400)
  }
}

/**
 * Writes the outcome of a request that ran (again, when the late result of a timed-out handler replaces its
 * `HANDLER_TIMEOUT`). Never rejects: a write that keeps failing leaves the key pending until `pendingTtl`, after
 * which a retry runs the handler again (logged).
 */
export function record (idem: Idempotency, request: KeyedRequest, outcome: string): void {
  const kept = outcome.length <= idem.options.maxOutcomeBytes ? outcome : 'x'
  const attempt = async (): Promise<void> => {
    for (let i = 1; ; i++) {
      try {
        await idem.store.complete(request.scope, request.key, request.fp, kept)
        return
      } catch (err) {
        if (i === WRITES) {
          idem.log.warn({ err }, 'realtime: the outcome of a keyed request could not be stored; a retry after the pending ttl runs it again')
          return
        }
        await sleep(100 * i)
      }
    }
  }
  attempt().catch(() => {})
}
