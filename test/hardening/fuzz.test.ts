// The fuzzer as part of `npm test`: 10,000 runs of each property, then every kept regression replayed.
import { after, test } from 'node:test'
import fc from 'fast-check'
import { connect, type TestClient } from '../helpers/client.js'
import { startHarness, type Harness } from './harness.js'
import { batchProperty, bodyProperty, decoderProperty, dispatcherProperty, readRegressions, runKept } from './fuzz-properties.js'
import { StreamClient } from '../helpers/stream.js'
import { waitFor } from '../helpers/client.js'
import assert from 'node:assert/strict'
import { redisBroker } from '../../lib/redis.js'
import { call, client as historyClient, historyApp } from '../helpers/history.js'
import { REDIS_URL, redisTest, uniquePrefix } from '../helpers/redis.js'
import type { TestApp } from '../helpers/app.js'

let harness: Harness | undefined
/**
 * The server, started once the decoder test is over: that one is synchronous (10,000 runs block this process's
 * event loop for seconds), and a canary request caught in that block would count as the server not answering.
 */
async function server (): Promise<Harness> {
  // No rate limit in the way: the fuzzer sends as fast as the loopback allows.
  harness ??= await startHarness({ limits: { rate: 1e9, burst: 1e9 }, fallback: true })
  return harness
}
after(async () => { await harness?.close() })

async function fuzzClient (): Promise<TestClient> {
  const h = await server()
  return await connect(`${h.h.wsBase}/rt`, { headers: { authorization: `Bearer ${h.token('fuzz')}` } })
}

test('decoder: 10,000 arbitrary frames', { timeout: 60000 }, async () => {
  await runKept('decoder', decoderProperty, 10000)
})

test('dispatcher: 10,000 arbitrary frames through a real connection', { timeout: 120000 }, async () => {
  const baseline = (await server()).snapshot()
  const client = await fuzzClient()
  try {
    await runKept('dispatcher', dispatcherProperty(client), 10000)
  } finally {
    // It joined whatever rooms the fuzzer chose; leaving must take it out of all of them.
    await client.close()
  }
  await (await server()).check(baseline)
})

test('fallback: 1,000 batches of arbitrary frames through a stream answer as the WebSocket would', { timeout: 120000 }, async () => {
  const h = await server()
  const auth = { authorization: `Bearer ${h.token('fuzz-stream')}` }
  const stream = await StreamClient.open(`${h.h.httpBase}/rt`, { headers: auth })
  try {
    await runKept('fallback-batches', batchProperty(stream, auth), 1000)
  } finally {
    stream.abort()
  }
  await waitFor(() => h.h.app.realtime.stats().connections === 1, 5000, 'the stream gone')
})

test('fallback: 2,000 arbitrary POST bodies are refused with a status and a code, and reach no handler', { timeout: 120000 }, async () => {
  const h = await server()
  const auth = { authorization: `Bearer ${h.token('fuzz-bodies')}` }
  const stream = await StreamClient.open(`${h.h.httpBase}/rt`, { headers: auth })
  try {
    await runKept('fallback-bodies', bodyProperty(stream, auth), 2000)
  } finally {
    stream.abort()
  }
  await waitFor(() => h.h.app.realtime.stats().connections === 1, 5000, 'the stream gone')
})

test('every kept regression replays clean', { timeout: 60000 }, async () => {
  const client = await fuzzClient()
  const h = await server()
  const auth = { authorization: `Bearer ${h.token('fuzz-replay')}` }
  let stream: StreamClient | undefined
  try {
    for (const r of await readRegressions()) {
      let property
      if (r.property.startsWith('fallback-')) {
        stream ??= await StreamClient.open(`${h.h.httpBase}/rt`, { headers: auth })
        property = r.property === 'fallback-batches' ? batchProperty(stream, auth) : bodyProperty(stream, auth)
      } else {
        property = r.property === 'decoder' ? decoderProperty : dispatcherProperty(client)
      }
      await fc.assert(property as fc.IRawProperty<unknown, boolean>, { seed: r.seed, path: r.path, endOnFailure: true })
    }
  } finally {
    client.destroy()
    stream?.abort()
  }
})

redisTest('room names and except values of any characters through the Redis broker: each member gets the frame, byte for byte, unless excepted', { timeout: 120000 }, async (t) => {
  const prefix = uniquePrefix()
  const apps: TestApp[] = []
  for (let i = 0; i < 2; i++) apps.push(await historyApp({ rooms: (room: string) => room.length % 2 === 0 }, { broker: redisBroker({ url: REDIS_URL, prefix }), limits: { rate: 1e6, burst: 1e6 } }))
  const [a, b] = apps as [TestApp, TestApp]
  const listener = await historyClient(b)
  t.after(async () => { listener.destroy(); for (const h of apps) await h.close() })
  let n = 0
  await fc.assert(fc.asyncProperty(fc.string({ minLength: 1, maxLength: 255, unit: 'grapheme' }), fc.string({ maxLength: 80, unit: 'grapheme' }), async (room, except) => {
    n++
    await call(listener, 'join', { room })
    const own = [...b.app.realtime.roomMembers(room)][0]?.id
    const skipped = except === own
    a.app.realtime.to(room).send('said', { n }, { except: skipped ? own : except })
    a.app.realtime.to(room).send('said', { n: -n })
    const got = []
    for (;;) {
      const m = await listener.nextMessage(5000)
      if (m.type !== 'said') continue
      got.push(m.data.n)
      if (m.data.n === -n) break
    }
    assert.deepEqual(got, skipped ? [-n] : [n, -n], `room ${JSON.stringify(room)}, except ${JSON.stringify(except)}`)
    await call(listener, 'leave', { room })
  }), { numRuns: 60, seed: 20 })
})
