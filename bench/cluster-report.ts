// F's table: per setup, medians over the rounds; ratios of the cluster to the single Redis taken within each round.
import os from 'node:os'
import { median } from './workloads.js'
import type { ClusterSizes } from './cluster.js'

/** The two setups F compares: three instances on one Redis, three on a 3-master Redis Cluster. */
export type Setup = 'single' | 'cluster'

/** One setup's slice of one round (round -1 is the warm-up, never reported). CPU figures are µs. */
export interface ClusterRound {
  round: number
  setup: Setup
  /** From the counts read before the publishing to those read after it. */
  seconds: number
  /** Deliveries the members counted within `seconds`. */
  deliveries: number
  /** Requests to publish answered, and what they owe the members (`published × perRoom`). */
  published: number
  expected: number
  /** Deliveries counted once the counts stood still after the slice. */
  delivered: number
  /** Each Redis node's CPU (one for the single Redis, three for the cluster). */
  redisCpu: number[]
  /** The three instances' CPU, summed. */
  instancesCpu: number
  /** The member generators' and the publisher's CPU, summed. */
  generatorsCpu: number
  /** The whole machine's busy CPU (every process, the benchmark's or not), from /proc/stat; NaN off Linux. */
  machineCpu: number
}

/** Per cent of one core. */
const pct = (us: number, seconds: number): number => us / seconds / 1e4
const fmt = (x: number, digits = 2): string => Number.isFinite(x) ? x.toFixed(digits) : '–'
const int = (x: number): string => Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–'

interface Figures { rate: number, nodes: number[], busiest: number, perDelivery: number, instances: number, generators: number, machine: number, delivered: number, redisPerPublish: number, instancesPerPublish: number }

function figures (r: ClusterRound): Figures {
  const nodes = r.redisCpu.map((c) => pct(c, r.seconds))
  return {
    rate: r.deliveries / r.seconds,
    nodes,
    busiest: Math.max(...nodes),
    perDelivery: r.redisCpu.reduce((n, c) => n + c, 0) / r.deliveries,
    instances: pct(r.instancesCpu, r.seconds),
    generators: pct(r.generatorsCpu, r.seconds),
    machine: pct(r.machineCpu, r.seconds),
    redisPerPublish: r.redisCpu.reduce((n, c) => n + c, 0) / r.published,
    instancesPerPublish: r.instancesCpu / r.published,
    delivered: r.expected === 0 ? Number.NaN : r.delivered / r.expected
  }
}

/** `idle`: each Redis node's CPU (% of a core) over two seconds with nothing published, by setup. */
export function clusterTable (rounds: ClusterRound[], sizes: ClusterSizes, idle: Record<Setup, number[]>): { lines: string[], notes: string[] } {
  const of = (setup: Setup): Array<{ round: number, f: Figures }> => rounds.filter((r) => r.setup === setup && r.round >= 0).map((r) => ({ round: r.round, f: figures(r) }))
  const single = of('single')
  const cluster = of('cluster')
  /** The median over the rounds of the cluster's figure over the single Redis's in the same round. */
  const ratio = (pick: (f: Figures) => number): number => median(cluster.flatMap(({ round, f }) => {
    const base = single.find((s) => s.round === round)
    return base === undefined ? [] : [pick(f) / pick(base.f)]
  }))
  const med = (list: Array<{ f: Figures }>, pick: (f: Figures) => number): number => median(list.map(({ f }) => pick(f)))
  const row = (name: string, list: Array<{ f: Figures }>, ratios: boolean): string => {
    const nodes = (list[0]?.f.nodes ?? []).map((_, i) => fmt(med(list, (f) => f.nodes[i] as number), 0)).join(' / ')
    const r = (pick: (f: Figures) => number): string => ratios ? fmt(ratio(pick)) : '1.00'
    return `| ${name} | ${int(med(list, (f) => f.rate))} | ${r((f) => f.rate)} | ${nodes} | ${r((f) => f.busiest)} | ${fmt(med(list, (f) => f.perDelivery))} | ${r((f) => f.perDelivery)} | ${fmt(med(list, (f) => f.instances), 0)} | ${fmt(med(list, (f) => f.generators), 0)} | ${fmt(med(list, (f) => f.machine), 0)} | ${fmt(100 * med(list, (f) => f.delivered), 1)} % |`
  }
  const lines = [
    `F fan-out through Redis: ${sizes.rooms} rooms × ${sizes.perRoom} members over three instances, one Redis against a 3-master cluster (sharded pub/sub);`,
    `${sizes.rounds} rounds of ${sizes.sliceMs / 1000} s per setup, ${sizes.publishConnections} publisher connections per instance × ${sizes.inflight} in flight. Medians over the rounds;`,
    'ratios = the cluster\'s figure / the single Redis\'s in the same round. CPU in % of one core (the machine has ' + String(os.cpus().length) + ').',
    '',
    '| setup | deliveries/s | ratio | Redis CPU per node, % | busiest node ratio | Redis CPU µs/delivery (all nodes) | ratio | instances CPU % (3 summed) | generators CPU % | machine busy % | delivered after drain |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    row('single Redis', single, false),
    row('3-master cluster', cluster, true)
  ]
  const notes: string[] = []
  const rate = ratio((f) => f.rate)
  const singleBusiest = med(single, (f) => f.busiest)
  const instances = med(single, (f) => f.instances)
  const generators = med(single, (f) => f.generators)
  const bound = singleBusiest >= 90
  const redisPerPublish = med(single, (f) => f.redisPerPublish)
  const instancesPerPublish = med(single, (f) => f.instancesPerPublish)
  lines.push('',
    `Redis CPU with nothing published, % of a core: single ${idle.single.map((c) => fmt(c, 1)).join('')}, cluster ${idle.cluster.map((c) => fmt(c, 1)).join(' / ')}.`,
    `Per publish (single Redis, ${sizes.perRoom} deliveries each): Redis ${fmt(redisPerPublish)} µs, the instances ${fmt(instancesPerPublish, 1)} µs (summed): ` +
      `one Redis core would be saturated at ${int(1e6 / redisPerPublish)} publishes/s, with about ${fmt(instancesPerPublish / redisPerPublish, 0)} cores of instances (and their clients' share) driving it.`)
  lines.push('', `Target (issue 16): the cluster's delivery rate ≥ 2× the single Redis's when the single Redis's CPU is the bottleneck: ${fmt(rate)}× — ` +
    (bound
      ? (rate >= 2 ? 'met' : 'short')
      : `not applicable in this run: the single Redis used ${fmt(singleBusiest, 0)} % of a core, the instances ${fmt(instances, 0)} % and the generators ${fmt(generators, 0)} %; ` +
        `the machine was ${fmt(med(single, (f) => f.machine), 0)} % busy of the ${os.cpus().length * 100} % it has`))
  for (const [name, list] of [['single', single], ['cluster', cluster]] as const) {
    const lost = med(list, (f) => f.delivered)
    if (lost < 0.99) notes.push(`F ${name}: only ${fmt(100 * lost, 1)} % of what was published reached its members (publishes failed or members lagged)`)
  }
  return { lines, notes }
}
