import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runSoak } from './soak.js'

test('churn of 3,000 clean closes, resets and vanished clients: registry empty, handles and heap back', { timeout: 120000 }, async (t) => {
  const r = await runSoak(3000)
  t.diagnostic(`heap ${(r.heapBefore / 1048576).toFixed(1)} → ${(r.heapAfter / 1048576).toFixed(1)} MiB in ${r.seconds.toFixed(1)} s`)
  assert.deepEqual(r.registry, [0, 0, 0])
  assert.deepEqual(r.handlesAfter, r.handlesBefore)
  assert.ok(r.heapAfter - r.heapBefore < 5 * 1024 * 1024, `heap grew by ${r.heapAfter - r.heapBefore} bytes`)
  assert.equal(Object.values(r.closes).reduce((a, b) => a + b, 0), 3500)
})
