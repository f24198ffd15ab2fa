// The frame half of the corpus: bytes written straight to a TCP socket after a real upgrade, and the close code
// (or envelope) the server answers with. ws does the framing checks; the plugin's part is that nothing leaks:
// the registry, the canary and the process are unharmed after each one.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { CloseCode } from '../../lib/index.js'
import { closePayload, frame, Op, RawClient } from '../helpers/raw.js'
import { MAX_PAYLOAD, startHarness, type Harness } from './harness.js'

let harness: Harness
before(async () => { harness = await startHarness() })
after(async () => { await harness.close() })

async function open (): Promise<RawClient> {
  return await RawClient.open(harness.h.port, '/rt', { Authorization: `Bearer ${harness.token('raw')}` })
}

/** Sends the bytes and expects the server to close with `code` (its close frame parsed off the wire). */
async function expectClose (bytes: Buffer | Buffer[], code: number): Promise<void> {
  const c = await open()
  for (const b of Array.isArray(bytes) ? bytes : [bytes]) c.send(b)
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([c.ended, new Promise<'timeout'>((resolve) => { timer = setTimeout(resolve, 5000, 'timeout') })])
  clearTimeout(timer)
  c.destroy()
  assert.equal(closed, code)
}

async function expectText (bytes: Buffer | Buffer[], expected: unknown): Promise<void> {
  const c = await open()
  for (const b of Array.isArray(bytes) ? bytes : [bytes]) c.send(b)
  assert.deepEqual(JSON.parse(await c.nextText()), expected)
  c.send(frame(Op.CLOSE, closePayload(1000)))
  assert.equal(await c.ended, 1000)
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value))
/** A valid echo request padded to exactly `size` bytes. */
function echoOfSize (size: number): Buffer {
  const shell = JSON.stringify({ type: 'echo', id: 1, data: '' })
  return Buffer.from(JSON.stringify({ type: 'echo', id: 1, data: 'x'.repeat(size - shell.length) }))
}

