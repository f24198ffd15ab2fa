import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { Type } from '@sinclair/typebox'
import { RealtimeError } from '../lib/index.js'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, waitFor, type TestClient } from './helpers/client.js'
import { encodeReply } from '../lib/protocol/envelope.js'
import { textFrameOf } from '../lib/protocol/frame.js'

interface Fixture { h: TestApp, c: TestClient, logs: string[], order: string[] }

async function fixture (t: { after: (fn: () => Promise<void>) => void }, binary = false): Promise<Fixture> {
  const logs: string[] = []
  const order: string[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { logs.push(chunk.toString()); cb() } })
  const h = await startApp({
    fastify: { logger: { level: 'info', stream } },
    realtime: { auth: false },
    setup: (app) => {
      app.realtimeRoute({
        url: '/rt',
        messages: {
          echo: { schema: Type.Object({ text: Type.String({ maxLength: 10 }), n: Type.Optional(Type.Integer()) }), handler: ({ text }) => ({ text }) },
          nothing: { schema: Type.Null(), handler: () => undefined },
          slow: {
            schema: Type.Object({ ms: Type.Integer(), tag: Type.String() }),
            handler: async ({ ms, tag }) => { await new Promise((resolve) => setTimeout(resolve, ms)); order.push(tag); return tag }
          },
          fast: { schema: Type.Object({ tag: Type.String() }), handler: ({ tag }) => { order.push(tag); return tag } },
          refuse: { schema: Type.Any(), handler: () => { throw new RealtimeError('NOT_IN_ROOM', 'join the room first', { room: 'lobby' }) } },
          refuseAsync: { schema: Type.Any(), handler: async () => { throw new RealtimeError('QUOTA', 'over quota') } },
          crash: { schema: Type.Any(), handler: () => { throw new Error('secret database password in this message') } },
          crashAsync: { schema: Type.Any(), handler: async () => { throw new Error('async secret') } },
          unserializable: { schema: Type.Any(), handler: () => ({ big: 10n }) },
          probe: { schema: Type.Any(), handler: (data) => ({ polluted: ({} as Record<string, unknown>).polluted ?? null, keys: Object.keys(data ?? {}) }) }
        },
        ...(binary ? { binary: (data: Buffer, conn: any) => { conn.sendBinary(Buffer.concat([Buffer.from('got:'), data])) } } : {})
      })
    }
  })
  const c = await connect(`${h.wsBase}/rt`)
  t.after(async () => { c.destroy(); await h.close() })
  return { h, c, logs, order }
}

test('a message with an id gets a reply with the same id; without one, none', { timeout: 10000 }, async (t) => {
  const { c } = await fixture(t)
  c.sendJson({ type: 'echo', data: { text: 'a' } })
  c.sendJson({ type: 'echo', data: { text: 'b' }, id: 'req-7' })
  assert.deepEqual(await c.nextMessage(), { type: 'reply', id: 'req-7', data: { text: 'b' } })
  assert.deepEqual(await c.request('nothing', null), { type: 'reply', id: 1, data: null })
  c.sendJson({ type: 'ping', id: 9 })
  assert.deepEqual(await c.nextMessage(), { type: 'pong', id: 9 })
  c.sendJson({ type: 'ping' })
  assert.deepEqual(await c.nextMessage(), { type: 'pong' })
  assert.equal(c.pending, 0)
})

