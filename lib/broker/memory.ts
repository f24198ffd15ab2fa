import type { Broker } from './types.js'
import { MemoryHistoryStore } from '../history/memory.js'
import { MemoryPresenceStore } from '../presence/memory.js'
import { MemoryIdempotencyStore } from '../idempotency/memory.js'

/** The default broker: one instance, so there is nobody else to carry fan-outs to. */
export function memoryBroker (): Broker {
  return {
    start () {},
    publish () {},
    membership () {},
    historyStore: (options) => new MemoryHistoryStore(options.memoryBudget),
    presenceStore: () => new MemoryPresenceStore(),
    idempotencyStore: (options) => new MemoryIdempotencyStore(options),
    close () {}
  }
}
