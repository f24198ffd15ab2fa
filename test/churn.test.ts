import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runChurn } from './helpers/churn.js'

test('5,000 cycles of clean closes, resets and vanished clients: registry, rooms, users, handles and heap back', { timeout: 120000 }, async (t) => {
  const r = await runChurn(5000)
  t.diagnostic(`heap after forced GC ${(r.heapBefore / 1048576).toFixed(1)} → ${(r.heapAfter / 1048576).toFixed(1)} MiB ` +
    `(${((r.heapAfter - r.heapBefore) / 1024).toFixed(0)} KiB) over ${r.cycles} cycles in ${r.seconds.toFixed(1)} s`)
  assert.deepEqual(r.registry, [0, 0, 0], 'registry, user index and rooms are empty')
  assert.deepEqual(r.handlesAfter, r.handlesBefore, 'no handle is left behind')
  assert.ok(r.heapAfter - r.heapBefore < 5 * 1024 * 1024, `heap grew by ${r.heapAfter - r.heapBefore} bytes`)
  assert.equal(Object.values(r.closes).reduce((a, b) => a + b, 0), 5500, 'every connection closed, warm-up included')
})
