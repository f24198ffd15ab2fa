import { clampDelay, deadline } from './timer.js'

/**
 * The timers that find a dead link: a deadline for the socket to open (browsers have none of their own and a
 * black-holed connect can hang for minutes), and the app-level ping after which a frame (its pong or any other) must come within `pingTimeout`.
 * `stop()` clears them all.
 */
export class Liveness {
  private openTimer: ReturnType<typeof setTimeout> | undefined
  private pingTimer: ReturnType<typeof setInterval> | undefined
  private pongTimer: ReturnType<typeof setTimeout> | undefined
  private readonly options: { connectTimeout: number, pingInterval: number, pingTimeout: number }

  constructor (options: { connectTimeout: number, pingInterval: number, pingTimeout: number }) {
    this.options = options
  }

  /** A connect attempt began: `onDead` runs unless `opened()` comes first. */
  connecting (onDead: () => void): void {
    this.stop()
    this.openTimer = deadline(this.options.connectTimeout, onDead)
  }

  /** The socket opened: ping every `pingInterval`; `onDead` runs when a pong is late. */
  opened (ping: () => void, onDead: () => void): void {
    this.stop()
    const { pingInterval, pingTimeout } = this.options
    if (!(pingInterval > 0) || pingInterval === Infinity) return
    this.pingTimer = setInterval(() => {
      if (this.pongTimer !== undefined) return
      this.pongTimer = deadline(pingTimeout, onDead)
      ping()
    }, clampDelay(pingInterval))
  }

  /**
   * A frame arrived, of any kind: the link is alive. A pong queued behind events on a throttled link, or an error
   * in its place (a rate-limited ping is answered with `RATE_LIMITED`, without id), proves it as well as the pong.
   */
  alive (): void {
    clearTimeout(this.pongTimer)
    this.pongTimer = undefined
  }

  stop (): void {
    clearTimeout(this.openTimer)
    clearInterval(this.pingTimer)
    clearTimeout(this.pongTimer)
    this.openTimer = this.pingTimer = this.pongTimer = undefined
  }
}
