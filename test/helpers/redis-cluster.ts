// A real Redis Cluster of the tests' own: `masters` masters with `replicas` replicas each, `redis-server
// --cluster-enabled yes` on free ports of 127.0.0.1, joined with `redis-cli --cluster create`. Nothing on disk
// outlives it (its node files live in a temporary folder removed by stop()).
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { startRedisServer, type RedisServer } from './redis-server.js'

const run = promisify(execFile)

export interface RedisClusterNode extends RedisServer {
  /** Kills the server at once, as a crashed machine would (no shutdown, no failover handed over). */
  kill: () => void
}

export interface TestRedisCluster {
  nodes: Array<{ host: string, port: number }>
  servers: RedisClusterNode[]
  /** The master serving `slot` right now. */
  masterOf: (slot: number) => Promise<number>
  /** Resolves once every live node reports cluster_state:ok and `slot` is served by a master that answers. */
  waitHealthy: (timeout?: number) => Promise<void>
  stop: () => Promise<void>
}

async function cli (port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 })
  return stdout
}

export async function startRedisCluster ({ masters = 3, replicas = 1, nodeTimeout = 1000 } = {}): Promise<TestRedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'rt-redis-cluster-'))
  const servers: RedisClusterNode[] = []
  const killed = new Set<number>()
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const server = await startRedisServer(['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`,
        '--cluster-node-timeout', String(nodeTimeout), '--dir', dir, '--cluster-require-full-coverage', 'no'])
      servers.push({ ...server, kill: () => { killed.add(server.port); server.stop(true).catch(() => {}) } })
    }
    await run('redis-cli', ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 30_000 })
  } catch (err) {
    await Promise.all(servers.map(async (s) => { await s.stop() }))
    await rm(dir, { recursive: true, force: true })
    throw err
  }
  const live = (): RedisClusterNode[] => servers.filter((s) => !killed.has(s.port))
  const cluster: TestRedisCluster = {
    nodes: servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
    servers,
    async masterOf (slot) {
      const node = live()[0]
      if (node === undefined) throw new Error('no live node')
      const redis = new Redis(node.port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 })
      try {
        await redis.connect()
        const slots = await redis.cluster('SLOTS') as unknown as Array<[number, number, [string, number]]>
        const range = slots.find(([from, to]) => slot >= from && slot <= to)
        if (range === undefined) throw new Error(`slot ${slot} is not served`)
        return range[2][1]
      } finally {
        redis.disconnect()
      }
    },
    async waitHealthy (timeout = 20_000) {
      const deadline = Date.now() + timeout
      for (;;) {
        const states = await Promise.all(live().map(async (s) => await cli(s.port, 'cluster', 'info').catch(() => '')))
        if (states.every((info) => info.includes('cluster_state:ok'))) return
        if (Date.now() > deadline) throw new Error(`the cluster did not become healthy within ${timeout} ms`)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    },
    async stop () {
      await Promise.all(servers.map(async (s) => { await s.stop() }))
      await rm(dir, { recursive: true, force: true })
    }
  }
  await cluster.waitHealthy()
  // cluster_state:ok only says every slot has a master: a failover also needs every replica attached and in sync.
  const deadline = Date.now() + 20_000
  for (;;) {
    const infos = await Promise.all(servers.map(async (s) => await cli(s.port, 'info', 'replication').catch(() => '')))
    const synced = infos.filter((info) => info.includes('role:slave') && info.includes('master_link_status:up')).length
    if (synced === masters * replicas) break
    if (Date.now() > deadline) throw new Error(`only ${synced} of ${masters * replicas} replicas attached within 20 s`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return cluster
}
