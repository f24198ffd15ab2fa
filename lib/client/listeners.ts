/** The client's listeners by event type: the route's events and the lifecycle events. */
export class Listeners {
  private readonly byType = new Map<string, Set<(data: any) => void>>()

  /** Listeners of every type. */
  get size (): number {
    let n = 0
    for (const set of this.byType.values()) n += set.size
    return n
  }

  add (type: string, listener: (data: any) => void): void {
    let set = this.byType.get(type)
    if (set === undefined) this.byType.set(type, set = new Set())
    set.add(listener)
  }

  remove (type: string, listener: (data: any) => void): void {
    const set = this.byType.get(type)
    set?.delete(listener)
    if (set?.size === 0) this.byType.delete(type)
  }

  /** Calls every listener of `type`; one that throws breaks neither the others nor the client. */
  emit (type: string, data: unknown): void {
    for (const listener of [...this.byType.get(type) ?? []]) {
      try {
        listener(data)
      } catch (err) {
        // Reported where the platform reports uncaught errors (the console; `uncaughtException` on Node).
        setTimeout(() => { throw err }, 0)
      }
    }
  }
}
