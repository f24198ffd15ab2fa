// `npm run fuzz [-- runs]`: a million runs of each property (or as many as given). A failing seed is kept in
// fuzz-regressions.json, which `npm test` replays from then on: commit it with the fix.
import { connect } from '../helpers/client.js'
import { startHarness } from './harness.js'
import { decoderProperty, dispatcherProperty, runKept } from './fuzz-properties.js'

const runs = Number(process.argv[2] ?? 1_000_000)
const seed = Date.now() | 0
process.stdout.write(`fuzzing ${runs} runs per property, seed ${seed}\n`)
let started = Date.now()
await runKept('decoder', decoderProperty, runs, seed)
process.stdout.write(`decoder: ${runs} runs clean in ${((Date.now() - started) / 1000).toFixed(1)} s\n`)

const harness = await startHarness({ limits: { rate: 1e9, burst: 1e9 } })
const client = await connect(`${harness.h.wsBase}/rt`, { headers: { authorization: `Bearer ${harness.token('fuzz')}` } })
started = Date.now()
try {
  await runKept('dispatcher', dispatcherProperty(client), runs, seed)
  process.stdout.write(`dispatcher: ${runs} runs clean in ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
  await client.close()
  await harness.check({ registry: [1, 1, 1], handles: harness.snapshot().handles })
} finally {
  client.destroy()
  await harness.close()
}
