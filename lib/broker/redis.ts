import { randomUUID } from 'node:crypto'
import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { Broker, BrokerNode, Delivery, Target } from './types.js'
import { NUMBERED, NUMBERED_V2, decodeMessage, decodeNumbered, encodeMessage } from './redis-codec.js'
import { RedisHealth, type Fault } from './redis-health.js'
import { ANSWER, REQUEST, RedisRequests } from './redis-requests.js'
import { RedisPresence } from './redis-presence.js'
import { RedisHistoryStore } from '../history/redis.js'
import { RedisPresenceStore } from '../presence/redis.js'
import { RedisIdempotencyStore } from '../idempotency/redis.js'
import { hashTag, unescapeName } from '../redis-tag.js'
import { settleWithin, withDeadline } from '../deadline.js'

/**
 * An ioredis client, `new Redis(…)` or `new Cluster(…)`, typed by shape: the package's declarations name no ioredis
 * type, so an app's strict build never compiles ioredis's own declarations through them (those of ioredis 6 import
 * `redis-errors`, which has none: TS7016), and ioredis 5 and 6 both fit.
 */
export interface IoredisClient {
  duplicate: (...args: any[]) => unknown
  readonly status: string
}

/** A Redis Cluster node as ioredis takes it: `'host:port'`, a port, or `{ host, port }`. */
export type RedisClusterNode = string | number | { host?: string, port?: number }

/** Where the broker's Redis is: a URL, the app's own client (a `Redis` or a `Cluster`), or a Redis Cluster's nodes. */
export type RedisConnectionOptions =
  | { url: string, client?: never, cluster?: never }
  | { client: IoredisClient, url?: never, cluster?: never }
  /** `options`: ioredis's `ClusterOptions`. */
  | { cluster: { nodes: RedisClusterNode[], options?: Record<string, any> }, url?: never, client?: never }

/** Options of `redisBroker()`. */
export type RedisBrokerOptions = RedisConnectionOptions & {
  /**
   * On a Redis Cluster: room and user channels use sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7+), so each
   * channel lives on the shard that owns its slot and fan-out traffic spreads over the masters; `false` uses classic
   * pub/sub, which every node of the cluster relays to every other. Ignored without a cluster.
   * @default true
   */
  sharded?: boolean
  /**
   * Every channel and key starts with it; instances that share rooms share it. It must contain neither `{` nor `}`:
   * on a cluster, the room's hash tag must be the first braces of each key.
   * @default 'rt:'
   */
  prefix?: string
  /**
   * Seconds a crashed instance's members still count in `roomSize` and `online`; each instance refreshes its own
   * entries every third of it. (Not the presence feature's `presence.ttl`.)
   * @default 30
   */
  onlineTtl?: number
  /** @deprecated the old name of `onlineTtl` (too close to `presence.ttl`); warns once. */
  presenceTtl?: number
  /**
   * Bytes of publishes sent and not yet answered by Redis past which further publishes fail (and are counted)
   * instead of piling up: a Redis that keeps the connection open but stops answering cannot grow memory without bound.
   * @default 16777216 (16 MiB)
   */
  maxPendingBytes?: number
}

/** The first byte of a presence diff on a room's channel (see lib/presence/redis-scripts.ts). */
const PRESENCE_DIFF = 3

/**
 * How long `close()` waits for Redis in all (removing this instance's counts, then QUIT) before it drops the
 * connections: a stalled Redis adds at most this to `app.close()`, past `shutdown.timeout`.
 */
const CLOSE_TIMEOUT = 500

/** How long `roomSize` and `online` wait for Redis before they reject (a `DeadlineError`). */
const COUNT_TIMEOUT = 5000

type Client = Redis | Cluster

async function closeConnection (client: Client, until: number): Promise<void> {
  // A cluster's QUIT goes to every node, a dead one's included, whose connection would keep reconnecting to
  // deliver it: a cluster client is disconnected at once (its writes were answered or counted before this).
  if (client.status === 'ready' && !client.isCluster) await settleWithin(client.quit(), Math.max(0, until - Date.now()))
  if (client instanceof Cluster) {
    // ioredis re-arms its periodic slots refresh (`slotsRefreshInterval`) when a refresh still in flight at
    // disconnect() ends, and then forever, which keeps the process alive after app.close(): end that chain.
    (client as unknown as { refreshSlotsCache: () => void }).refreshSlotsCache = () => {}
  }
  client.disconnect()
}