test('every protocol error code, with the id whenever it could be read; the connection lives on', { timeout: 10000 }, async (t) => {
  const { h, c } = await fixture(t)
  const cases: Array<[string | Buffer, unknown]> = [
    ['{not json', { type: 'error', error: { code: 'BAD_JSON', message: 'frame is not valid JSON' } }],
    ['[1,2]', { type: 'error', error: { code: 'BAD_ENVELOPE', message: 'an envelope is a JSON object { type, data?, id? }' } }],
    ['"just a string"', { type: 'error', error: { code: 'BAD_ENVELOPE', message: 'an envelope is a JSON object { type, data?, id? }' } }],
    ['null', { type: 'error', error: { code: 'BAD_ENVELOPE', message: 'an envelope is a JSON object { type, data?, id? }' } }],
    ['{"data":1,"id":3}', { type: 'error', id: 3, error: { code: 'BAD_ENVELOPE', message: 'type must be a string of 1 to 128 characters' } }],
    ['{"type":5,"id":"x"}', { type: 'error', id: 'x', error: { code: 'BAD_ENVELOPE', message: 'type must be a string of 1 to 128 characters' } }],
    ['{"type":"echo","id":{"a":1}}', { type: 'error', error: { code: 'BAD_ENVELOPE', message: 'id must be a string of 1 to 128 characters or a finite number' } }],
    ['{"type":"echo","id":true}', { type: 'error', error: { code: 'BAD_ENVELOPE', message: 'id must be a string of 1 to 128 characters or a finite number' } }],
    ['{"type":"echo","id":""}', { type: 'error', error: { code: 'BAD_ENVELOPE', message: 'id must be a string of 1 to 128 characters or a finite number' } }],
    ['{"type":"nope","id":4}', { type: 'error', id: 4, error: { code: 'UNKNOWN_TYPE', message: 'unknown message type "nope"' } }],
    ['{"type":"reply","id":5}', { type: 'error', id: 5, error: { code: 'UNKNOWN_TYPE', message: 'unknown message type "reply"' } }],
    ['{"type":"refuse","id":6}', { type: 'error', id: 6, error: { code: 'NOT_IN_ROOM', message: 'join the room first', details: { room: 'lobby' } } }],
    ['{"type":"refuseAsync","id":7}', { type: 'error', id: 7, error: { code: 'QUOTA', message: 'over quota' } }],
    ['{"type":"crash","id":8}', { type: 'error', id: 8, error: { code: 'INTERNAL', message: 'internal error' } }],
    ['{"type":"crashAsync","id":9}', { type: 'error', id: 9, error: { code: 'INTERNAL', message: 'internal error' } }],
    ['{"type":"unserializable","id":10}', { type: 'error', id: 10, error: { code: 'INTERNAL', message: 'internal error' } }],
    [Buffer.from([1, 2, 3]), { type: 'error', error: { code: 'BINARY_NOT_ACCEPTED', message: 'this route accepts no binary frames' } }],
    ['{"type":"auth.refresh","id":11,"data":{"token":"x"}}', { type: 'error', id: 11, error: { code: 'UNKNOWN_TYPE', message: 'this route does not renew sessions by token' } }]
  ]
  for (const [frame, expected] of cases) {
    c.ws.send(frame)
    assert.deepEqual(await c.nextMessage(), expected, String(frame))
  }
  c.sendJson({ type: 'echo', data: { text: 'abcdefghijklmnop', n: 1.5 }, id: 12 })
  const invalid = await c.nextMessage()
  assert.equal(invalid.id, 12)
  assert.equal(invalid.error.code, 'VALIDATION_FAILED')
  assert.deepEqual(invalid.error.details.map((d: { path: string }) => d.path).sort(), ['/n', '/text'])
  assert.equal(typeof invalid.error.details[0].message, 'string')
  assert.deepEqual(await c.request('echo', { text: 'still ok' }), { type: 'reply', id: 1, data: { text: 'still ok' } })
  const { errors } = h.app.realtime.stats()
  assert.deepEqual(errors, {
    BAD_JSON: 1, BAD_ENVELOPE: 8, UNKNOWN_TYPE: 3, NOT_IN_ROOM: 1, QUOTA: 1, INTERNAL: 3, BINARY_NOT_ACCEPTED: 1, VALIDATION_FAILED: 1
  })
})

test('a plain Error leaks nothing to the client; the log has it with the connection\'s context', { timeout: 10000 }, async (t) => {
  const { c, logs, h } = await fixture(t)
  const reply = await c.request('crash', {})
  assert.equal(JSON.stringify(reply).includes('secret'), false)
  await waitFor(() => logs.some((l) => l.includes('secret database password')), 2000, 'the log line')
  const line = JSON.parse(logs.find((l) => l.includes('secret database password')) as string)
  assert.equal(line.level, 50)
  assert.equal(line.connId, [...h.app.realtime.connections.keys()][0])
  assert.ok(line.remoteAddress)
  assert.match(line.err.stack, /protocol\.test\.ts/)
  // A RealtimeError is business as usual: not logged at error level.
  await c.request('refuse', {})
  assert.equal(logs.filter((l) => JSON.parse(l).level >= 50).length, 1)
})

test('handlers of one connection run in arrival order, async ones included', { timeout: 10000 }, async (t) => {
  const { c, order } = await fixture(t)
  c.sendJson({ type: 'slow', data: { ms: 80, tag: 'first' }, id: 1 })
  c.sendJson({ type: 'fast', data: { tag: 'second' }, id: 2 })
  c.sendJson({ type: 'slow', data: { ms: 10, tag: 'third' }, id: 3 })
  c.sendJson({ type: 'fast', data: { tag: 'fourth' }, id: 4 })
  const replies = [await c.nextMessage(), await c.nextMessage(), await c.nextMessage(), await c.nextMessage()]
  assert.deepEqual(replies.map((r) => r.id), [1, 2, 3, 4])
  assert.deepEqual(order, ['first', 'second', 'third', 'fourth'])
})

