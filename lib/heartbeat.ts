import WebSocket from 'ws'
import { CloseCode } from './protocol/codes.js'
import type { Registry } from './registry.js'

/** The clock never ticks less often than this, so session expiry is at most this late. */
const MAX_TICK_MS = 1000

/**
 * The one timer of an instance, running only while it has connections. Each tick closes expired sessions (4401);
 * each `interval` it sweeps: a connection that neither answered the last ping nor sent anything since the last
 * sweep is terminated (no close handshake with a dead peer), the others are pinged.
 *
 * A tick that comes late by more than an interval means the event loop stalled: the pongs of healthy peers may be
 * waiting, unread, in the kernel, and the timer phase runs before the poll phase reads them. Such a sweep is
 * postponed by one interval instead of terminating anyone.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined
  private readonly tickMs: number
  private lastTick = 0
  private lastSweep = 0

  constructor (private readonly registry: Registry, private readonly interval: number | false) {
    this.tickMs = interval === false ? MAX_TICK_MS : Math.min(interval, MAX_TICK_MS)
  }

  /** Starts with the first connection and stops with the last: an idle instance keeps no timer. */
  update (connections: number): void {
    if (connections > 0 && this.timer === undefined) {
      this.lastTick = this.lastSweep = performance.now()
      this.timer = setInterval(this.tick, this.tickMs)
      this.timer.unref()
    } else if (connections === 0 && this.timer !== undefined) {
      this.stop()
    }
  }

  /** Whether the timer is running (it is unref'd, so `process.getActiveResourcesInfo()` does not show it). */
  get running (): boolean {
    return this.timer !== undefined
  }

  stop (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  private readonly tick = (): void => {
    // Durations on the monotonic clock (a wall clock stepped back would postpone every sweep); expiry on the wall
    // clock, as the token's `exp` is.
    const now = performance.now()
    const stalled = this.interval !== false && now - this.lastTick > this.tickMs + this.interval
    this.lastTick = now
    const wall = Date.now()
    for (const conn of this.registry.expiring) {
      if (conn.expiresAt !== undefined && wall >= conn.expiresAt) conn.close(CloseCode.SESSION_EXPIRED)
    }
    if (this.interval === false || now - this.lastSweep < this.interval) return
    this.lastSweep = now
    if (stalled) return
    const meter = this.registry.meter
    if (meter !== undefined) meter.pingedAt = performance.now()
    for (const conn of this.registry.connections.values()) {
      if (!conn.alive) {
        if (meter !== undefined) meter.heartbeatTerminations++
        conn.terminate()
        continue
      }
      conn.alive = false
      if (conn.socket.readyState === WebSocket.OPEN) {
        conn.pinged = true
        conn.socket.ping()
      }
    }
  }
}
