// The properties behind the fuzzer, shared by `npm test` (10,000 runs each) and `npm run fuzz` (a million).
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import fc from 'fast-check'
import { decodeEnvelope, isDecodeFailure } from '../../lib/protocol/envelope.js'
import { ErrorCode } from '../../lib/index.js'
import type { TestClient } from '../helpers/client.js'
import type { StreamClient } from '../helpers/stream.js'
import { MAX_PAYLOAD } from './harness.js'

export const REGRESSIONS = new URL('./fuzz-regressions.json', import.meta.url)

export interface Regression { property: string, seed: number, path?: string, counterexample: string }

const isValidId = (id: unknown) => (typeof id === 'string' && id.length >= 1 && id.length <= 128) || (typeof id === 'number' && Number.isFinite(id))
const hasForbiddenKey = (text: string) => /"__proto__"\s*:|"constructor"\s*:\s*\{[^]*"prototype"\s*:/.test(text)

/** Text an attacker might send: anything, JSON of anything, envelopes of anything, and envelopes near the edges. */
export function frames (): fc.Arbitrary<string> {
  const id = fc.oneof(fc.constant(undefined), fc.string({ maxLength: 130 }), fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 2 }), fc.object({ maxDepth: 1 }))
  const type = fc.oneof(fc.constantFrom('echo', 'typed', 'join', 'joinAny', 'crash', 'refuse', 'ping', 'auth.refresh', 'reply', 'error', 'pong', '', '__proto__', 'constructor'), fc.string({ maxLength: 130 }))
  const typedData = fc.oneof(
    fc.record({ text: fc.string({ minLength: 95, maxLength: 105 }), n: fc.oneof(fc.integer(), fc.double(), fc.constant(2 ** 53), fc.constant(-0)) }),
    fc.record({ text: fc.oneof(fc.string({ maxLength: 5 }), fc.integer()), n: fc.oneof(fc.integer(), fc.string({ maxLength: 3 })) }, { requiredKeys: [] }),
    fc.jsonValue({ maxDepth: 3 })
  )
  // Room names as a client may choose them: empty, over the length limit, any unicode, the hash tag's characters.
  const roomName = fc.oneof(fc.string({ maxLength: 300, unit: 'grapheme' }), fc.constantFrom('', '}', '{}', '%', '%7D', 'a}b'), fc.string({ minLength: 250, maxLength: 260 }))
  // Idempotency keys: well-formed ones (16-64 of [A-Za-z0-9_-]), and every way to miss it.
  const key = fc.oneof(fc.stringMatching(/^[A-Za-z0-9_-]{16,64}$/), fc.string({ maxLength: 70 }), fc.integer(), fc.constant(null))
  const envelope = fc.record({ type, id, key, data: fc.oneof(typedData, roomName, fc.jsonValue({ maxDepth: 4 })) }, { requiredKeys: [] })
  const poisoned = fc.tuple(fc.constantFrom('__proto__', 'constructor', 'prototype'), fc.jsonValue({ maxDepth: 2 }))
    .map(([key, value]) => `{"type":"echo","id":1,"data":{"${key}":${key === 'constructor' ? '{"prototype":' + JSON.stringify(value) + '}' : JSON.stringify(value)}}}`)
  return fc.oneof(
    fc.string({ maxLength: 200, unit: 'grapheme' }),
    fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
    envelope.map((v) => JSON.stringify(v)),
    poisoned,
    envelope.map((v) => JSON.stringify(v)).chain((s) => fc.nat(s.length).map((cut) => s.slice(0, cut)))
  ).filter((s) => Buffer.byteLength(s) <= MAX_PAYLOAD)
}