test('refusals and pongs are answered at once, ahead of replies still being computed (as the wire protocol in docs/14-reference.md says)', { timeout: 10000 }, async (t) => {
  const { c } = await fixture(t)
  c.sendJson({ type: 'slow', data: { ms: 150, tag: 'busy' }, id: 1 })
  c.sendJson({ type: 'echo', data: { text: 'far too long for the schema' }, id: 2 })
  c.sendJson({ type: 'nope', id: 3 })
  c.sendJson({ type: 'ping', id: 4 })
  c.sendJson({ type: 'fast', data: { tag: 'queued' }, id: 5 })
  const answers = [await c.nextMessage(), await c.nextMessage(), await c.nextMessage(), await c.nextMessage(), await c.nextMessage()]
  assert.deepEqual(answers.map((a) => [a.id, a.type, a.error?.code]), [
    [2, 'error', 'VALIDATION_FAILED'], [3, 'error', 'UNKNOWN_TYPE'], [4, 'pong', undefined], [1, 'reply', undefined], [5, 'reply', undefined]
  ])
})

test('__proto__ and constructor.prototype cannot pollute prototypes', { timeout: 10000 }, async (t) => {
  const { c } = await fixture(t)
  c.ws.send('{"type":"probe","id":1,"data":{"__proto__":{"polluted":"yes"}}}')
  assert.deepEqual(await c.nextMessage(), { type: 'error', error: { code: 'BAD_JSON', message: 'forbidden __proto__ or constructor.prototype key' } })
  c.ws.send('{"type":"probe","id":2,"data":{"constructor":{"prototype":{"polluted":"yes"}}}}')
  assert.equal((await c.nextMessage()).error.code, 'BAD_JSON')
  c.ws.send('{"__proto__":{"type":"probe"},"id":3}')
  assert.equal((await c.nextMessage()).error.code, 'BAD_JSON')
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
  // The words themselves as values are fine.
  assert.deepEqual(await c.request('probe', { text: '__proto__ constructor prototype' }), { type: 'reply', id: 1, data: { polluted: null, keys: ['text'] } })
})

test('binary frames reach the route\'s binary handler, in order with text', { timeout: 10000 }, async (t) => {
  const { c } = await fixture(t, true)
  c.ws.send(Buffer.from('abc'))
  const data = await c.nextMessage()
  assert.ok(Buffer.isBuffer(data))
  assert.equal(data.toString(), 'got:abc')
})

test('200 connections: one sends garbage, the other 199 keep getting replies', { timeout: 30000 }, async (t) => {
  const { h, c: bad } = await fixture(t)
  const good: TestClient[] = []
  t.after(() => { for (const g of good) g.destroy() })
  for (let i = 0; i < 199; i++) good.push(await connect(`${h.wsBase}/rt`))
  const garbage = ['{', '[]', '{"type":"crash","id":1}', Buffer.from([0xff, 0x00]), '{"type":"nope"}', '{"__proto__":1}', 'x'.repeat(1000)]
  for (let round = 0; round < 3; round++) {
    for (const g of garbage) bad.ws.send(g)
    const replies = await Promise.all(good.map(async (g, i) => await g.request('echo', { text: `r${round}-${i % 100}` })))
    replies.forEach((r, i) => { assert.deepEqual(r.data, { text: `r${round}-${i % 100}` }) })
  }
  assert.equal(h.app.realtime.connections.size, 200)
  assert.equal(bad.ws.readyState, bad.ws.OPEN)
})

test('a reply frame is the JSON of { type, id, data } for any id and data; data JSON has no text for is null', () => {
  const ids = [0, 7, -1, 1.5, 1e21, 'a', 'with "quotes" and \\ and \u2028']
  const values = [null, 0, 'text', '\ud800 lone', [1, { a: [] }], { nested: { deep: true } }, new Date(0), { toJSON: () => 'custom' }]
  for (const id of ids) {
    for (const value of values) assert.deepEqual(JSON.parse(encodeReply(id, value)), JSON.parse(JSON.stringify({ type: 'reply', id, data: value })))
  }
  for (const nothing of [undefined, () => 1, Symbol('s')]) assert.equal(encodeReply(3, nothing), '{"type":"reply","id":3,"data":null}')
  assert.throws(() => encodeReply(1, { n: 1n }), TypeError)
})

test('a text frame framed here holds exactly its text: a byte count that is off never sends uninitialized memory', () => {
  for (const text of ['plain', 'héllo wörld ✓', '\ud83d\ude00'.repeat(50), 'x'.repeat(70_000)]) {
    const bytes = Buffer.byteLength(text)
    for (const said of [bytes, bytes + 3]) {
      const frame = textFrameOf(text, said)
      const header = frame[1] === 127 ? 10 : frame[1] === 126 ? 4 : 2
      assert.equal(frame.subarray(header).toString('utf8'), text)
      assert.equal(frame.length - header, bytes)
    }
  }
})
