import type { HistoryRead } from './store.js'

/** A numbered frame as it came from the broker's subscription. */
export interface StreamMessage {
  epoch: string
  offset: number
  frame: Buffer
  except: string | undefined
  /** When the publishing instance appended it, in ms since the epoch (for the broker lag; absent from older instances). */
  publishedAt?: number
}

/** What a cursor needs of its room on this instance. */
export interface CursorHost {
  /** Hands a frame in offset order to the room's local members. */
  deliver: (message: StreamMessage) => void
  /** Tells the room's local members where they stand now, and why they lost continuity. */
  notify: (epoch: string, offset: number, reason: 'epoch' | 'gap') => void
  /** Reads the room's stream after `since`. */
  read: (since: number) => Promise<HistoryRead>
}

/** A resync whose read failed is tried again this often, this many times (about half a minute). */
const RETRY_MS = 1000
const MAX_RETRIES = 30
/** Epochs a room moved away from, remembered so that an old frame still in flight cannot take the cursor back. */
const RETIRED = 4

/**
 * The last offset this instance delivered in one history room, so that what pub/sub gets wrong is mended here,
 * once per instance and room rather than per connection. One cursor per room life (see lib/room-life.ts): it is
 * made with the room's first local member and stopped with its last, and a read that comes back after that is
 * dropped.
 *
 *   offset <= last (same epoch) ─▶ a duplicate, dropped
 *   offset == last + 1          ─▶ delivered
 *   offset >  last + 1          ─▶ hold later frames, read last+1… from the stream, deliver in order; if the
 *                                  stream cannot fill it, members get rt.position { reason: 'gap' }
 *   another epoch               ─▶ members get rt.position { reason: 'epoch' }, then offsets 1, 2, 3… are delivered
 *   an epoch it left            ─▶ a frame from before the change, still in flight: dropped
 */
export class RoomCursor {
  /** Undefined until the room's first local join has read the stream. */
  private epoch: string | undefined
  private last = 0
  /** Frames that arrived while a hole is being filled from the stream, in arrival order. */
  private held: StreamMessage[] | undefined
  /** Before the first read came back: the highest offset received (for the joins' buffers). */
  private early: { epoch: string, max: number } | undefined
  private readonly retired: string[] = []
  private timer: NodeJS.Timeout | undefined
  private stopped = false

  constructor (private readonly host: CursorHost) {}

  /** The last offset delivered in the room, and its epoch (undefined before the first read). */
  get position (): { epoch: string, last: number } | undefined {
    return this.epoch === undefined ? undefined : { epoch: this.epoch, last: this.last }
  }

  /**
   * The position a local join read; returns true when it shows the room moved to another epoch. The first one
   * starts the cursor, past the frames that arrived meanwhile (the subscription was in place before the read, so
   * those past `top` run on from it without a hole; older ones were an earlier subscription's, in flight).
   */
  seed (epoch: string, top: number): boolean {
    if (this.stopped || this.retired.includes(epoch)) return false
    if (this.epoch === undefined) {
      const early = this.early
      this.early = undefined
      this.epoch = epoch
      this.last = early?.epoch === epoch ? Math.max(top, early.max) : top
      return false
    }
    if (this.epoch === epoch || this.held !== undefined) return false
    this.moveTo(epoch, top)
    return true
  }

  /**
   * A store that numbers synchronously (memory) delivers in offset order by itself: the cursor only watches for a
   * new epoch (the room's meta expired while members stayed), which the members must hear of before offset 1.
   */
  advance (epoch: string, offset: number): void {
    if (this.epoch === undefined || this.stopped) return
    if (this.epoch !== epoch) {
      this.moveTo(epoch, offset - 1)
      this.host.notify(epoch, offset - 1, 'epoch')
    }
    this.last = offset
  }

  received (message: StreamMessage): void {
    if (this.stopped || this.retired.includes(message.epoch)) return
    if (this.epoch === undefined) {
      // Only joins still reading are here: their buffers keep what lies past the top they read.
      const early = this.early
      if (early === undefined || early.epoch !== message.epoch) this.early = { epoch: message.epoch, max: message.offset }
      else early.max = Math.max(early.max, message.offset)
      this.host.deliver(message)
      return
    }
    if (this.held !== undefined) this.held.push(message)
    else this.apply(message)
  }

  /** After the subscriber came back: the room is read from its last offset, since pub/sub lost what was sent meanwhile. */
  resync (): void {
    if (this.epoch === undefined || this.held !== undefined || this.stopped) return
    clearTimeout(this.timer)
    this.timer = undefined
    this.held = []
    this.heal()
  }

  /** The room's life ended: nothing it held is kept, and a read still in flight is dropped when it comes back. */
  stop (): void {
    this.stopped = true
    this.held = undefined
    this.early = undefined
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private moveTo (epoch: string, last: number): void {
    if (this.epoch !== undefined) {
      this.retired.push(this.epoch)
      if (this.retired.length > RETIRED) this.retired.shift()
    }
    this.epoch = epoch
    this.last = last
  }

  private apply (message: StreamMessage): void {
    if (message.epoch !== this.epoch) {
      this.moveTo(message.epoch, message.offset - 1)
      this.host.notify(message.epoch, this.last, 'epoch')
    }
    if (message.offset <= this.last) return
    if (message.offset === this.last + 1) {
      this.last = message.offset
      this.host.deliver(message)
      return
    }
    this.held = [message]
    this.heal()
  }

  private heal (attempt = 0): void {
    const epoch = this.epoch as string
    const last = this.last
    const done = (answer: HistoryRead | undefined): void => {
      if (this.stopped) return
      // A read answered from an epoch the room already left tells nothing about the current one.
      const read = answer !== undefined && this.retired.includes(answer.epoch) ? undefined : answer
      const held = this.held ?? []
      this.held = undefined
      if (read === undefined && held.length === 0 && attempt < MAX_RETRIES) {
        // A resync while the store is not answering yet (its connection still coming back): try again shortly.
        this.timer = setTimeout(() => {
          this.timer = undefined
          if (this.stopped || this.held !== undefined) return
          this.held = []
          this.heal(attempt + 1)
        }, RETRY_MS)
        this.timer.unref()
        return
      }
      if (read !== undefined && read.epoch !== epoch) {
        this.moveTo(read.epoch, read.top)
        this.host.notify(read.epoch, read.top, 'epoch')
      } else if (read !== undefined && read.epoch === epoch && read.top > last && read.first === last + 1 && read.entries.length === read.top - last) {
        read.entries.forEach((frame, i) => {
          this.last = last + 1 + i
          this.host.deliver({ epoch, offset: this.last, frame, except: undefined })
        })
      } else if (read === undefined || read.top > last) {
        // The stream cannot fill the hole: say so, and go on from the first frame held (or the top).
        const from = held.length > 0 ? (held[0] as StreamMessage).offset - 1 : read?.top ?? last
        if (from > last) {
          this.last = from
          this.host.notify(epoch, from, 'gap')
        }
      }
      for (const message of held) this.received(message)
    }
    this.host.read(last).then(done, () => { done(undefined) })
  }
}
