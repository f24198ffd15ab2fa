import { randomUUID } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import type { Broker, BrokerNode, Delivery, Target } from './types.js'
import { decodeMessage, encodeMessage } from './redis-codec.js'
import { RedisHealth, type Fault } from './redis-health.js'
import { RedisPresence } from './redis-presence.js'

/** Options of `redisBroker()`. */
export type RedisBrokerOptions = ({ url: string, client?: never } | { client: Redis, url?: never }) & {
  /**
   * Every channel and key starts with it; instances that share rooms share it.
   * @default 'rt:'
   */
  prefix?: string
  /**
   * Seconds a crashed instance's members still count in `roomSize` and `online`; each instance refreshes its own
   * entries every third of it.
   * @default 30
   */
  presenceTtl?: number
  /**
   * Bytes of publishes sent and not yet answered by Redis past which further publishes fail (and are counted)
   * instead of piling up: a Redis that keeps the connection open but stops answering cannot grow memory without bound.
   * @default 16777216 (16 MiB)
   */
  maxPendingBytes?: number
}

/** How long `close()` waits for Redis to answer before it drops the connections. */
const CLOSE_TIMEOUT = 1000

async function within (promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([promise.catch(() => {}), new Promise((resolve) => { timer = setTimeout(resolve, ms) })])
  clearTimeout(timer)
}

async function closeConnection (client: Redis): Promise<void> {
  if (client.status === 'ready') await within(client.quit(), CLOSE_TIMEOUT)
  client.disconnect()
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
  const pub = options.client !== undefined ? options.client.duplicate(pubOptions) : new Redis(options.url, pubOptions)
  const sub = options.client !== undefined ? options.client.duplicate(subOptions) : new Redis(options.url, subOptions)
  const presence = new RedisPresence(pub, prefix, instanceId, (options.presenceTtl ?? 30) * 1000)
  let node: BrokerNode | undefined
  const health = new RedisHealth(() => node as BrokerNode)
  /** Room and user channels this instance is subscribed to (besides the broadcast channel, always). */
  const channels = new Set<string>()
  /** Bytes published and not yet answered. */
  let pending = 0

  const channelOf = (target: Target): string => target.kind === 'all' ? `${prefix}all` : `${prefix}${target.kind}:${target.name}`
  function targetOf (channel: string): Target | undefined {
    const rest = channel.slice(prefix.length)
    if (rest === 'all') return { kind: 'all' }
    if (rest.startsWith('room:')) return { kind: 'room', name: rest.slice(5) }
    if (rest.startsWith('user:')) return { kind: 'user', name: rest.slice(5) }
    return undefined
  }

  function watch (client: Redis, fault: Fault, onReady: () => void): void {
    client.on('error', (err: Error) => { health.failed(err) })
    client.on('close', () => { health.down(fault, new Error('connection to Redis closed')) })
    client.on('ready', () => {
      health.up(fault)
      onReady()
    })
  }

  function subOnMessage (channel: Buffer, message: Buffer): void {
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

  function settle (size: number): void {
    pending -= size
    if (pending <= maxPending / 2) health.up('stalled')
  }

  return {
    async start (n) {
      node = n
      watch(pub, 'publisher', () => { presence.refresh(n) })
      watch(sub, 'subscriber', () => {})
      sub.on('messageBuffer', subOnMessage)
      try {
        await Promise.all([pub.connect(), sub.connect()])
        await sub.subscribe(`${prefix}all`)
      } catch (err) {
        // Left alone, ioredis would keep reconnecting in the background and hold the process open.
        pub.disconnect()
        sub.disconnect()
        throw new Error(`redis broker: cannot reach Redis at start (${(err as Error).message}); is it running?`, { cause: err })
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
      pub.publish(channelOf(delivery.target), message).then(() => {
        settle(size)
        health.succeeded()
        node?.published?.()
      }, (err: Error) => {
        settle(size)
        node?.publishFailed()
        health.failed(err)
      })
    },
    membership (kind, name, count) {
      const channel = `${prefix}${kind}:${name}`
      if (count > 0 && !channels.has(channel)) {
        channels.add(channel)
        sub.subscribe(channel).catch((err: Error) => { health.failed(err) })
      } else if (count === 0 && channels.delete(channel)) {
        sub.unsubscribe(channel).catch((err: Error) => { health.failed(err) })
      }
      presence.set(kind, name, count)
    },
    async roomSize (room) {
      return await presence.count('room', room)
    },
    async online (userId) {
      return await presence.count('user', userId) > 0
    },
    async close () {
      health.active = false
      await within(presence.stop(node), CLOSE_TIMEOUT)
      await Promise.all([closeConnection(pub), closeConnection(sub)])
    }
  }
}
