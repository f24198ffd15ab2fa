// The fuzzer as part of `npm test`: 10,000 runs of each property, then every kept regression replayed.
import { after, test } from 'node:test'
import fc from 'fast-check'
import { connect, type TestClient } from '../helpers/client.js'
import { startHarness, type Harness } from './harness.js'
import { decoderProperty, dispatcherProperty, readRegressions, runKept } from './fuzz-properties.js'

let harness: Harness | undefined
/**
 * The server, started once the decoder test is over: that one is synchronous (10,000 runs block this process's
 * event loop for seconds), and a canary request caught in that block would count as the server not answering.
 */
async function server (): Promise<Harness> {
  // No rate limit in the way: the fuzzer sends as fast as the loopback allows.
  harness ??= await startHarness({ limits: { rate: 1e9, burst: 1e9 } })
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

test('every kept regression replays clean', { timeout: 60000 }, async () => {
  const client = await fuzzClient()
  try {
    for (const r of await readRegressions()) {
      const property = r.property === 'decoder' ? decoderProperty : dispatcherProperty(client)
      await fc.assert(property as fc.IRawProperty<unknown, boolean>, { seed: r.seed, path: r.path, endOnFailure: true })
    }
  } finally {
    client.destroy()
  }
})
