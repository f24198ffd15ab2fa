/**
 * One lifecycle per room on an instance: a generation that begins with the room's first local user (a member, a
 * presence key still leaving, …) and ends with its last, and owns every per-room structure of a feature (a history
 * cursor and its held frames, a presence room's keys, version and store queue). Async work captures the life it
 * started in and checks `life.live` when it comes back: a result for a life that ended (or was replaced by a newer
 * one) is dropped, so nothing is re-created after the room is gone and nothing stale reaches a newer joiner.
 *
 *   open(room) ─▶ Life g (state made) ─▶ … async step captures g … ─▶ end(room) ─▶ g.live === false
 *                                                                   open(room) ─▶ Life g+1 (fresh state)
 */
export class Life<S> {
  private ended = false

  constructor (readonly room: string, readonly generation: number, readonly state: S) {}

  /** False once the life ended: whatever an async step brings back for it is dropped. */
  get live (): boolean {
    return !this.ended
  }

  /** @internal */
  end (): void {
    this.ended = true
  }
}

/** The lives of one feature's rooms on an instance. */
export class RoomLives<S> {
  private readonly lives = new Map<string, Life<S>>()
  private generation = 0

  /** `make` builds a new life's state; `onEnd` releases what the state holds outside it (timers). */
  constructor (private readonly make: (room: string) => S, private readonly onEnd?: (life: Life<S>) => void) {}

  /** The room's current life, begun now if it has none. */
  open (room: string): Life<S> {
    let life = this.lives.get(room)
    if (life === undefined) {
      life = new Life(room, ++this.generation, this.make(room))
      this.lives.set(room, life)
    }
    return life
  }

  /** The room's current life, if it has one. */
  get (room: string): Life<S> | undefined {
    return this.lives.get(room)
  }

  /** Ends the room's life (only `life`, when given: an older one's late end leaves a newer life alone). */
  end (room: string, life?: Life<S>): void {
    const current = this.lives.get(room)
    if (current === undefined || (life !== undefined && current !== life)) return
    this.lives.delete(room)
    current.end()
    this.onEnd?.(current)
  }

  /** Rooms with a life now. */
  get size (): number {
    return this.lives.size
  }

  [Symbol.iterator] (): IterableIterator<Life<S>> {
    return this.lives.values()
  }

  /** Ends every life (shutdown). */
  clear (): void {
    for (const life of [...this.lives.values()]) this.end(life.room, life)
  }
}
