import type { HistoryRead } from './store.js'

/** A numbered frame as it came from the broker's subscription. */
export interface StreamMessage {
  epoch: string
  offset: number
  frame: Buffer
  except: string | undefined
}

/** What the cursors need of the instance. */
export interface CursorHost {
  /** Hands a frame in offset order to the room's local members. */
  deliver: (room: string, message: StreamMessage) => void
  /** Tells the room's local members where they stand now, and why they lost continuity. */
  notify: (room: string, epoch: string, offset: number, reason: 'epoch' | 'gap') => void
  /** Reads the room's stream after `since`. */
  read: (room: string, since: number) => Promise<HistoryRead>
}

/** A resync whose read failed is tried again this often, this many times (about half a minute). */
const RETRY_MS = 1000
const MAX_RETRIES = 30

interface Cursor {
  epoch: string
  last: number
  /** Frames that arrived while a hole is being filled from the stream, in arrival order. */
  held: StreamMessage[] | undefined
}

/**
 * The last offset this instance delivered in each history room with local members, so that what pub/sub gets
 * wrong is mended here, once per instance and room rather than per connection:
 *
 *   offset <= last (same epoch) ─▶ a duplicate, dropped
 *   offset == last + 1          ─▶ delivered
 *   offset >  last + 1          ─▶ hold later frames, read last+1… from the stream, deliver in order; if the
 *                                  stream cannot fill it, members get rt.position { reason: 'gap' }
 *   another epoch               ─▶ members get rt.position { reason: 'epoch' }, then offsets 1, 2, 3… are delivered
 */
export class Cursors {
  private readonly cursors = new Map<string, Cursor>()
  /** Before a room's first local join has read the stream: the highest offset received (for the joins' buffers). */
  private readonly early = new Map<string, { epoch: string, max: number }>()

  constructor (private readonly host: CursorHost) {}

  /**
   * The position a local join read; returns true when it shows the room moved to another epoch. The first one
   * starts the cursor, past the frames that arrived meanwhile (the subscription was in place before the read, so
   * those past `top` run on from it without a hole; older ones were an earlier subscription's, in flight).
   */
  seed (room: string, epoch: string, top: number): boolean {
    const cursor = this.cursors.get(room)
    if (cursor === undefined) {
      const early = this.early.get(room)
      this.early.delete(room)
      this.cursors.set(room, { epoch, last: early?.epoch === epoch ? Math.max(top, early.max) : top, held: undefined })
      return false
    }
    if (cursor.epoch === epoch || cursor.held !== undefined) return false
    cursor.epoch = epoch
    cursor.last = top
    return true
  }

  /**
   * A store that numbers synchronously (memory) delivers in offset order by itself: the cursor only watches for a
   * new epoch (the room's meta expired while members stayed), which the members must hear of before offset 1.
   */
  advance (room: string, epoch: string, offset: number): void {
    const cursor = this.cursors.get(room)
    if (cursor === undefined) return
    if (cursor.epoch !== epoch) {
      cursor.epoch = epoch
      this.host.notify(room, epoch, offset - 1, 'epoch')
    }
    cursor.last = offset
  }

  /** The room has no local member any more. */
  forget (room: string): void {
    this.cursors.delete(room)
    this.early.delete(room)
  }

  /** The last offset delivered in the room, and its epoch. */
  position (room: string): { epoch: string, last: number } | undefined {
    return this.cursors.get(room)
  }

  received (room: string, message: StreamMessage): void {
    const cursor = this.cursors.get(room)
    if (cursor === undefined) {
      // Only joins still reading are here: their buffers keep what lies past the top they read.
      const early = this.early.get(room)
      if (early === undefined || early.epoch !== message.epoch) this.early.set(room, { epoch: message.epoch, max: message.offset })
      else early.max = Math.max(early.max, message.offset)
      this.host.deliver(room, message)
      return
    }
    if (cursor.held !== undefined) cursor.held.push(message)
    else this.apply(room, cursor, message)
  }

  /** After the subscriber came back: every room is read from its last offset, since pub/sub lost what was sent meanwhile. */
  resync (): void {
    for (const [room, cursor] of this.cursors) {
      if (cursor.held !== undefined) continue
      cursor.held = []
      this.heal(room, cursor)
    }
  }

  private apply (room: string, cursor: Cursor, message: StreamMessage): void {
    if (message.epoch !== cursor.epoch) {
      cursor.epoch = message.epoch
      cursor.last = message.offset - 1
      this.host.notify(room, message.epoch, cursor.last, 'epoch')
    }
    if (message.offset <= cursor.last) return
    if (message.offset === cursor.last + 1) {
      cursor.last = message.offset
      this.host.deliver(room, message)
      return
    }
    cursor.held = [message]
    this.heal(room, cursor)
  }

  private heal (room: string, cursor: Cursor, attempt = 0): void {
    const { epoch, last } = cursor
    const done = (read: HistoryRead | undefined): void => {
      if (this.cursors.get(room) !== cursor) return
      const held = cursor.held ?? []
      cursor.held = undefined
      if (read === undefined && held.length === 0 && attempt < MAX_RETRIES) {
        // A resync while the store is not answering yet (its connection still coming back): try again shortly.
        const timer = setTimeout(() => {
          if (this.cursors.get(room) !== cursor || cursor.held !== undefined) return
          cursor.held = []
          this.heal(room, cursor, attempt + 1)
        }, RETRY_MS)
        timer.unref()
        return
      }
      if (read !== undefined && read.epoch !== epoch) {
        cursor.epoch = read.epoch
        cursor.last = read.top
        this.host.notify(room, read.epoch, read.top, 'epoch')
      } else if (read !== undefined && read.top > last && read.first === last + 1 && read.entries.length === read.top - last) {
        read.entries.forEach((frame, i) => {
          cursor.last = last + 1 + i
          this.host.deliver(room, { epoch, offset: cursor.last, frame, except: undefined })
        })
      } else if (read === undefined || read.top > last) {
        // The stream cannot fill the hole: say so, and go on from the first frame held (or the top).
        const from = held.length > 0 ? held[0]!.offset - 1 : read?.top ?? last
        if (from > last) {
          cursor.last = from
          this.host.notify(room, epoch, from, 'gap')
        }
      }
      for (const message of held) this.received(room, message)
    }
    this.host.read(room, last).then(done, () => { done(undefined) })
  }
}
