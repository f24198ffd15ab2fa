import type { IdempotencyStore, ResolvedIdempotency } from '../idempotency/store.js'
import type { ResolvedHistory } from '../history/options.js'
import type { HistoryStore } from '../history/store.js'
import type { StreamMessage } from '../history/cursor.js'
import type { ResolvedPresence } from '../presence/options.js'
import type { PresenceStore } from '../presence/store.js'
/**
 * A broker carries fan-outs between instances. The registry always delivers to its own members itself, so local
 * delivery never waits on (or fails with) the broker; the broker only carries the frame to the other instances.
 */

/** Who a fan-out is for. */
export type Target =
  | { kind: 'room', name: string }
  | { kind: 'user', name: string }
  | { kind: 'all' }

/** One fan-out: the already-encoded envelope, sent as is to every matching connection. */
export interface Delivery {
  target: Target
  /** The text frame's bytes (a JSON envelope), encoded once by the publisher. */
  frame: Buffer
  /** A connection id that must not receive it. */
  except?: string
  /** The event's type, for metrics (the frame itself is never decoded again). */
  type?: string
  /** When it was published, in ms since the epoch (for the publish-to-delivery lag). */
  publishedAt?: number
}

/** What an instance offers its broker. */
export interface BrokerNode {
  /** Delivers a fan-out that came from another instance to this instance's matching connections. */
  deliver: (delivery: Delivery) => void
  /** Counts a publish that could not reach the other instances (shown in `stats().brokerFailures`). */
  publishFailed: () => void
  /** Counts a write of the broker's cluster-wide counts (`roomSize`, `online`) that failed (`stats().brokerCountFailures`). */
  countFailed?: () => void
  /** History rooms: a numbered frame published by the history store, for this instance's cursor of the room. */
  received: (room: string, message: StreamMessage) => void
  /** History rooms: the subscription is back after an outage; every room is read again from its last offset. */
  resync: () => void
  /** Counts a publish the other instances' channel accepted (Redis answered), for metrics. */
  published?: () => void
  /**
   * The HTTP-streaming fallback: a batch another instance received for a session this instance holds (`request`);
   * resolves with the answer to send back. Never rejects.
   */
  answer?: (body: string) => Promise<string>
  /** This instance's rooms or users with their number of local connections. */
  local: (kind: 'room' | 'user') => Iterable<[string, number]>
  log: { info: (obj: object, msg: string) => void, warn: (obj: object, msg: string) => void, error: (obj: object, msg: string) => void }
}

export interface Broker {
  /** Called once when the plugin starts; deliveries from elsewhere go to `node.deliver`. */
  start: (node: BrokerNode) => Promise<void> | void
  /** Carries a fan-out to the other instances. Never throws: failures are counted through `node.publishFailed`. */
  publish: (delivery: Delivery) => void
  /**
   * A room's or user's local connections changed to `count`: 1 after the first arrived (subscribe to it),
   * 0 after the last left (unsubscribe), anything else in between.
   */
  membership: (kind: 'room' | 'user', name: string, count: number) => void
  /** Members of a room across instances, where the broker knows them; else undefined (the registry answers locally). */
  roomSize?: (room: string) => Promise<number>
  /** Whether a user has a connection on any instance, where the broker knows it. */
  online?: (userId: string) => Promise<boolean>
  /**
   * The history store for the `history` option: where history rooms are numbered and kept. A broker without one
   * cannot carry history rooms (registration fails).
   */
  historyStore?: (options: ResolvedHistory) => HistoryStore
  /** The presence store for the `presence` option. A broker without one cannot carry presence rooms. */
  presenceStore?: (options: ResolvedPresence) => PresenceStore
  /**
   * The store of idempotency keys (the `idempotency` option): where a keyed request's first outcome is kept for its
   * retries. A broker without one ignores keys (a retried request runs again).
   */
  idempotencyStore?: (options: ResolvedIdempotency) => IdempotencyStore
  /**
   * This instance's id among the broker's instances, where the broker carries `request`s: the HTTP-streaming
   * fallback starts its session ids with it, so that any instance can send a POST's batch to the session's owner.
   */
  instanceId?: string
  /**
   * Carries `body` to the instance `instance` (its `node.answer`) and resolves with the answer; rejects when it
   * cannot be sent or no answer came within `timeoutMs`. A broker without it serves the fallback on one instance
   * (or behind sticky sessions) only.
   */
  request?: (instance: string, body: string, timeoutMs: number) => Promise<string>
  /** Called from `app.close()` after every connection is gone. */
  close: () => Promise<void> | void
}
