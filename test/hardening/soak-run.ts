// `npm run soak [-- cycles]`: 20,000 cycles by default; exits non-zero when an invariant does not hold.
import { runChurn } from '../helpers/churn.js'

const cycles = Number(process.argv[2] ?? 20_000)
const r = await runChurn(cycles)
const growth = r.heapAfter - r.heapBefore
process.stdout.write(`${r.cycles} cycles in ${r.seconds.toFixed(1)} s (${Math.round(r.cycles / r.seconds)}/s)\n` +
  `heap after forced GC: ${(r.heapBefore / 1048576).toFixed(2)} MiB → ${(r.heapAfter / 1048576).toFixed(2)} MiB (${(growth / 1024).toFixed(0)} KiB)\n` +
  `registry [connections, users, rooms]: ${JSON.stringify(r.registry)}\nhandles: ${JSON.stringify(r.handlesBefore)} → ${JSON.stringify(r.handlesAfter)}\n` +
  `closes: ${JSON.stringify(r.closes)}\n`)
const ok = r.registry.every((n) => n === 0) && JSON.stringify(r.handlesAfter) === JSON.stringify(r.handlesBefore) && growth < 5 * 1024 * 1024
process.stdout.write(ok ? 'soak: ok\n' : 'soak: FAILED\n')
process.exitCode = ok ? 0 : 1
