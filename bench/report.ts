// From the repeats' raw figures to the table: medians, ratios to raw ws taken within each repeat, the targets.
import { median, type Kind } from './workloads.js'

export type Workload = 'A' | 'B' | 'C' | 'D' | 'E'

/** One figure of one server in one repeat. */
export interface Result { repeat: number, workload: Workload, kind: Kind, value: number, cpu?: number }
export interface Failure { repeat: number, workload: Workload | 'F', kind: Kind, error: string }

export const WORKLOADS: Record<Workload, { title: string, better: 'higher' | 'lower', cpuUnit?: string }> = {
  A: { title: 'A echo, msg/s', better: 'higher', cpuUnit: 'µs/msg' },
  B: { title: 'B fan-out, ms to the last member', better: 'lower', cpuUnit: 'µs/delivery' },
  C: { title: 'C heap, bytes/idle conn', better: 'lower' },
  D: { title: 'D set-up, conn/s', better: 'higher', cpuUnit: 'µs/conn' },
  E: { title: 'E reconnect storm, ms until all joined', better: 'lower', cpuUnit: 'µs/client' }
}

export interface Row {
  workload: Workload
  kind: Kind
  /** Median over the repeats. */
  value: number
  /** Median over the repeats of value / raw ws's value in the same repeat. */
  ratio: number
  ratioMin: number
  ratioMax: number
  /** Median of the server's CPU µs per unit (message, delivery, connection). */
  cpu?: number
  /** Median over the repeats of cpu / raw ws's cpu in the same repeat. */
  cpuRatio?: number
  repeats: number
}

export function summarize (results: Result[]): Row[] {
  const rows: Row[] = []
  for (const workload of Object.keys(WORKLOADS) as Workload[]) {
    const kinds = [...new Set(results.filter((r) => r.workload === workload).map((r) => r.kind))]
    for (const kind of kinds) {
      const mine = results.filter((r) => r.workload === workload && r.kind === kind)
      const baseOf = (r: Result): Result | undefined => results.find((x) => x.workload === workload && x.kind === 'raw-ws' && x.repeat === r.repeat)
      const ratios = mine.flatMap((r) => {
        const base = baseOf(r)
        return base === undefined ? [] : [r.value / base.value]
      })
      const cpuRatios = mine.flatMap((r) => {
        const base = baseOf(r)?.cpu
        return base === undefined || r.cpu === undefined ? [] : [r.cpu / base]
      })
      const cpus = mine.flatMap((r) => r.cpu === undefined ? [] : [r.cpu])
      rows.push({
        workload,
        kind,
        value: median(mine.map((r) => r.value)),
        ratio: median(ratios),
        ratioMin: Math.min(...ratios),
        ratioMax: Math.max(...ratios),
        ...(cpus.length > 0 ? { cpu: median(cpus) } : {}),
        ...(cpuRatios.length > 0 ? { cpuRatio: median(cpuRatios) } : {}),
        repeats: mine.length
      })
    }
  }
  return rows
}

const fmt = (x: number, digits = 2): string => Number.isFinite(x) ? x.toFixed(digits) : '–'
const fmtValue = (x: number): string => !Number.isFinite(x) ? '–' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1)

export function table (rows: Row[]): string[] {
  const lines = ['| workload | server | median | ratio to raw ws | ratio range | server CPU | CPU ratio to raw ws |', '| --- | --- | ---: | ---: | ---: | ---: | ---: |']
  for (const r of rows) {
    const meta = WORKLOADS[r.workload]
    const range = r.repeats > 1 && Number.isFinite(r.ratioMin) ? `${fmt(r.ratioMin)}–${fmt(r.ratioMax)}` : ''
    const cpu = r.cpu === undefined ? '' : `${fmt(r.cpu, r.cpu < 10 ? 2 : 1)} ${meta.cpuUnit ?? ''}`
    lines.push(`| ${meta.title} | ${r.kind} | ${fmtValue(r.value)} | ${fmt(r.ratio)} | ${range} | ${cpu} | ${r.cpuRatio === undefined ? '' : fmt(r.cpuRatio)} |`)
  }
  return lines
}

export interface Target { name: string, figure: number, limit: number, met: boolean, text: string }

/** The targets fastify-realtime is profiled against (the lead's, issue 7). */
export function targets (rows: Row[], results: Result[]): Target[] {
  const ratio = (w: Workload): number | undefined => rows.find((r) => r.workload === w && r.kind === 'realtime')?.ratio
  const list: Target[] = []
  const add = (name: string, figure: number | undefined, limit: number, atLeast: boolean, unit: string): void => {
    if (figure === undefined || !Number.isFinite(figure)) return
    const met = atLeast ? figure >= limit : figure <= limit
    list.push({ name, figure, limit, met, text: `${name}: ${fmt(figure)}${unit} (target ${atLeast ? '≥' : '≤'} ${limit}) — ${met ? 'met' : 'short'}` })
  }
  add('A echo, ratio to raw ws', ratio('A'), 0.8, true, '')
  add('B fan-out, ratio to raw ws', ratio('B'), 1.05, false, '')
  // socket.io's time over fastify-realtime's, within each repeat.
  const faster = results.filter((r) => r.workload === 'B' && r.kind === 'realtime').flatMap((r) => {
    const io = results.find((x) => x.workload === 'B' && x.kind === 'socket.io' && x.repeat === r.repeat)
    return io === undefined ? [] : [io.value / r.value]
  })
  add('B fan-out, times faster than socket.io', faster.length > 0 ? median(faster) : undefined, 1.6, true, '×')
  // Metrics and a tracing subscriber on, over the same server without them, within each repeat.
  const observed = results.filter((r) => r.workload === 'A' && r.kind === 'realtime-observed').flatMap((r) => {
    const plain = results.find((x) => x.workload === 'A' && x.kind === 'realtime' && x.repeat === r.repeat)
    return plain === undefined ? [] : [r.value / plain.value]
  })
  add('A echo with metrics and tracing, ratio to realtime without', observed.length > 0 ? median(observed) : undefined, 0.95, true, '')
  add('C heap, ratio to raw ws', ratio('C'), 2.4, false, '')
  add('D set-up, ratio to raw ws', ratio('D'), 0.75, true, '')
  // A history room's fan-out over a plain room's, within each repeat (issue 12).
  const history = results.filter((r) => r.workload === 'B' && r.kind === 'realtime-history').flatMap((r) => {
    const plain = results.find((x) => x.workload === 'B' && x.kind === 'realtime' && x.repeat === r.repeat)
    return plain === undefined ? [] : [r.value / plain.value]
  })
  add('B fan-out, history room over plain room', history.length > 0 ? median(history) : undefined, 1.3, false, '×')
  add('E reconnect storm, ms until every client recovered', rows.find((r) => r.workload === 'E' && r.kind === 'realtime-history')?.value, 2000, false, ' ms')
  return list
}