let warnedPresenceTtl = false

/** `onlineTtl`, or its deprecated name `presenceTtl` (a warning, once per process); both at once is a mistake. */
function onlineTtlOf (options: RedisBrokerOptions): number {
  const { onlineTtl, presenceTtl } = options
  if (presenceTtl === undefined) return onlineTtl ?? 30
  if (onlineTtl !== undefined) throw new Error('redis broker: onlineTtl and its old name presenceTtl are both set; keep onlineTtl')
  if (!warnedPresenceTtl) {
    warnedPresenceTtl = true
    process.emitWarning('redisBroker({ presenceTtl }) is deprecated: it is now onlineTtl (the presence feature has its own presence.ttl)', 'DeprecationWarning', 'RT_DEP_PRESENCE_TTL')
  }
  return presenceTtl
}

/** Where the broker tried to connect, for an error: the URL without its password, or the cluster's nodes. */
function describeTarget (options: RedisConnectionOptions): string {
  if (options.cluster !== undefined) {
    return `the cluster nodes ${options.cluster.nodes.map((n) => typeof n === 'object' ? `${n.host ?? 'localhost'}:${n.port ?? 6379}` : String(n)).join(', ')}`
  }
  if (options.url === undefined) return 'the app\'s client\'s server'
  try {
    const url = new URL(options.url)
    if (url.password !== '') url.password = '***'
    return url.href
  } catch {
    return 'a URL that does not parse'
  }
}

/**
 * Fan-outs across instances on Redis pub/sub. Each instance subscribes to a room's or user's channel only while it
 * has members there, and to one channel for broadcasts. A message carries the publisher's id (so it skips its own
 * members, who were served locally), the `except` connection id, and the frame's bytes as encoded once by the
 * publisher: receivers forward them without decoding.
 *
 * With `{ url }` the broker opens (and at `app.close()` closes) two connections; with `{ client }` it duplicates
 * the app's client twice and leaves the app's own connection open.
 */