/** The decoder never throws and classifies every frame as the protocol says. */
export const decoderProperty = fc.property(frames(), (text) => {
  const result = decodeEnvelope(text)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    assert.ok(isDecodeFailure(result) && result.error === ErrorCode.BAD_JSON)
    return
  }
  if (hasForbiddenKey(text) && isDecodeFailure(result) && result.error === ErrorCode.BAD_JSON) return
  const obj = parsed as Record<string, unknown>
  const shapeOk = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
  if (!shapeOk) { assert.ok(isDecodeFailure(result) && result.error === ErrorCode.BAD_ENVELOPE); return }
  const idOk = obj.id === undefined || isValidId(obj.id)
  const typeOk = typeof obj.type === 'string' && obj.type.length >= 1 && obj.type.length <= 128
  const keyOk = obj.key === undefined || (typeof obj.key === 'string' && /^[A-Za-z0-9_-]{16,64}$/.test(obj.key))
  if (!idOk || !typeOk || !keyOk) {
    assert.ok(isDecodeFailure(result) && result.error === ErrorCode.BAD_ENVELOPE)
    assert.equal(result.id, idOk ? obj.id : undefined)
    return
  }
  assert.ok(!isDecodeFailure(result))
  assert.deepEqual(result, { type: obj.type, data: obj.data, id: obj.id, key: obj.key })
})

const KNOWN_CODES = new Set<string>([...Object.values(ErrorCode), 'NOPE'])

/**
 * Through a real connection: each frame, followed by a sentinel request, gets at most one well-formed answer before
 * the sentinel's reply, with the frame's id whenever it had a valid one; the connection stays open. The sentinel is
 * an app message, queued behind the frame's handler: a ping (the control lane) would be answered ahead of a keyed
 * request's reply, which leaves only once its key is claimed.
 */
export function dispatcherProperty (client: TestClient): fc.IAsyncPropertyWithHooks<[string]> {
  let sentinel = 0
  return fc.asyncProperty(frames(), async (text) => {
    const id = `sentinel-${++sentinel}`
    client.ws.send(text)
    client.sendJson({ type: 'echo', data: id, id })
    const answers = []
    for (;;) {
      const message = await client.nextMessage(5000)
      if (message.type === 'reply' && message.id === id) break
      answers.push(message)
    }
    assert.ok(answers.length <= 1, `one answer at most, got ${JSON.stringify(answers)}`)
    const answer = answers[0]
    if (answer !== undefined && answer.type === 'error') {
      assert.ok(KNOWN_CODES.has(answer.error.code), answer.error.code)
      assert.equal(typeof answer.error.message, 'string')
    } else if (answer !== undefined) {
      assert.ok(['reply', 'pong'].includes(answer.type), JSON.stringify(answer))
    }
    let sentId: unknown
    try { sentId = (JSON.parse(text) as { id?: unknown } | null)?.id } catch {}
    if (answer !== undefined && 'id' in answer) assert.equal(answer.id, sentId)
    assert.equal(client.ws.readyState, client.ws.OPEN)
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
  })
}

/**
 * The fallback's batches: 1 to 5 arbitrary frames and a sentinel echo in one POST. The batch is taken (200, its
 * seq acknowledged); the stream carries, before the sentinel's reply, at most one answer per frame, each a known
 * error or a reply/pong with the frame's id, as over a WebSocket.
 */
