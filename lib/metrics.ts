// fastify-realtime/metrics: Prometheus metrics in the app's prom-client Registry. A separate entry, so that only apps
// that use it load it. It imports nothing from prom-client: it registers collectors in the registry the app passes,
// which read the plugin's counters when the registry is scraped (prom-client 15, or fastify-metrics 12's
// `app.metrics.client.register`).
import { HANDLER_BUCKETS, LATENCY_BUCKETS, type Buckets, type InstanceMeter, type MeterBuckets, type MeterSource, type RealtimeMetrics } from './meter.js'
import type { RealtimeStats } from './stats.js'
import { CloseCode } from './protocol/codes.js'

export type { RealtimeMetrics } from './meter.js'

/** The part of a prom-client `Registry` the collectors use. */
export interface MetricsRegistry {
  registerMetric: (metric: any) => void
  removeSingleMetric: (name: string) => void
  getSingleMetric: (name: string) => unknown
}

/** Options of `realtimeMetrics()`. */
export interface RealtimeMetricsOptions {
  /**
   * The prom-client `Registry` to register in: your own `new Registry()`, prom-client's global `register`, or
   * fastify-metrics' `app.metrics.client.register`.
   * @default `client.register`
   */
  registry?: MetricsRegistry
  /** A prom-client module whose global registry to use, such as fastify-metrics' `app.metrics.client`. */
  client?: { register: MetricsRegistry }
  /**
   * Starts every metric's name.
   * @default 'fastify_realtime_'
   */
  prefix?: string
  /**
   * Histogram upper bounds, in seconds: `handler` (handler duration), `ping` (heartbeat round trip), `lag` (Redis
   * publish to delivery).
   * @default handler 0.1 ms to 10 s, ping and lag 0.5 ms to 10 s
   */
  buckets?: Partial<MeterBuckets>
}

type Labels = Record<string, string | number>
interface Sample { labels: Labels, value: number, metricName?: string }
type Read = (meter: InstanceMeter, stats: RealtimeStats) => Sample[]

/**
 * One metric, as a prom-client registry reads it: `get()` returns its values, computed from the counters at that
 * moment. prom-client's own classes keep their values in label-hashed maps that every increment would have to go
 * through; these keep nothing.
 */
class Collector {
  readonly aggregator = 'sum'
  constructor (public name: string, readonly help: string, readonly type: 'counter' | 'gauge' | 'histogram',
    readonly labelNames: readonly string[], private readonly values: () => Sample[]) {}

  async get (): Promise<{ name: string, help: string, type: string, values: Sample[], aggregator: string }> {
    return { name: this.name, help: this.help, type: this.type, values: this.values(), aggregator: this.aggregator }
  }

  /** `registry.resetMetrics()`: the counters belong to the plugin, and a Prometheus counter never goes back. */
  reset (): void {}
}

/** Prometheus histogram samples (cumulative `_bucket`s with `le`, `_sum`, `_count`) from a meter's counts. */
function histogram (name: string, labels: Labels, buckets: Buckets, out: Sample[]): void {
  let cumulative = 0
  buckets.bounds.forEach((bound, i) => {
    cumulative += buckets.counts[i] as number
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bound }, value: cumulative })
  })
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: buckets.count })
  out.push({ metricName: `${name}_sum`, labels, value: buckets.sum })
  out.push({ metricName: `${name}_count`, labels, value: buckets.count })
}

const byKey = (table: Record<string, number>, label: string, extra: Labels = {}): Sample[] =>
  Object.entries(table).map(([key, value]) => ({ labels: { ...extra, [label]: key }, value }))