export function redisBroker (options: RedisBrokerOptions): Broker {
  const prefix = options.prefix ?? 'rt:'
  if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
    throw new TypeError(`redisBroker: the prefix option must be a string without "{" or "}" (on a Redis Cluster the room's hash tag must be the first braces of each key), got ${JSON.stringify(prefix)}`)
  }
  const maxPending = options.maxPendingBytes ?? 16 * 1024 * 1024
  const instanceId = randomUUID()
  // The publisher fails at once while Redis is away (no offline queue) and drops what was in flight when the
  // connection broke (no retry): a fan-out crosses at most once, never replayed after an outage; failures are counted.
  const pubOptions: RedisOptions = { enableOfflineQueue: false, maxRetriesPerRequest: 0, connectionName: `${prefix}pub`, lazyConnect: true }
  // The subscriber keeps the SUBSCRIBEs and UNSUBSCRIBEs of an outage of any length, in order; once Redis is back
  // ioredis resubscribes what it had and then sends them, so its channels match the local members again. (Set
  // explicitly: a duplicate inherits the app's client's options.)
  const subOptions: RedisOptions = {
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
    autoResubscribe: true,
    autoResendUnfulfilledCommands: true,
    connectionName: `${prefix}sub`,
    lazyConnect: true
  }
  const { pub, sub, cluster } = connect(options, pubOptions, subOptions, options.sharded !== false)
  const sharded = cluster && options.sharded !== false
  const names = channelNames(prefix, cluster)
  let node: BrokerNode | undefined
  const health = new RedisHealth(() => node as BrokerNode)
  // A count that could not be written is counted (stats().brokerCountFailures) and written again (see RedisPresence).
  const presence = new RedisPresence(pub, prefix, instanceId, onlineTtlOf(options) * 1000, names.tag, (err) => {
    node?.countFailed?.()
    health.failed(err)
  })
  /** Room and user channels this instance is subscribed to (besides the broadcast channel, always). */
  const channels = new Set<string>()
  /** Bytes published and not yet answered. */
  let pending = 0
  /** The SUBSCRIBE of each channel, settled once Redis acknowledged it (a history room's first read waits for it). */
  const subscriptions = new Map<string, Promise<void>>()
  /** The member presence of the `presence` option, when the app turned it on. */
  let presenceStore: RedisPresenceStore | undefined
  /**
   * Its connection on a cluster: presence scripts are idempotent (a key's marker per instance), so unlike fan-outs
   * they may wait for a node's connection and follow redirections. On a single Redis it is the publisher.
   */
  let presenceClient: Client | undefined

  const { channelOf, targetOf } = names
  const requests = new RedisRequests(instanceId, names.instanceChannel,
    async (channel, message) => await ((sharded ? pub.spublish(channel, message) : pub.publish(channel, message)) as Promise<number>), !cluster || sharded)
  const subscribe = (channel: string): Promise<unknown> => sharded ? sub.ssubscribe(channel) : sub.subscribe(channel)
  const unsubscribe = (channel: string): Promise<unknown> => sharded ? sub.sunsubscribe(channel) : sub.unsubscribe(channel)

  function watch (client: Client, fault: Fault, onReady: () => void): void {
    client.on('error', (err: Error) => { health.failed(err) })
    client.on('close', () => { health.down(fault, new Error('connection to Redis closed')) })
    client.on('ready', () => {
      health.up(fault)
      onReady()
    })
  }

  function subOnMessage (channel: Buffer, message: Buffer): void {
    // A history room's frame (other fan-outs start with the codec's version, 1).
    if (message[0] === NUMBERED || message[0] === NUMBERED_V2) return subOnNumbered(channel, message)
    if (message[0] === PRESENCE_DIFF) return subOnPresence(channel, message)
    if (message[0] === REQUEST || message[0] === ANSWER) return requests.received(message, node)
    const decoded = decodeMessage(message)
    if (decoded === undefined || decoded.from === instanceId || node === undefined) return
    const target = targetOf(channel.toString())
    if (target === undefined) return
    try {
      node.deliver({ target, frame: decoded.frame, except: decoded.except, type: decoded.type, publishedAt: decoded.publishedAt })
    } catch (err) {
      // Thrown inside ioredis's reply parser, it would break the subscriber connection for everyone.
      node.log.error({ err }, 'redis broker: delivering a fan-out from another instance failed')
    }
  }

  /** A history room's frame, as the append script published it (see `decodeNumbered`). */
  function subOnNumbered (channel: Buffer, message: Buffer): void {
    const target = targetOf(channel.toString())
    const decoded = decodeNumbered(message)
    if (decoded === undefined || target?.kind !== 'room' || node === undefined) return
    try {
      node.received(target.name, decoded)
    } catch (err) {
      node.log.error({ err }, 'redis broker: delivering a history frame failed')
    }
  }

  function subOnPresence (channel: Buffer, message: Buffer): void {
    const target = targetOf(channel.toString())
    if (target?.kind !== 'room' || presenceStore === undefined) return
    try {
      presenceStore.received(target.name, message.subarray(1).toString())
    } catch (err) {
      node?.log.error({ err }, 'redis broker: delivering a presence diff failed')
    }
  }

  function settle (size: number): void {
    pending -= size
    if (pending <= maxPending / 2) health.up('stalled')
  }

  return {
    async start (n) {
      node = n
      watch(pub, 'publisher', () => { presence.refresh(n) })
      // Once the resubscriptions are through (a PING answers after them), history rooms read what the outage lost.
      watch(sub, 'subscriber', () => { sub.ping().then(() => { n.resync(); presenceStore?.reconnected() }, () => {}) })
      sub.on(sharded ? 'smessageBuffer' : 'messageBuffer', subOnMessage)
      try {
        await Promise.all([pub.connect(), sub.connect(), presenceClient !== pub ? presenceClient?.connect() : undefined])
        await Promise.all([subscribe(channelOf({ kind: 'all' })), subscribe(requests.channel)])
      } catch (err) {
        // Left alone, ioredis would keep reconnecting in the background and hold the process open.
        pub.disconnect()
        sub.disconnect()
        presenceClient?.disconnect()
        throw new Error(`redis broker: cannot reach Redis at ${describeTarget(options)} at start (${(err as Error).message}); is it running?`, { cause: err })
      }
      health.active = true
      presence.start(n)
    },
    publish (delivery: Delivery) {
      if (node === undefined) return
      if (pub.status !== 'ready') {
        node.publishFailed()
        return
      }
      const message = encodeMessage(instanceId, delivery)
      const size = message.length
      if (pending + size > maxPending) {
        node.publishFailed()
        health.down('stalled', new Error(`Redis has not answered ${pending} bytes of publishes`))
        return
      }
      pending += size
      const channel = channelOf(delivery.target)
      const published = sharded ? pub.spublish(channel, message) : pub.publish(channel, message)
      published.then((receivers) => {
        settle(size)
        health.succeeded()
        // On a cluster, a shard that failed over has no subscribers until each instance resubscribes there: a
        // publish it took reached nobody. Where this instance knows the channel has subscribers (itself: its
        // own members are there, and every instance listens for broadcasts), that is a failed publish.
        if (cluster && receivers === 0 && (delivery.target.kind === 'all' || channels.has(channel))) node?.publishFailed()
        else node?.published?.()
      }, (err: Error) => {
        settle(size)
        node?.publishFailed()
        health.failed(err)
      })
    },
    membership (kind, name, count) {
      const channel = channelOf({ kind, name })
      if (count > 0 && !channels.has(channel)) {
        channels.add(channel)
        subscriptions.set(channel, subscribe(channel).then(() => {}, (err: Error) => { health.failed(err) }))
      } else if (count === 0 && channels.delete(channel)) {
        subscriptions.delete(channel)
        unsubscribe(channel).catch((err: Error) => { health.failed(err) })
      }
      presence.set(kind, name, count)
    },
    historyStore: () => new RedisHistoryStore(pub, prefix, (room) => channelOf({ kind: 'room', name: room }),
      async (room) => { await subscriptions.get(channelOf({ kind: 'room', name: room })) }, maxPending, sharded ? 'SPUBLISH' : 'PUBLISH'),
    presenceStore (o) {
      presenceClient = cluster ? presenceConnection(pub as Cluster, prefix, (err) => { health.failed(err) }) : pub
      presenceStore = new RedisPresenceStore({
        redis: presenceClient,
        prefix,
        channelOf: (room) => channelOf({ kind: 'room', name: room }),
        subscribed: async (room) => { await subscriptions.get(channelOf({ kind: 'room', name: room })) },
        publishCommand: sharded ? 'SPUBLISH' : 'PUBLISH',
        ttl: o.ttl
      })
      return presenceStore
    },
    idempotencyStore: (o) => new RedisIdempotencyStore(pub, prefix, o),
    // Bounded: a Redis that keeps the connection open and stops answering rejects them instead of hanging the caller.
    async roomSize (room) {
      return await withDeadline(presence.count('room', room), COUNT_TIMEOUT, 'redis broker: roomSize')
    },
    async online (userId) {
      return await withDeadline(presence.count('user', userId), COUNT_TIMEOUT, 'redis broker: online') > 0
    },
    instanceId,
    request: async (instance, body, timeoutMs) => await requests.request(instance, body, timeoutMs),
    async close () {
      health.active = false
      requests.close()
      // One bound for all of it, whatever Redis does: a stalled one answers neither the HDELs nor the QUITs.
      const until = Date.now() + CLOSE_TIMEOUT
      await settleWithin(presence.stop(node), CLOSE_TIMEOUT)
      await Promise.all([closeConnection(pub, until), closeConnection(sub, until), presenceClient !== pub && presenceClient !== undefined ? closeConnection(presenceClient, until) : undefined])
    }
  }
}

