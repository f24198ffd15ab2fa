// The HTTP-streaming fallback's part of the bad-input corpus: each case is the exact request and the exact answer,
// and the harness's invariant (registry and handles back, the canary fine, no token in a log) is checked after each.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { waitFor } from '../helpers/client.js'
import { rawPost, rawStream, type RawStream } from '../helpers/stream.js'
import { ALLOWED_ORIGIN, MAX_PAYLOAD, startHarness, type Harness } from './harness.js'

let harness: Harness
before(async () => { harness = await startHarness({ fallback: true }) })
after(async () => { await harness.close() })

const now = () => Math.floor(Date.now() / 1000)
const bearer = (sub: string, claims: Record<string, unknown> = {}) => ({ authorization: `Bearer ${harness.token(sub, claims)}` })
const open = async (headers: Record<string, string>, path?: string): Promise<RawStream> => await rawStream(harness.h.port, headers, path)
const post = async (body: unknown, headers: Record<string, string> = {}) => await rawPost(harness.h.port, body, headers)
/** The session id of a stream's rt.open. */
const sessionOf = (stream: RawStream): string => JSON.parse(stream.events[0]?.data ?? '{}').session
const echo = (n: number) => JSON.stringify({ type: 'echo', id: n, data: n })

async function refused (headers: Record<string, string>, status: number, code: string, path?: string): Promise<RawStream> {
  const stream = await open(headers, path)
  assert.equal(stream.status, status, stream.body)
  assert.equal(JSON.parse(stream.body).code, code)
  return stream
}

/** A stream of user `sub`, the body of each case, then the stream closed and gone. */
async function withStream (sub: string, run: (stream: RawStream, session: string, auth: Record<string, string>) => Promise<void>): Promise<void> {
  const auth = bearer(sub)
  const stream = await open(auth)
  assert.equal(stream.status, 200)
  try {
    await run(stream, sessionOf(stream), auth)
  } finally {
    stream.destroy()
  }
}

/** The replies (and errors) the stream received, parsed. */
const envelopes = (stream: RawStream) => stream.events.filter((e) => e.event === undefined).map((e) => JSON.parse(e.data))

async function badBatch (body: unknown, status: number, code: string): Promise<void> {
  await withStream('bad', async (stream, _session, auth) => {
    const answer = await post(typeof body === 'function' ? (body as (s: string) => unknown)(_session) : body, auth)
    assert.equal(answer.status, status, JSON.stringify(answer.body))
    assert.equal(answer.body.code, code)
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.deepEqual(envelopes(stream), [], 'nothing reached a handler')
  })
}