/** Every metric: name (after the prefix), help, type, labels, and how to read it. docs/08-observability.md lists the same. */
function definitions (prefix: string): Array<[string, string, 'counter' | 'gauge' | 'histogram', string[], Read]> {
  return [
    ['connections', 'Open connections, by transport (websocket, or stream: the HTTP-streaming fallback)', 'gauge', ['route', 'transport'],
      (m) => m.routes.flatMap((r) => [{ labels: { route: r.route, transport: 'websocket' }, value: r.open - r.openStreams }, { labels: { route: r.route, transport: 'stream' }, value: r.openStreams }])],
    ['users', 'Distinct users with an open connection on this instance', 'gauge', [], (_m, s) => [{ labels: {}, value: s.users }]],
    ['rooms', 'Rooms with a member on this instance', 'gauge', [], (_m, s) => [{ labels: {}, value: s.rooms }]],
    ['room_states', 'Per-room state held on this instance: history and presence rooms with a life here, in-memory history metas', 'gauge', ['kind'],
      (_m, s) => [{ labels: { kind: 'history' }, value: s.roomStates.history }, { labels: { kind: 'presence' }, value: s.roomStates.presence }, { labels: { kind: 'history_metas' }, value: s.roomStates.historyMetas }]],
    ['handshakes_total', 'Upgrade requests (transport websocket) and the fallback\'s stream requests (stream) by outcome: 101 or 200 (opened) or the refusal code', 'counter', ['route', 'transport', 'outcome'],
      (m) => m.routes.flatMap((r) => [...byKey(r.handshakes, 'outcome', { route: r.route, transport: 'websocket' }), ...byKey(r.streamHandshakes, 'outcome', { route: r.route, transport: 'stream' })])],
    ['stream_batches_total', 'Batches POSTed to the HTTP-streaming fallback by outcome: handled, duplicate (a retry, acknowledged again), or the refusal code', 'counter', ['route', 'outcome'],
      (m) => m.routes.flatMap((r) => byKey(r.batches, 'outcome', { route: r.route }))],
    ['messages_received_total', 'Messages received, by type (a declared or reserved type, or unknown)', 'counter', ['route', 'type'],
      (m) => m.routes.flatMap((r) => [...r.types.values()].map((t) => ({ labels: { route: r.route, type: t.type }, value: t.in })))],
    ['messages_sent_total', 'Messages sent, by type (reply, error, pong, a declared event, binary, the protocol\'s rt.* frames, or unknown)', 'counter', ['route', 'type'],
      (m) => m.routes.flatMap((r) => [...r.types.values()].map((t) => ({ labels: { route: r.route, type: t.type }, value: t.out })))],
    ['received_bytes_total', 'Bytes of message payloads received', 'counter', ['route'],
      (m) => m.routes.map((r) => ({ labels: { route: r.route }, value: r.bytesIn }))],
    ['sent_bytes_total', 'Bytes of message payloads sent', 'counter', ['route'],
      (m) => m.routes.map((r) => ({ labels: { route: r.route }, value: r.bytesOut }))],
    ['handler_duration_seconds', 'Time from a handler\'s start to its result, by message type', 'histogram', ['route', 'type'], (m) => {
      const out: Sample[] = []
      for (const r of m.routes) {
        for (const t of r.types.values()) if (t.duration.count > 0) histogram(`${prefix}handler_duration_seconds`, { route: r.route, type: t.type }, t.duration, out)
      }
      return out
    }],
    ['errors_sent_total', 'Error envelopes sent, by the type they answer and their code', 'counter', ['route', 'type', 'code'],
      (m) => m.routes.flatMap((r) => [...r.types.values()].flatMap((t) => byKey(t.errors, 'code', { route: r.route, type: t.type })))],
    ['closes_total', 'Closed connections by close code (1006: no close frame)', 'counter', ['code'], (_m, s) => byKey(s.closes, 'code')],
    ['server_closes_total', 'Connections the server closed, by the code it chose', 'counter', ['code'], (m) => byKey(m.serverCloses, 'code')],
    ['slow_consumer_closes_total', `Connections closed with ${CloseCode.SLOW_CONSUMER} for reading too slowly`, 'counter', [],
      (m) => [{ labels: {}, value: m.serverCloses[CloseCode.SLOW_CONSUMER] ?? 0 }]],
    ['slow_consumer_drops_total', 'Messages not sent because the connection\'s backlog was full', 'counter', [],
      (_m, s) => [{ labels: {}, value: s.dropped }]],
    ['heartbeat_terminations_total', 'Connections terminated for not answering the heartbeat', 'counter', [],
      (m) => [{ labels: {}, value: m.heartbeatTerminations }]],
    ['ping_rtt_seconds', 'Round trip of the heartbeat\'s pings', 'histogram', [], (m) => {
      const out: Sample[] = []
      histogram(`${prefix}ping_rtt_seconds`, {}, m.pingRtt, out)
      return out
    }],
    ['fanouts_total', 'Fan-outs published from this instance, by target (room, user, all)', 'counter', ['target'], (m) => byKey(m.fanouts, 'target')],
    ['broker_publishes_total', 'Fan-outs the broker handed to the other instances (Redis answered), history rooms\' included', 'counter', [],
      (m) => [{ labels: {}, value: m.brokerPublishes }]],
    ['broker_publish_failures_total', 'Fan-outs that could not reach the other instances', 'counter', [],
      (_m, s) => [{ labels: {}, value: s.brokerFailures }]],
    ['broker_lag_seconds', 'From a publish to its arrival here through the broker (Redis): other instances\' fan-outs, and every history room event; across hosts, as exact as their clocks', 'histogram', [], (m) => {
      const out: Sample[] = []
      histogram(`${prefix}broker_lag_seconds`, {}, m.brokerLag, out)
      return out
    }],
    ['recoveries_total', 'Joins of history rooms that resumed from a position: recovered="true", or "false" with the reason', 'counter', ['recovered', 'reason'],
      (_m, s) => Object.entries(s.recoveries).map(([key, value]) => ({ labels: key === 'recovered' ? { recovered: 'true', reason: '' } : { recovered: 'false', reason: key }, value }))],
    ['presence_diffs_total', 'Presence diffs (a change of a room\'s member list: joins, leaves, updates) this instance received', 'counter', [],
      (_m, s) => [{ labels: {}, value: s.presenceDiffs }]]
  ]
}

