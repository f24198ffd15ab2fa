/** A store call that did not answer within its bound (a stalled Redis): counted as a failure and retried later. */
export class DeadlineError extends Error {
  constructor (what: string, ms: number) {
    super(`${what}: no answer within ${ms} ms`)
    this.name = 'DeadlineError'
  }
}

/**
 * `promise`, or a rejection with `DeadlineError` after `ms`: every store call is bounded, so nothing an instance
 * awaits (a join, a shutdown) waits for ever on a Redis that keeps its connection open and stops answering. The
 * call itself may still complete later: callers only use it for work that is idempotent or checked again.
 */
export async function withDeadline<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((resolve, reject) => {
    timer = setTimeout(() => { reject(new DeadlineError(what, ms)) }, ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Waits for `promise` at most `ms`, whatever it does (its rejection is ignored). Resolves true when it settled. */
export async function settleWithin (promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<boolean>((resolve) => { timer = setTimeout(resolve, ms, false) })
  try {
    return await Promise.race([promise.then(() => true, () => true), late])
  } finally {
    clearTimeout(timer)
  }
}