/** The presence store's own cluster connection (see `presenceClient`); its errors count like the publisher's. */
function presenceConnection (pub: Cluster, prefix: string, failed: (err: Error) => void): Cluster {
  const client = pub.duplicate(undefined, {
    maxRedirections: 16,
    // The publisher's AT_MOST_ONCE is not for these: a script cut off by a closed connection is safely run again.
    retryDelayOnFailover: 100,
    enableOfflineQueue: true,
    redisOptions: { ...pub.options.redisOptions, enableOfflineQueue: true, maxRetriesPerRequest: 3, connectionName: `${prefix}presence` }
  })
  client.on('error', failed)
  return client
}

/**
 * The cluster publisher never re-sends a command that may have run: ioredis would retry one cut off by a failover
 * ("Connection is closed") after later ones, out of order and possibly twice. It fails instead and is counted.
 * Redirections (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) are still followed: the node refused those, nothing ran.
 */
const AT_MOST_ONCE: ClusterOptions = { retryDelayOnFailover: 0 }

/**
 * The two connections: with `{ url }` new ones, with `{ client }` duplicates of the app's (a `Redis` or a
 * `Cluster`), with `{ cluster }` two `Cluster` clients; the subscriber of a cluster keeps one connection per shard
 * (ioredis's `shardedSubscribers`).
 */
