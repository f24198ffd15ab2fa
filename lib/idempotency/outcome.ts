import type { EnvelopeId } from '../protocol/envelope.js'

/** A reply's outcome: its data, already JSON (the reply frame's own encoding). */
export function replyOutcome (dataJson: string): string {
  return `r${dataJson}`
}

/** An error's outcome: `{ code, message, details? }`. */
export function errorOutcome (code: string, message: string, details?: unknown): string {
  return `e${JSON.stringify(details === undefined ? { code, message } : { code, message, details })}`
}

/** The request ran, its reply was too large to keep. */
export const UNKEPT_OUTCOME = 'x'

/** What a retry gets when the first reply was not kept. */
const ALREADY_HANDLED = JSON.stringify({ code: 'ALREADY_HANDLED', message: 'this request ran already; its reply was too large to keep' })

/**
 * The frame that answers a retry with id `id`: the first outcome, marked `replayed`. The stored JSON is spliced in
 * as it is, never parsed again.
 */
export function replayFrame (outcome: string, id: EnvelopeId): string {
  const idJson = JSON.stringify(id)
  const body = outcome.slice(1)
  switch (outcome[0]) {
    case 'r': return `{"type":"reply","id":${idJson},"data":${body},"replayed":true}`
    case 'e': return `{"type":"error","id":${idJson},"error":${body},"replayed":true}`
    default: return `{"type":"error","id":${idJson},"error":${ALREADY_HANDLED},"replayed":true}`
  }
}
