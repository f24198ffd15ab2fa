// The envelope part of the corpus: each frame the exact text, each answer the exact envelope. The connection
// lives on after every one of them.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type TestClient } from '../helpers/client.js'
import { MAX_PAYLOAD, startHarness, type Harness } from './harness.js'

let harness: Harness
let c: TestClient
before(async () => {
  harness = await startHarness()
  c = await connect(`${harness.h.wsBase}/rt`, { headers: { authorization: `Bearer ${harness.token('env')}` } })
})
after(async () => { c.destroy(); await harness.close() })

const badId = { code: 'BAD_ENVELOPE', message: 'id must be a string of 1 to 128 characters or a finite number' }
const deepArray = (depth: number) => '['.repeat(depth) + ']'.repeat(depth)
function deepObject (depth: number, inner: string): string {
  return '{"a":'.repeat(depth) + inner + '}'.repeat(depth)
}

const cases: Array<[string, string, unknown]> = [
  ['not JSON', '{"type":', { type: 'error', error: { code: 'BAD_JSON', message: 'frame is not valid JSON' } }],
  ['an empty frame', '', { type: 'error', error: { code: 'BAD_JSON', message: 'frame is not valid JSON' } }],
  ['a JSON number', '42', { type: 'error', error: { code: 'BAD_ENVELOPE', message: 'an envelope is a JSON object { type, data?, id? }' } }],
  ['no type', '{"id":1,"data":{}}', { type: 'error', id: 1, error: { code: 'BAD_ENVELOPE', message: 'type must be a string of 1 to 128 characters' } }],
  ['an empty type', '{"id":2,"type":""}', { type: 'error', id: 2, error: { code: 'BAD_ENVELOPE', message: 'type must be a string of 1 to 128 characters' } }],
  ['a 129-character type', `{"id":3,"type":"${'t'.repeat(129)}"}`, { type: 'error', id: 3, error: { code: 'BAD_ENVELOPE', message: 'type must be a string of 1 to 128 characters' } }],
  ['an unknown type', '{"id":4,"type":"nope"}', { type: 'error', id: 4, error: { code: 'UNKNOWN_TYPE', message: 'unknown message type "nope"' } }],
  ['a reserved server type sent by the client', '{"id":5,"type":"error"}', { type: 'error', id: 5, error: { code: 'UNKNOWN_TYPE', message: 'unknown message type "error"' } }],
  ['data missing for a schema', '{"id":6,"type":"typed"}', { type: 'error', id: 6, error: { code: 'VALIDATION_FAILED', message: 'invalid data for "typed"', details: [{ path: '', message: 'Expected object' }] } }],
  ['a string one over maxLength and a float for an integer', '{"id":7,"type":"typed","data":{"text":"' + 'x'.repeat(101) + '","n":1.5}}',
    { type: 'error', id: 7, error: { code: 'VALIDATION_FAILED', message: 'invalid data for "typed"', details: [{ path: '/text', message: 'Expected string length less or equal to 100' }, { path: '/n', message: 'Expected integer' }] } }],
  ['an extra property and n as a string', '{"id":8,"type":"typed","data":{"text":"a","n":"1","x":1}}',
    { type: 'error', id: 8, error: { code: 'VALIDATION_FAILED', message: 'invalid data for "typed"', details: [{ path: '/n', message: 'Expected integer' }] } }],
  ['the edge of the schema: maxLength exactly, a large safe integer', '{"id":9,"type":"typed","data":{"text":"' + 'x'.repeat(100) + '","n":9007199254740990}}',
    { type: 'reply', id: 9, data: 9007199254740991 }],
  ['a handler that throws', '{"id":10,"type":"crash"}', { type: 'error', id: 10, error: { code: 'INTERNAL', message: 'internal error' } }],
  ['a handler that refuses', '{"id":11,"type":"refuse"}', { type: 'error', id: 11, error: { code: 'NOPE', message: 'refused by the app' } }],
  ['__proto__ at the top', '{"__proto__":{"isAdmin":true},"type":"echo","id":12}', { type: 'error', error: { code: 'BAD_JSON', message: 'forbidden __proto__ or constructor.prototype key' } }],
  ['__proto__ in data', '{"type":"echo","id":13,"data":{"__proto__":{"isAdmin":true}}}', { type: 'error', error: { code: 'BAD_JSON', message: 'forbidden __proto__ or constructor.prototype key' } }],
  ['constructor.prototype in data', '{"type":"echo","id":14,"data":{"constructor":{"prototype":{"isAdmin":true}}}}', { type: 'error', error: { code: 'BAD_JSON', message: 'forbidden __proto__ or constructor.prototype key' } }],
  ['constructor alone is a plain key', '{"type":"echo","id":15,"data":{"constructor":1}}', { type: 'reply', id: 15, data: { constructor: 1 } }],
  ['an id that is an object', '{"type":"echo","id":{"x":1}}', { type: 'error', error: badId }],
  ['an id that is an array', '{"type":"echo","id":[1]}', { type: 'error', error: badId }],
  ['an id that is true', '{"type":"echo","id":true}', { type: 'error', error: badId }],
  ['an id that is null', '{"type":"echo","id":null}', { type: 'error', error: badId }],
  ['an id that is an empty string', '{"type":"echo","id":""}', { type: 'error', error: badId }],
  ['an id of 129 characters', `{"type":"echo","id":"${'i'.repeat(129)}"}`, { type: 'error', error: badId }],
  ['an id that overflows to Infinity', '{"type":"echo","id":1e400}', { type: 'error', error: badId }],
  ['a negative fractional id is fine', '{"type":"echo","id":-1.5,"data":1}', { type: 'reply', id: -1.5, data: 1 }],
  ['deep nesting within maxPayload, echoed: the encoder overflows, INTERNAL', `{"type":"echo","id":16,"data":${deepArray(7000)}}`,
    { type: 'error', id: 16, error: { code: 'INTERNAL', message: 'internal error' } }],
  ['deep nesting against an object schema: VALIDATION_FAILED', `{"type":"typed","id":17,"data":${deepObject(2500, '1')}}`,
    { type: 'error', id: 17, error: { code: 'VALIDATION_FAILED', message: 'invalid data for "typed"', details: [{ path: '/text', message: 'Expected required property' }, { path: '/n', message: 'Expected required property' }, { path: '/text', message: 'Expected string' }, { path: '/n', message: 'Expected integer' }] } }],
  ['deep nesting hiding constructor.prototype: BAD_JSON', `{"type":"echo","id":18,"data":${deepObject(2500, '{"constructor":{"prototype":{}}}')}}`,
    { type: 'error', error: { code: 'BAD_JSON', message: 'forbidden __proto__ or constructor.prototype key' } }],
  ['auth.refresh with another user\'s token', '', { type: 'error', id: 19, error: { code: 'INVALID_TOKEN', message: 'the token belongs to another user' } }],
  ['an app ping with a string id', '{"type":"ping","id":"p1"}', { type: 'pong', id: 'p1' }]
]

