import type { RealtimeStats } from './stats.js'

/**
 * The counters kept for metrics, only when the app asked for metrics (`metrics: realtimeMetrics(...)`): plain numbers
 * bumped on the hot path through slots resolved at registration, read by the collectors of `./metrics.ts` at scrape
 * time. Without metrics none of this exists, and the hot path pays one `undefined` check per message.
 */

/** Seconds a handler may take, from 0.1 ms to 10 s. */
export const HANDLER_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** Seconds of a heartbeat ping's round trip, and of a Redis fan-out from publish to delivery. */
export const LATENCY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** A histogram's counts: one slot per upper bound plus `+Inf`, not cumulative (the collector adds them up). */
export class Buckets {
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor (readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe (value: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    this.counts[i] = (this.counts[i] as number) + 1
    this.sum += value
    this.count++
  }
}

/** The counters of one message type of one route (`type` is a declared type, a reserved one, or `unknown`). */
export class TypeMeter {
  /** Messages received. */
  in = 0
  /** Messages sent (replies, errors, pongs and events are types of their own). */
  out = 0
  /** Error envelopes sent in answer to this type, by code. */
  readonly errors: Record<string, number> = Object.create(null)
  readonly duration: Buckets

  constructor (readonly type: string, buckets: readonly number[]) {
    this.duration = new Buckets(buckets)
  }
}

/** Label of messages whose type is not declared (or could not be read). */
export const UNKNOWN = 'unknown'

/** The counters of one route, labelled by its full path. */
export class RouteMeter {
  /** Open connections, of both transports. */
  open = 0
  /** Open connections of the HTTP-streaming fallback (counted in `open` too). */
  openStreams = 0
  bytesIn = 0
  bytesOut = 0
  /** Handshakes by outcome: `'101'` or the refusal's code. */
  readonly handshakes: Record<string, number> = Object.create(null)
  /** The fallback's stream requests by outcome: `'200'` or the refusal's code. */
  readonly streamHandshakes: Record<string, number> = Object.create(null)
  /** The fallback's POSTed batches by outcome: `handled`, `duplicate`, or the refusal's code. */
  readonly batches: Record<string, number> = Object.create(null)
  readonly types = new Map<string, TypeMeter>()
  readonly unknown: TypeMeter
  readonly binary: TypeMeter

  constructor (readonly route: string, declared: Iterable<string>, buckets: readonly number[]) {
    for (const type of [...declared, 'ping', 'pong', 'auth.refresh', 'reply', 'error', 'binary', 'rt.resume', 'rt.position', 'rt.presence', 'rt.presence.diff', 'rt.presence.left', UNKNOWN]) {
      if (!this.types.has(type)) this.types.set(type, new TypeMeter(type, buckets))
    }
    this.unknown = this.types.get(UNKNOWN) as TypeMeter
    this.binary = this.types.get('binary') as TypeMeter
  }

  /** The slot of a type; a type the route does not declare counts as `unknown`, so a client cannot add labels. */
  type (type: string): TypeMeter {
    return this.types.get(type) ?? this.unknown
  }
}

/** Histogram bounds, in seconds. */
export interface MeterBuckets {
  handler: readonly number[]
  ping: readonly number[]
  lag: readonly number[]
}

/** The counters of the whole instance, beside the registry's own (`stats()`), and every route's. */
export class InstanceMeter {
  readonly routes: RouteMeter[] = []
  /** Closes the server chose (its close code, or the code ws closed a protocol error with), by code. */
  readonly serverCloses: Record<string, number> = Object.create(null)
  heartbeatTerminations = 0
  /** `performance.now()` when the last heartbeat sweep pinged. */
  pingedAt = 0
  readonly pingRtt: Buckets
  /** Fan-outs published from this instance, by target kind. */
  readonly fanouts: Record<string, number> = Object.create(null)
  /** Publishes the broker confirmed (Redis answered), history rooms' appends included. */
  brokerPublishes = 0
  /** Seconds from a publish to its arrival here through the broker (Redis): other instances' fan-outs, every history event. */
  readonly brokerLag: Buckets
  // Recoveries and presence diffs are counted in the registry's own counters (stats()), which the metrics read.

  constructor (readonly buckets: MeterBuckets) {
    this.pingRtt = new Buckets(buckets.ping)
    this.brokerLag = new Buckets(buckets.lag)
  }

  /** A route's meter, made once at registration with a slot for every type it declares. */
  route (path: string, declared: Iterable<string>): RouteMeter {
    const meter = new RouteMeter(path, declared, this.buckets.handler)
    this.routes.push(meter)
    return meter
  }
}

/** What the plugin hands its metrics when it starts. */
export interface MeterSource {
  meter: InstanceMeter
  /** The registry's own counters and sizes (`app.realtime.stats()`). */
  stats: () => RealtimeStats
}

/**
 * The `metrics` option: what `realtimeMetrics()` from `fastify-realtime/metrics` returns. The plugin keeps the
 * counters; this registers collectors that read them at scrape time.
 */
export interface RealtimeMetrics {
  readonly buckets: MeterBuckets
  /** Registers the collectors; called once when the plugin starts. */
  start: (source: MeterSource) => void
  /** Removes them again; called from `app.close()`. */
  stop: () => void
}