const cases: Array<[string, () => Promise<void>]> = [
  ['RSV1 set without an extension: 1002', () => expectClose(frame(Op.TEXT, '{}', { rsv: 4 }), CloseCode.PROTOCOL_ERROR)],
  ['RSV2 set: 1002', () => expectClose(frame(Op.TEXT, '{}', { rsv: 2 }), CloseCode.PROTOCOL_ERROR)],
  ['an unmasked client frame: 1002', () => expectClose(frame(Op.TEXT, '{"type":"ping"}', { mask: false }), CloseCode.PROTOCOL_ERROR)],
  ['a ping with 126 bytes of payload: 1002', () => expectClose(frame(Op.PING, Buffer.alloc(126)), CloseCode.PROTOCOL_ERROR)],
  ['a fragmented ping: 1002', () => expectClose(frame(Op.PING, 'a', { fin: false }), CloseCode.PROTOCOL_ERROR)],
  ['a continuation with no message begun: 1002', () => expectClose(frame(Op.CONTINUATION, 'x'), CloseCode.PROTOCOL_ERROR)],
  ['a new text frame inside a fragmented message: 1002', () =>
    expectClose([frame(Op.TEXT, '{"ty', { fin: false }), frame(Op.TEXT, 'pe":"ping"}')], CloseCode.PROTOCOL_ERROR)],
  ['reserved data opcode 0x3: 1002', () => expectClose(frame(0x3, 'x'), CloseCode.PROTOCOL_ERROR)],
  ['reserved control opcode 0xB: 1002', () => expectClose(frame(0xb, 'x'), CloseCode.PROTOCOL_ERROR)],
  ['invalid UTF-8 in a text frame: 1007', () => expectClose(frame(Op.TEXT, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), CloseCode.INVALID_PAYLOAD)],
  ['invalid UTF-8 split across fragments: 1007', () =>
    expectClose([frame(Op.TEXT, Buffer.from([0x22, 0xf0, 0x9f]), { fin: false }), frame(Op.CONTINUATION, Buffer.from([0x41, 0x22]))], CloseCode.INVALID_PAYLOAD)],
  ['valid UTF-8 split inside a character across fragments: handled', () => {
    const bytes = json({ type: 'echo', id: 1, data: '😀' })
    const cut = bytes.indexOf(0xf0) + 2
    return expectText([frame(Op.TEXT, bytes.subarray(0, cut), { fin: false }), frame(Op.CONTINUATION, bytes.subarray(cut))], { type: 'reply', id: 1, data: '😀' })
  }],
  ['close code 999: 1002', () => expectClose(frame(Op.CLOSE, closePayload(999)), CloseCode.PROTOCOL_ERROR)],
  ['close code 1005, which must never be sent: 1002', () => expectClose(frame(Op.CLOSE, closePayload(1005)), CloseCode.PROTOCOL_ERROR)],
  ['close code 5000: 1002', () => expectClose(frame(Op.CLOSE, closePayload(5000)), CloseCode.PROTOCOL_ERROR)],
  ['a close frame with a one-byte payload: 1002', () => expectClose(frame(Op.CLOSE, Buffer.from([3])), CloseCode.PROTOCOL_ERROR)],
  ['a close reason that is not UTF-8: 1007', () => expectClose(frame(Op.CLOSE, Buffer.concat([closePayload(1000), Buffer.from([0xff])])), CloseCode.INVALID_PAYLOAD)],
  ['a clean close 1000: echoed', () => expectClose(frame(Op.CLOSE, closePayload(1000, 'bye')), CloseCode.NORMAL)],
  ['a payload of exactly maxPayload: handled', async () => {
    const c = await open()
    c.send(frame(Op.TEXT, echoOfSize(MAX_PAYLOAD)))
    const reply = JSON.parse(await c.nextText())
    assert.equal(reply.type, 'reply')
    assert.equal(reply.data.length, MAX_PAYLOAD - JSON.stringify({ type: 'echo', id: 1, data: '' }).length)
    c.destroy()
  }],
  ['a payload one byte over maxPayload: 1009', () => expectClose(frame(Op.TEXT, echoOfSize(MAX_PAYLOAD + 1)), CloseCode.MESSAGE_TOO_BIG)],
  ['fragments that add up to more than maxPayload: 1009', () => {
    const big = echoOfSize(MAX_PAYLOAD + 100)
    return expectClose([frame(Op.TEXT, big.subarray(0, 9000), { fin: false }), frame(Op.CONTINUATION, big.subarray(9000))], CloseCode.MESSAGE_TOO_BIG)
  }],
  ['a 64-bit length of 2^63 - 1: 1009, nothing allocated', () => expectClose(frame(Op.BINARY, Buffer.alloc(0), { length: 2n ** 63n - 1n }), CloseCode.MESSAGE_TOO_BIG)],
  ['a flood of 5,000 one-byte fragments: one message, handled', () => {
    const bytes = json({ type: 'echo', id: 'flood', data: 'z'.repeat(4950) })
    const frames = [...bytes].map((b, i) => frame(i === 0 ? Op.TEXT : Op.CONTINUATION, Buffer.from([b]), { fin: i === bytes.length - 1 }))
    return expectText(Buffer.concat(frames), { type: 'reply', id: 'flood', data: 'z'.repeat(4950) })
  }],
  ['a flood of 20,000 empty fragments: 1008 from ws (at most 16,384 fragments a message)', () => {
    const frames = Array.from({ length: 20000 }, () => frame(Op.CONTINUATION, Buffer.alloc(0), { fin: false }))
    return expectClose([frame(Op.TEXT, '{"type":"ping",', { fin: false }), Buffer.concat(frames)], CloseCode.POLICY_VIOLATION)
  }],
  ['a ping from the client: a pong with the same payload', async () => {
    const c = await open()
    c.send(frame(Op.PING, 'are you there'))
    const pong = await c.nextFrame((f) => f.opcode === Op.PONG)
    assert.equal(pong.payload.toString(), 'are you there')
    c.destroy()
  }],
  ['a binary frame on a route without binary: BINARY_NOT_ACCEPTED', () =>
    expectText(frame(Op.BINARY, Buffer.from([1, 2, 3])), { type: 'error', error: { code: 'BINARY_NOT_ACCEPTED', message: 'this route accepts no binary frames' } })],
  ['text that is not JSON: BAD_JSON, the connection lives', () =>
    expectText(frame(Op.TEXT, 'hello'), { type: 'error', error: { code: 'BAD_JSON', message: 'frame is not valid JSON' } })]
]

for (const [name, run] of cases) {
  test(name, { timeout: 15000 }, async () => {
    const baseline = harness.snapshot()
    await run()
    await harness.check(baseline)
  })
}