for (const [name, text, expected] of cases) {
  test(name, { timeout: 15000 }, async () => {
    const baseline = harness.snapshot()
    const frame = name.startsWith('auth.refresh') ? JSON.stringify({ type: 'auth.refresh', id: 19, data: { token: harness.token('someone-else') } }) : text
    assert.ok(Buffer.byteLength(frame) <= MAX_PAYLOAD, 'within maxPayload')
    c.ws.send(frame)
    assert.deepEqual(await c.nextMessage(), expected)
    assert.equal(({} as Record<string, unknown>).isAdmin, undefined)
    await harness.check(baseline)
  })
}

test('a replayed id: each message is answered, with the same id (ids are the client\'s to keep unique)', { timeout: 15000 }, async () => {
  const baseline = harness.snapshot()
  c.sendJson({ type: 'echo', id: 'same', data: 1 })
  c.sendJson({ type: 'echo', id: 'same', data: 2 })
  assert.deepEqual([await c.nextMessage(), await c.nextMessage()], [{ type: 'reply', id: 'same', data: 1 }, { type: 'reply', id: 'same', data: 2 }])
  await harness.check(baseline)
})

test('the connection that sent all of the above is still open and served', { timeout: 15000 }, async () => {
  assert.equal(c.ws.readyState, c.ws.OPEN)
  assert.deepEqual(await c.request('typed', { text: 'ok', n: 1 }), { type: 'reply', id: 1, data: 2 })
})