export function batchProperty (stream: StreamClient, headers: Record<string, string>): fc.IAsyncPropertyWithHooks<[string[]]> {
  let sentinel = 0
  return fc.asyncProperty(fc.array(frames(), { minLength: 1, maxLength: 5 }), async (texts) => {
    const id = `sentinel-${++sentinel}`
    const answer = await stream.send([...texts, JSON.stringify({ type: 'echo', data: id, id })], { headers })
    assert.equal(answer.status, 200, JSON.stringify(answer.body))
    const answers = []
    for (;;) {
      const message = await stream.nextMessage(5000)
      if (message.type === 'reply' && message.id === id) break
      answers.push(message)
    }
    assert.ok(answers.length <= texts.length, `one answer a frame at most, got ${JSON.stringify(answers)}`)
    for (const answer of answers) {
      if (answer.type === 'error') assert.ok(KNOWN_CODES.has(answer.error.code), answer.error.code)
      else assert.ok(['reply', 'pong'].includes(answer.type), JSON.stringify(answer))
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
  })
}

/** Refusal codes a POST may get for a body that is not a batch of this session. */
const BODY_CODES = new Set(['BAD_BATCH', 'BATCH_TOO_LARGE', 'UNKNOWN_SESSION', 'SEQ_GAP', 'FST_ERR_CTP_INVALID_JSON_BODY', 'FST_ERR_CTP_EMPTY_JSON_BODY'])

/**
 * Arbitrary POST bodies, and batches shaped almost right (this session or another, any seq, frames of any kind):
 * each gets a 4xx with a known code, or, for a well-formed batch of the next seq, 200; nothing else ever reaches a
 * handler: the stream stays silent but for those batches' answers.
 */
export function bodyProperty (stream: StreamClient, headers: Record<string, string>): fc.IAsyncPropertyWithHooks<[unknown]> {
  const session = fc.oneof(fc.constant(stream.session), fc.string({ maxLength: 260 }), fc.constant(stream.session.slice(0, -1) + 'A'), fc.integer())
  const seq = fc.oneof(fc.integer({ min: -2, max: 3 }), fc.double(), fc.string({ maxLength: 3 }), fc.constant(null))
  const frame = fc.oneof(fc.string({ maxLength: 40 }), fc.record({ binary: fc.string({ maxLength: 20 }) }), fc.jsonValue({ maxDepth: 2 }))
  const body = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.string({ maxLength: 80 }),
    fc.record({ session, seq, frames: fc.oneof(fc.array(frame, { maxLength: 70 }), fc.jsonValue({ maxDepth: 1 })) }, { requiredKeys: [] })
  )
  return fc.asyncProperty(body, async (value) => {
    const before = stream.received.length
    const answer = await stream.send([], { body: typeof value === 'string' ? value : JSON.stringify(value) ?? 'null', headers })
    if (answer.status === 200) {
      // Only a well-formed batch of the next seq (or one already taken) of this session is taken.
      const batch = value as { session: string, seq: number, frames: unknown[] }
      assert.equal(batch.session, stream.session)
      assert.equal(answer.body.ack, batch.seq)
      stream.seq = Math.max(stream.seq, batch.seq)
      // Its frames' answers come down the stream: let them arrive before the next body is judged.
      await new Promise((resolve) => setTimeout(resolve, 100))
      return
    }
    assert.ok(answer.status >= 400 && answer.status < 500, `${answer.status} ${JSON.stringify(answer.body)}`)
    assert.ok(BODY_CODES.has(answer.body.code), JSON.stringify(answer.body))
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(stream.received.length, before, 'a refused body reached no handler')
  })
}

export async function readRegressions (): Promise<Regression[]> {
  return JSON.parse(await readFile(REGRESSIONS, 'utf8')) as Regression[]
}

/** Runs a property; a failure is kept in fuzz-regressions.json, so `npm test` replays it from then on. */
export async function runKept (name: string, property: fc.IRawProperty<any, boolean>, numRuns: number, seed?: number): Promise<void> {
  const details = await fc.check(property as fc.IRawProperty<unknown, boolean>, { numRuns, seed }) as fc.RunDetails<unknown>
  if (!details.failed) return
  const kept = await readRegressions()
  kept.push({ property: name, seed: details.seed, path: details.counterexamplePath ?? undefined, counterexample: JSON.stringify(details.counterexample) })
  await writeFile(REGRESSIONS, JSON.stringify(kept, null, 2) + '\n')
  throw new Error(`${name} failed (seed ${details.seed}, kept in ${REGRESSIONS.pathname}): ${JSON.stringify(details.counterexample)}\n${String(details.errorInstance)}`)
}