/**
 * Prometheus metrics for `app.register(realtime, { metrics: realtimeMetrics({ registry }) })`. Serve the registry
 * yourself (`registry.metrics()`) or through fastify-metrics; docs/08-observability.md lists every metric.
 */
export function realtimeMetrics (options: RealtimeMetricsOptions): RealtimeMetrics {
  const registry = options.registry ?? options.client?.register
  if (registry === undefined || typeof registry.registerMetric !== 'function') {
    throw new TypeError('realtimeMetrics: pass { registry } (a prom-client Registry) or { client } (prom-client, or app.metrics.client)')
  }
  const prefix = options.prefix ?? 'fastify_realtime_'
  const buckets: MeterBuckets = {
    handler: [...options.buckets?.handler ?? HANDLER_BUCKETS].sort((a, b) => a - b),
    ping: [...options.buckets?.ping ?? LATENCY_BUCKETS].sort((a, b) => a - b),
    lag: [...options.buckets?.lag ?? LATENCY_BUCKETS].sort((a, b) => a - b)
  }
  const registered: Array<[string, Collector]> = []
  return {
    buckets,
    start ({ meter, stats }: MeterSource) {
      for (const [name, help, type, labels, read] of definitions(prefix)) {
        const collector = new Collector(`${prefix}${name}`, help, type, labels, () => read(meter, stats()))
        registry.registerMetric(collector)
        // By its name now: an OpenMetrics registry renames counters (drops `_total`) when it serializes them.
        registered.push([collector.name, collector])
      }
    },
    stop () {
      for (const [name, collector] of registered.splice(0)) {
        if (registry.getSingleMetric(name) === collector) registry.removeSingleMetric(name)
      }
    }
  }
}
