import { randomUUID } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import type { Broker, BrokerNode, Delivery, Target } from './types.js'
import { decodeMessage, encodeMessage } from './redis-codec.js'
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
}

/**
 * Fan-outs across instances on Redis pub/sub. Each instance subscribes to a room's or user's channel only while it
 * has members there, and to one channel for broadcasts. A message carries the publisher's id (so it skips its own
 * members, who were served locally), the `except` connection id, and the frame's bytes as encoded once by the
 * publisher: receivers forward them without decoding.
 *
 * With `{ url }` the broker opens (and at `app.close()` closes) two connections; with `{ client }` it duplicates
 * the app's client and leaves the app's own connection open.
 */
export function redisBroker (options: RedisBrokerOptions): Broker {
  const prefix = options.prefix ?? 'rt:'
  const instanceId = randomUUID()
  // Publishes fail at once while Redis is away instead of queueing without bound; they are counted, not retried.
  const pubOptions: RedisOptions = { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectionName: `${prefix}pub`, lazyConnect: true }
  const subOptions: RedisOptions = { connectionName: `${prefix}sub`, lazyConnect: true }
  const pub = options.client !== undefined ? options.client.duplicate(pubOptions) : new Redis(options.url, pubOptions)
  const sub = options.client !== undefined ? options.client.duplicate(subOptions) : new Redis(options.url, subOptions)
  const presence = new RedisPresence(pub, prefix, instanceId, (options.presenceTtl ?? 30) * 1000)
  const channel = (target: Target): string => target.kind === 'all' ? `${prefix}all` : `${prefix}${target.kind}:${target.name}`
  const targetOf = (name: string): Target | undefined => {
    const rest = name.slice(prefix.length)
    if (rest === 'all') return { kind: 'all' }
    if (rest.startsWith('room:')) return { kind: 'room', name: rest.slice(5) }
    if (rest.startsWith('user:')) return { kind: 'user', name: rest.slice(5) }
    return undefined
  }
  let node: BrokerNode
  let outage = false
  let closing = false

  /** One log line per outage, not one per failed publish. */
  function failed (err: Error): void {
    if (outage || closing) return
    outage = true
    node.log.error({ err: { message: err.message, code: (err as { code?: string }).code } }, 'redis broker: Redis unreachable; local delivery goes on, cross-instance delivery is paused')
  }
  function recovered (): void {
    if (!outage) return
    outage = false
    node.log.info({}, 'redis broker: Redis is back; subscriptions restored')
  }
  function listen (client: Redis): void {
    client.on('error', failed)
    client.on('ready', () => {
      recovered()
      if (client === pub) presence.refresh(node)
    })
  }

  return {
    async start (n) {
      node = n
      listen(pub)
      listen(sub)
      sub.on('messageBuffer', (channelName: Buffer, message: Buffer) => {
        const decoded = decodeMessage(message)
        if (decoded === undefined || decoded.from === instanceId) return
        const target = targetOf(channelName.toString())
        if (target === undefined) return
        node.deliver({ target, frame: decoded.frame, except: decoded.except })
      })
      try {
        await Promise.all([pub.connect(), sub.connect()])
        await sub.subscribe(`${prefix}all`)
      } catch (err) {
        // Left alone, ioredis would keep reconnecting in the background and hold the process open.
        pub.disconnect()
        sub.disconnect()
        throw new Error(`redis broker: cannot reach Redis at start (${(err as Error).message}); is it running?`, { cause: err })
      }
      outage = false
      presence.start(node)
    },
    publish (delivery: Delivery) {
      if (pub.status !== 'ready') {
        node.publishFailed()
        return
      }
      pub.publish(channel(delivery.target), encodeMessage(instanceId, delivery)).catch((err: Error) => {
        node.publishFailed()
        failed(err)
      })
    },
    membership (kind, name, count) {
      const ch = `${prefix}${kind}:${name}`
      if (count === 1) sub.subscribe(ch).catch(failed)
      else if (count === 0) sub.unsubscribe(ch).catch(failed)
      presence.set(kind, name, count)
    },
    async roomSize (room) {
      return await presence.count('room', room)
    },
    async online (userId) {
      return await presence.count('user', userId) > 0
    },
    async close () {
      closing = true
      await presence.stop(node)
      await Promise.all([pub, sub].map(async (client) => {
        try {
          if (client.status === 'ready') await client.quit()
          else client.disconnect()
        } catch {
          client.disconnect()
        }
      }))
    }
  }
}