function connect (options: RedisConnectionOptions, pubOptions: RedisOptions, subOptions: RedisOptions, sharded: boolean): { pub: Client, sub: Client, cluster: boolean } {
  const clusterOptions = (own: RedisOptions, base: ClusterOptions = {}, subscriber = false): ClusterOptions => {
    const { enableOfflineQueue, lazyConnect, ...perNode } = own
    return { ...base, enableOfflineQueue, lazyConnect, shardedSubscribers: subscriber && sharded, redisOptions: { ...base.redisOptions, ...perNode } }
  }
  if (options.cluster !== undefined) {
    const nodes = options.cluster.nodes as ClusterNode[]
    const base = options.cluster.options as ClusterOptions | undefined
    return { pub: new Cluster(nodes, { ...clusterOptions(pubOptions, base), ...AT_MOST_ONCE }), sub: new Cluster(nodes, clusterOptions(subOptions, base, true)), cluster: true }
  }
  const client = options.client as Redis | Cluster | undefined
  if (client instanceof Cluster) {
    return { pub: client.duplicate([], { ...clusterOptions(pubOptions), ...AT_MOST_ONCE }), sub: client.duplicate([], clusterOptions(subOptions, {}, true)), cluster: true }
  }
  if (client !== undefined) return { pub: client.duplicate(pubOptions), sub: client.duplicate(subOptions), cluster: false }
  const url = options.url as string
  return { pub: new Redis(url, pubOptions), sub: new Redis(url, subOptions), cluster: false }
}

/**
 * Channel names, and the hash tag keys of the same room or user use: on a cluster the name goes in braces, so a
 * room's channel and its keys share one slot (an atomic script can touch them together) and rooms spread over
 * the shards. The name is escaped inside the braces (lib/redis-tag.ts): any name, `''` and names with `}` or `%`
 * included, keeps its keys in one slot and comes back unchanged from its channel. Without a cluster the names are as
 * they always were.
 */
function channelNames (prefix: string, cluster: boolean) {
  const tag = (name: string): string => cluster ? hashTag(name) : name
  const untag = (name: string): string | undefined => {
    if (!cluster) return name
    return name.length >= 3 && name.startsWith('{') && name.endsWith('}') ? unescapeName(name.slice(1, -1)) : undefined
  }
  const all = `${prefix}${cluster ? '{all}' : 'all'}`
  /** One instance's own channel (requests to it, answers to its requests). */
  const instanceChannel = (instance: string): string => `${prefix}instance:${tag(instance)}`
  const targetOf = (kind: 'room' | 'user', text: string): Target | undefined => {
    const name = untag(text)
    return name === undefined ? undefined : { kind, name }
  }
  return {
    tag,
    instanceChannel,
    channelOf: (target: Target): string => target.kind === 'all' ? all : `${prefix}${target.kind}:${tag(target.name)}`,
    targetOf (channel: string): Target | undefined {
      if (channel === all) return { kind: 'all' }
      if (!channel.startsWith(prefix)) return undefined
      const rest = channel.slice(prefix.length)
      if (rest.startsWith('room:')) return targetOf('room', rest.slice(5))
      if (rest.startsWith('user:')) return targetOf('user', rest.slice(5))
      return undefined
    }
  }
}