const cases: Array<[string, () => Promise<unknown>]> = [
  // The stream's admission: the upgrade's checks.
  ['a stream without a token: 401 MISSING_TOKEN', () => refused({}, 401, 'MISSING_TOKEN')],
  ['a stream with an expired token: 401 TOKEN_EXPIRED', () => refused(bearer('a', { exp: now() - 60 }), 401, 'TOKEN_EXPIRED')],
  ['a stream from a foreign Origin: 403 FORBIDDEN_ORIGIN, no CORS header', async () => {
    const stream = await refused({ ...bearer('a'), origin: 'https://evil.example' }, 403, 'FORBIDDEN_ORIGIN')
    assert.equal(stream.headers['access-control-allow-origin'], undefined)
  }],
  ['a stream from the allowed Origin: 200, readable by it with credentials', async () => {
    const stream = await open({ ...bearer('a'), origin: ALLOWED_ORIGIN })
    assert.equal(stream.status, 200)
    assert.equal(stream.headers['access-control-allow-origin'], ALLOWED_ORIGIN)
    assert.equal(stream.headers['access-control-allow-credentials'], 'true')
    stream.destroy()
  }],
  ['a stream with a session cookie and no Origin: 403 FORBIDDEN_ORIGIN (a cross-site no-cors fetch sends none)', () =>
    refused({ cookie: `token=${harness.token('c')}` }, 403, 'FORBIDDEN_ORIGIN')],
  ['a stream with a session cookie, no Origin and Sec-Fetch-Site: cross-site: 403 FORBIDDEN_ORIGIN', () =>
    refused({ cookie: `token=${harness.token('c')}`, 'sec-fetch-site': 'cross-site' }, 403, 'FORBIDDEN_ORIGIN')],
  ['a stream with a session cookie, no Origin and Sec-Fetch-Site: same-origin: 200', async () => {
    const stream = await open({ cookie: `token=${harness.token('c')}`, 'sec-fetch-site': 'same-origin' })
    assert.equal(stream.status, 200)
    stream.destroy()
  }],
  ['a stream with ?token=: 200, and the token is in no log line', async () => {
    const stream = await open({}, `/rt?x=2&token=${harness.token('q')}`)
    assert.equal(stream.status, 200)
    stream.destroy()
  }],
  ['a plain GET without Accept: text/event-stream: still 426 UPGRADE_REQUIRED', async () => {
    const stream = await open({ ...bearer('a'), accept: 'application/json' })
    assert.equal(stream.status, 426)
  }],

  // Batches: each refused one reaches no handler.
  ['a batch without a token: 401 MISSING_TOKEN', () => withStream('a', async (stream, session) => {
    const answer = await post({ session, seq: 1, frames: [echo(1)] })
    assert.equal(answer.status, 401)
    assert.equal(answer.body.code, 'MISSING_TOKEN')
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.deepEqual(envelopes(stream), [])
  })],
  ['a batch with another user\'s token: 403 FORBIDDEN_SESSION', () => withStream('a', async (stream, session) => {
    const answer = await post({ session, seq: 1, frames: [echo(1)] }, bearer('mallory'))
    assert.equal(answer.status, 403)
    assert.equal(answer.body.code, 'FORBIDDEN_SESSION')
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.deepEqual(envelopes(stream), [])
  })],
  ['a batch from a foreign Origin: 403 FORBIDDEN_ORIGIN', () => withStream('a', async (stream, session, auth) => {
    const answer = await post({ session, seq: 1, frames: [echo(1)] }, { ...auth, origin: 'https://evil.example' })
    assert.equal(answer.status, 403)
    assert.equal(answer.body.code, 'FORBIDDEN_ORIGIN')
  })],
  ['a forged session id: 404 UNKNOWN_SESSION', () => badBatch({ session: `${randomBytes(8).toString('hex')}.${randomBytes(18).toString('base64url')}`, seq: 1, frames: [echo(1)] }, 404, 'UNKNOWN_SESSION')],
  ['a session id of this instance with another random part: 404 UNKNOWN_SESSION', () =>
    badBatch((s: string) => ({ session: `${s.slice(0, s.lastIndexOf('.'))}.${randomBytes(18).toString('base64url')}`, seq: 1, frames: [echo(1)] }), 404, 'UNKNOWN_SESSION')],
  ['a session id replayed after its stream closed: 404 UNKNOWN_SESSION', async () => {
    const auth = bearer('r')
    const stream = await open(auth)
    const session = sessionOf(stream)
    stream.destroy()
    await waitFor(() => harness.h.app.realtime.stats().connections === 1, 3000, 'the stream gone')
    const answer = await post({ session, seq: 1, frames: [echo(1)] }, auth)
    assert.equal(answer.status, 404)
    assert.equal(answer.body.code, 'UNKNOWN_SESSION')
  }],
  ['a body that is not JSON: 400 from Fastify', () => badBatch('{"session":', 400, 'FST_ERR_CTP_INVALID_JSON_BODY')],
  ['a JSON array: 400 BAD_BATCH', () => badBatch([1, 2], 400, 'BAD_BATCH')],
  ['no seq: 400 BAD_BATCH', () => badBatch((session: string) => ({ session, frames: [echo(1)] }), 400, 'BAD_BATCH')],
  ['seq 0, 1.5 and "1": 400 BAD_BATCH', async () => {
    for (const seq of [0, 1.5, '1']) await badBatch((session: string) => ({ session, seq, frames: [echo(1)] }), 400, 'BAD_BATCH')
  }],
  ['no frames: 400 BAD_BATCH', () => badBatch((session: string) => ({ session, seq: 1, frames: [] }), 400, 'BAD_BATCH')],
  ['a frame that is a number, and a binary frame with another key: 400 BAD_BATCH', async () => {
    await badBatch((session: string) => ({ session, seq: 1, frames: [echo(1), 42] }), 400, 'BAD_BATCH')
    await badBatch((session: string) => ({ session, seq: 1, frames: [{ binary: 'AA==', x: 1 }] }), 400, 'BAD_BATCH')
  }],
  ['65 frames: 413 BATCH_TOO_LARGE', () => badBatch((session: string) => ({ session, seq: 1, frames: Array.from({ length: 65 }, (_, i) => echo(i)) }), 413, 'BATCH_TOO_LARGE')],
  ['a frame one byte over maxPayload after good ones: 413 BATCH_TOO_LARGE, none of them handled', () =>
    badBatch((session: string) => ({ session, seq: 1, frames: [echo(1), 'x'.repeat(MAX_PAYLOAD + 1)] }), 413, 'BATCH_TOO_LARGE')],
  ['a body over the route\'s body limit: 413 from Fastify', () =>
    badBatch((session: string) => ({ session, seq: 1, frames: Array.from({ length: 64 }, () => 'x'.repeat(MAX_PAYLOAD)).concat(['x'.repeat(MAX_PAYLOAD * 70)]) }), 413, 'FST_ERR_CTP_BODY_TOO_LARGE')],
  ['__proto__ in the body: 400 from Fastify', () => badBatch('{"session":"s","seq":1,"frames":["a"],"__proto__":{"x":1}}', 400, 'FST_ERR_CTP_INVALID_JSON_BODY')],
  ['a batch past the next seq: 409 SEQ_GAP; the same seq twice: handled once', () => withStream('o', async (stream, session, auth) => {
    const gap = await post({ session, seq: 2, frames: [echo(2)] }, auth)
    assert.equal(gap.status, 409)
    assert.equal(gap.body.code, 'SEQ_GAP')
    assert.deepEqual(await post({ session, seq: 1, frames: [echo(1)] }, auth), { status: 200, body: { ack: 1 } })
    assert.deepEqual(await post({ session, seq: 1, frames: [echo(1)] }, auth), { status: 200, body: { ack: 1 } })
    await waitFor(() => envelopes(stream).length >= 1)
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepEqual(envelopes(stream), [{ type: 'reply', id: 1, data: 1 }])
  })],
  ['100 stream requests cut off as they are answered: every connection they opened is gone', async () => {
    const http = await import('node:http')
    await Promise.all(Array.from({ length: 100 }, async (_, i) => await new Promise<void>((resolve) => {
      const request = http.request({ host: '127.0.0.1', port: harness.h.port, path: '/rt', agent: false, headers: { accept: 'text/event-stream', ...bearer(`cut-${i % 10}`) } })
      request.on('error', () => { resolve() })
      request.on('close', () => { resolve() })
      // Cut at once, or once the head came, or after a first byte of the body.
      if (i % 3 === 0) setImmediate(() => { request.destroy() })
      else request.on('response', (response) => { if (i % 3 === 1) request.destroy(); else response.once('data', () => { request.destroy() }) })
      request.end()
    })))
  }],
  ['a stream that is not read: closed as a slow consumer (4408), gone from the registry', async () => {
    const stream = await open(bearer('slow'))
    stream.pause()
    const conn = [...harness.h.app.realtime.connections.values()].find((c) => c.userId === 'slow')
    assert.equal(conn?.transport, 'stream')
    // Events of 16 KB until the kernel's buffers are full and the backlog passes maxBufferedBytes (256 KB).
    const big = 'y'.repeat(MAX_PAYLOAD - 64)
    for (let i = 0; i < 2000 && conn.isOpen; i++) {
      conn.send('big', big)
      if (i % 50 === 0) await new Promise((resolve) => setImmediate(resolve))
    }
    assert.equal(conn.isOpen, false, 'closed before 32 MB were sent')
    await waitFor(() => harness.h.app.realtime.stats().connections === 1, 5000, 'the slow stream gone')
    assert.ok((harness.h.app.realtime.stats().closes[4408] ?? 0) >= 1)
    stream.destroy()
  }]
]

for (const [name, run] of cases) {
  test(name, { timeout: 15000 }, async () => {
    const baseline = harness.snapshot()
    await run()
    await harness.check(baseline)
  })
}
