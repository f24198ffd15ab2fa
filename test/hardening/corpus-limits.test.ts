// The per-client limits in the corpus: each flood a client can send, with its exact outcome, and the harness's
// invariant (registry back to its baseline, no token logged, the canary served) after each.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type TestClient } from '../helpers/client.js'
import { startHarness, type Harness } from './harness.js'

let harness: Harness
before(async () => { harness = await startHarness() })
after(async () => { await harness.close() })

async function client (): Promise<TestClient> {
  return await connect(`${harness.h.wsBase}/rt`, { headers: { authorization: `Bearer ${harness.token('limits')}` } })
}

test('room names: empty and 256 characters are INVALID_ROOM, 255 is a room', { timeout: 15000 }, async () => {
  const baseline = harness.snapshot()
  const c = await client()
  assert.equal((await c.request('joinAny', '')).error.code, 'INVALID_ROOM')
  assert.equal((await c.request('joinAny', 'r'.repeat(256))).error.code, 'INVALID_ROOM')
  assert.deepEqual(await c.request('joinAny', 'r'.repeat(255)), { type: 'reply', id: 3, data: 1 })
  await c.close()
  await harness.check(baseline)
})

test('a room flood: 500 distinct names, 128 rooms held, the rest TOO_MANY_ROOMS, the connection served', { timeout: 30000 }, async () => {
  const baseline = harness.snapshot()
  const c = await client()
  for (let i = 0; i < 500; i++) c.sendJson({ type: 'joinAny', id: i, data: `flood-${i}` })
  const answers = []
  for (let i = 0; i < 500; i++) answers.push(await c.nextMessage())
  assert.equal(answers.filter((a) => a.type === 'reply').length, 128)
  assert.equal(answers.filter((a) => a.error?.code === 'TOO_MANY_ROOMS').length, 372)
  assert.equal(harness.h.app.realtime.stats().rooms, baseline.registry[2] as number + 128)
  assert.equal((await c.request('echo', 'still here')).data, 'still here')
  await c.close()
  await harness.check(baseline)
})

test('a close-code flood: 100 clients closing with codes of their choosing make no new counter keys', { timeout: 30000 }, async () => {
  const baseline = harness.snapshot()
  const before = Object.keys(harness.h.app.realtime.stats().closes)
  for (let i = 0; i < 100; i++) {
    const c = await client()
    c.ws.close(3000 + i * 19)
    await c.closed
  }
  await harness.check(baseline)
  const added = Object.keys(harness.h.app.realtime.stats().closes).filter((k) => !before.includes(k))
  assert.ok(added.every((k) => k === 'other'), `new keys: ${added.join(', ')}`)
})
