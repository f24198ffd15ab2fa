// From the repeats' raw figures to the table: medians, ratios to raw ws taken within each repeat, the targets.
import { median, type Kind } from './workloads.js'

export type Workload = 'A' | 'B' | 'C' | 'D' | 'E' | 'G-echo' | 'G-fanout'

/** One figure of one server in one repeat. */
export interface Result { repeat: number, workload: Workload, kind: Kind, value: number, cpu?: number, perBatch?: number }
export interface Failure { repeat: number, workload: Workload | 'F' | 'P', kind: Kind, error: string }

export const WORKLOADS: Record<Workload, { title: string, better: 'higher' | 'lower', cpuUnit?: string }> = {
  A: { title: 'A echo, msg/s', better: 'higher', cpuUnit: 'µs/msg' },
  B: { title: 'B fan-out, ms to the last member', better: 'lower', cpuUnit: 'µs/delivery' },
  C: { title: 'C heap, bytes/idle conn', better: 'lower' },
  D: { title: 'D set-up, conn/s', better: 'higher', cpuUnit: 'µs/conn' },
  E: { title: 'E reconnect storm, ms until all joined', better: 'lower', cpuUnit: 'µs/client' },
  // G: the HTTP-streaming fallback (realtime-stream) and socket.io's long-polling beside the WebSocket servers.
  'G-echo': { title: 'G echo (fallback), msg/s', better: 'higher', cpuUnit: 'µs/msg' },
  'G-fanout': { title: 'G fan-out (fallback), ms to the last member', better: 'lower', cpuUnit: 'µs/delivery' }
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
  /** G's echo over the fallback: the median of the messages a POSTed batch carried. */
  perBatch?: number
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
      const perBatch = mine.flatMap((r) => r.perBatch === undefined ? [] : [r.perBatch])
      rows.push({
        workload,
        kind,
        value: median(mine.map((r) => r.value)),
        ratio: median(ratios),
        ratioMin: Math.min(...ratios),
        ratioMax: Math.max(...ratios),
        ...(cpus.length > 0 ? { cpu: median(cpus) } : {}),
        ...(cpuRatios.length > 0 ? { cpuRatio: median(cpuRatios) } : {}),
        ...(perBatch.length > 0 ? { perBatch: median(perBatch) } : {}),
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
    const kind = r.perBatch === undefined ? r.kind : `${r.kind} (${fmt(r.perBatch, 1)} msg/batch)`
    lines.push(`| ${meta.title} | ${kind} | ${fmtValue(r.value)} | ${fmt(r.ratio)} | ${range} | ${cpu} | ${r.cpuRatio === undefined ? '' : fmt(r.cpuRatio)} |`)
  }
  return lines
}

export interface Target { name: string, figure: number, limit: number, met: boolean, text: string }

/**
 * The targets fastify-realtime is profiled against (issue 23's: what is off costs nothing, set-up and fan-out at raw
 * ws's speed, nothing per socket over @fastify/websocket's own). A and B are read by the server's CPU per unit
 * where the issue says so: the fairest figure of what the server itself costs on a machine the generators share.
 */
export function targets (rows: Row[], results: Result[]): Target[] {
  const row = (w: Workload, kind: Kind = 'realtime'): Row | undefined => rows.find((r) => r.workload === w && r.kind === kind)
  const list: Target[] = []
  const add = (name: string, figure: number | undefined, limit: number, atLeast: boolean, unit: string): void => {
    if (figure === undefined || !Number.isFinite(figure)) return
    const met = atLeast ? figure >= limit : figure <= limit
    list.push({ name, figure, limit, met, text: `${name}: ${fmt(figure)}${unit} (target ${atLeast ? '≥' : '≤'} ${limit}) — ${met ? 'met' : 'short'}` })
  }
  /** Within each repeat, `kind`'s figure over `base`'s in workload `w` (value or CPU), then the median. */
  const within = (w: Workload, kind: Kind, base: Kind, of: 'value' | 'cpu' = 'value'): number | undefined => {
    const ratios = results.filter((r) => r.workload === w && r.kind === kind).flatMap((r) => {
      const b = results.find((x) => x.workload === w && x.kind === base && x.repeat === r.repeat)
      const top = r[of]
      const bottom = b?.[of]
      return top === undefined || bottom === undefined || bottom === 0 ? [] : [top / bottom]
    })
    return ratios.length > 0 ? median(ratios) : undefined
  }
  add('A echo, server CPU per message, ratio to raw ws (metrics off)', row('A')?.cpuRatio, 0.75, false, '')
  add('A echo with metrics and tracing, server CPU per message, ratio to raw ws', row('A', 'realtime-observed')?.cpuRatio, 0.8, false, '')
  add('A echo with metrics and tracing, throughput over realtime without', within('A', 'realtime-observed', 'realtime'), 0.95, true, '')
  add('B fan-out, ratio to raw ws', row('B')?.ratio, 0.85, false, '')
  // socket.io's time over fastify-realtime's, within each repeat.
  add('B fan-out, times faster than socket.io', within('B', 'socket.io', 'realtime'), 1.6, true, '×')
  // A history room's fan-out over a plain room's, within each repeat (issue 12).
  add('B fan-out, history room over plain room', within('B', 'realtime-history', 'realtime'), 1.3, false, '×')
  add('C heap, ratio to raw ws', row('C')?.ratio, 2.0, false, '')
  add('D set-up, ratio to raw ws', row('D')?.ratio, 0.9, true, '')
  // The same JWT check through the app's @fastify/jwt, in @fastify/websocket's own preValidation, within each repeat.
  add('D set-up, over fastify-ws with the same JWT check', within('D', 'realtime', 'fastify-ws'), 1.0, true, '×')
  add('E reconnect storm, ms until every client recovered', row('E', 'realtime-history')?.value, 2000, false, ' ms')
  // Issue 24: the fallback's echo throughput over socket.io's long-polling, within each repeat.
  add('G echo, fallback (HTTP streaming) over socket.io long-polling', within('G-echo', 'realtime-stream', 'socket.io-polling'), 1.5, true, '×')
  return list
}
