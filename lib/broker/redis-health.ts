import type { BrokerNode } from './types.js'

/** What keeps fan-outs from crossing instances right now. */
export type Fault = 'publisher' | 'subscriber' | 'stalled'

function describe (err: Error): { message: string, code?: string } {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? { message: err.message, code } : { message: err.message }
}

/**
 * The broker's view of Redis, for its logs: one error line when cross-instance delivery stops working, one info
 * line when it works again, however many publishes fail or reconnects are tried in between.
 *
 * ```
 * healthy ──down(fault) / failed(err)──▶ impaired (logged once)
 * impaired ──every fault up, or a publish succeeds with none left──▶ healthy (logged once)
 * ```
 */
export class RedisHealth {
  private readonly faults = new Set<Fault>()
  private impaired = false
  /** Off before `start()` has connected and from `close()` on: failures then are the caller's to report. */
  active = false

  constructor (private readonly node: () => BrokerNode) {}

  down (fault: Fault, err: Error): void {
    if (!this.active) return
    this.faults.add(fault)
    this.failed(err)
  }

  up (fault: Fault): void {
    if (this.faults.delete(fault)) this.succeeded()
  }

  /** A command failed: reported unless this outage already was. */
  failed (err: Error): void {
    if (!this.active || this.impaired) return
    this.impaired = true
    this.node().log.error({ err: describe(err) },
      'redis broker: Redis unreachable or not answering; local delivery goes on, cross-instance delivery is paused')
  }

  /** Something worked: if nothing is still down, the outage is over. */
  succeeded (): void {
    if (!this.impaired || this.faults.size > 0) return
    this.impaired = false
    this.node().log.info({}, 'redis broker: Redis is back; resubscribed, cross-instance delivery resumes')
  }
}
