// A simulated client: the typed client of lib/client (recovery on, short backoff) on a `ws` subclass that records
// every frame it sends and receives, per connection, with the time.
import WebSocket from 'ws'
import { createClient, type RealtimeClient } from '../../lib/client/index.js'
import type { RecoveryEvent } from '../../lib/client/positions.js'
import type { SimRoute } from './app.js'

export interface Frame {
  t: number
  /** Which connection of this client (0, 1, …). */
  conn: number
  dir: 'in' | 'out'
  msg: any
}

const REQUEST_TIMEOUT = 6000

export class SimClient {
  readonly frames: Frame[] = []
  /** `said` events as the app's listener saw them: the publish number n, in order. */
  readonly delivered: Array<{ t: number, n: number }> = []
  readonly recoveries: Array<RecoveryEvent & { t: number }> = []
  /** Rooms the client is in (as far as the simulator asked), with its presence data. */
  readonly rooms = new Map<string, number>()
  /** Joins in flight, from steps and from onReconnect. */
  pendingJoins = 0
  gone = false
  private sockets: WebSocket[] = []
  readonly client: RealtimeClient<SimRoute>

  constructor (readonly id: string, readonly user: string, readonly instance: number, url: string, private readonly t0: number) {
    const self = this
    class Tapped extends WebSocket {
      constructor (address: string, protocols?: string | string[]) {
        super(address, protocols)
        const conn = self.sockets.length
        self.sockets.push(this)
        this.on('message', (data, isBinary) => {
          if (isBinary) return
          let msg: unknown
          try { msg = JSON.parse(Buffer.isBuffer(data) ? data.toString() : Buffer.from(data as ArrayBuffer).toString()) } catch { msg = String(data) }
          self.frames.push({ t: Date.now() - self.t0, conn, dir: 'in', msg })
        })
      }

      override send (data: any, ...rest: any[]): void {
        try { self.frames.push({ t: Date.now() - self.t0, conn: self.sockets.indexOf(this), dir: 'out', msg: JSON.parse(String(data)) } as Frame) } catch {}
        ;(super.send as (...a: unknown[]) => void)(data, ...rest)
      }
    }
    this.client = createClient<SimRoute>(`${url}/rt?user=${encodeURIComponent(user)}`, {
      WebSocket: Tapped as never,
      backoff: { base: 20, cap: 250 },
      connectTimeout: 4000,
      pingInterval: 0,
      requestTimeout: REQUEST_TIMEOUT,
      maxQueue: 1000,
      // The joins go through the client the hook is given: what is sent through this.client waits for the hook.
      onReconnect: async (client) => {
        await Promise.all([...this.rooms].map(async ([room, data]) => { await this.join(room, data, client).catch(() => {}) }))
      }
    })
    this.client.on('said', (d) => { this.delivered.push({ t: Date.now() - this.t0, n: d.n }) })
    this.client.on('recovery', (e) => { this.recoveries.push({ ...e, t: Date.now() - this.t0 }) })
    // A client made while its instance was down opens for the first time much later; onReconnect runs only on a
    // reconnect, and the joins asked for meanwhile may have timed out: its first open joins the rooms it is to be in.
    let opened = false
    this.client.on('open', () => {
      if (opened) return
      opened = true
      for (const [room, data] of this.rooms) this.join(room, data).catch(() => {})
    })
    this.client.on('error', () => {})
    this.client.on('offline', () => {})
  }

  async join (room: string, data: number, client: RealtimeClient<SimRoute> = this.client): Promise<void> {
    this.pendingJoins++
    try {
      await client.request('join', { room, data })
    } finally {
      this.pendingJoins--
    }
  }

  /** Drops the TCP link at the client's end (the server sees a reset); the typed client reconnects. */
  drop (): void {
    this.sockets[this.sockets.length - 1]?.terminate()
  }

  /** Gone for good: the link is killed and the client closed. */
  kill (): void {
    this.gone = true
    this.drop()
    this.client.close()
  }

  get open (): boolean {
    return this.client.state === 'open'
  }
}
