/** The counters behind `app.realtime.stats()`: plain numbers bumped on the hot path, copied only when asked. */
export interface Counters {
  messagesIn: number
  messagesOut: number
  bytesIn: number
  bytesOut: number
  /** Messages not sent because of backpressure (slow consumers). */
  dropped: number
  /** Fan-outs that could not be published to the other instances. */
  brokerFailures: number
  /**
   * Writes of the cluster-wide counts behind `roomSize` and `online` that failed (Redis away, a cluster connection
   * still settling); each such count is written again once Redis answers.
   */
  brokerCountFailures: number
  /** Error envelopes sent, by code. */
  errors: Record<string, number>
  /** Closed connections, by close code. */
  closes: Record<string, number>
  /** Refused handshakes (upgrade requests), by code. */
  refused: Record<string, number>
  /** Plain GETs of a realtime route answered with a refusal, by code: mostly the client's handshake diagnosis. */
  diagnoses: Record<string, number>
  /** Joins of history rooms that resumed from a position: `recovered`, or the reason they could not. */
  recoveries: Record<string, number>
  /** Presence diffs (changes of a room's member list) this instance received and passed to its members. */
  presenceDiffs: number
}

/** What `app.realtime.stats()` returns. */
export interface RealtimeStats extends Counters {
  connections: number
  users: number
  rooms: number
  /**
   * Per-room state this instance holds: history rooms and presence rooms with a life here (local members, or a
   * presence leave not yet confirmed), and in-memory history metas (`{ epoch, offset }` of rooms ever joined or
   * published to, kept `metaTtl` within `memoryBudget`).
   */
  roomStates: { history: number, presence: number, historyMetas: number }
}

export function createCounters (): Counters {
  return {
    messagesIn: 0,
    messagesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    dropped: 0,
    brokerFailures: 0,
    brokerCountFailures: 0,
    errors: Object.create(null),
    closes: Object.create(null),
    refused: Object.create(null),
    diagnoses: Object.create(null),
    recoveries: Object.create(null),
    presenceDiffs: 0
  }
}

export function bump (table: Record<string, number>, key: string | number): void {
  table[key] = (table[key] ?? 0) + 1
}
