import type { Claim, IdempotencyStore, ResolvedIdempotency } from './store.js'

interface Entry {
  scope: string
  key: string
  fp: string
  /** Undefined while the request runs. */
  outcome: string | undefined
  /** When it is forgotten (ms, monotonic): `pendingTtl` after the claim, `window` after the outcome. */
  until: number
  bytes: number
  /** Resolves the waiters of a pending entry. */
  wake: (() => void) | undefined
  settled: Promise<void> | undefined
}

/** Bytes an entry holds beyond its strings (the object, the map slots): a rough bound, so tiny outcomes count too. */
const ENTRY_OVERHEAD = 200

/**
 * The keys of this instance, for the memory broker (one instance). Bounded three ways: by time (`window`), per
 * scope (`maxKeys`) and in bytes (`memoryBudget`); the oldest go first. Expiry is swept as claims come, from the
 * head of the map (ordered by expiry), so the cost is amortized O(1) and nothing runs on a timer.
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  private readonly all = new Map<string, Entry>()
  private readonly scopes = new Map<string, Map<string, Entry>>()
  private bytes = 0
  private closed = false

  constructor (private readonly options: ResolvedIdempotency) {}

  /** Entries kept, for tests and stats. */
  get size (): number {
    return this.all.size
  }

  get usedBytes (): number {
    return this.bytes
  }

  async claim (scope: string, key: string, fp: string): Promise<Claim> {
    const now = performance.now()
    this.sweep(now)
    const id = `${scope}\n${key}`
    const entry = this.all.get(id)
    if (entry !== undefined && entry.until > now) {
      if (entry.fp !== fp) return { kind: 'conflict' }
      if (entry.outcome !== undefined) return { kind: 'done', outcome: entry.outcome }
      entry.settled ??= new Promise<void>((resolve) => { entry.wake = resolve })
      return { kind: 'pending', settled: entry.settled }
    }
    if (entry !== undefined) this.remove(id, entry)
    const created: Entry = { scope, key, fp, outcome: undefined, until: now + this.options.pendingTtl, bytes: ENTRY_OVERHEAD + 2 * (id.length + fp.length), wake: undefined, settled: undefined }
    this.add(id, created)
    return { kind: 'run' }
  }

  async complete (scope: string, key: string, fp: string, outcome: string): Promise<void> {
    // A handler that settles after app.close(): nothing is kept for an instance that is gone.
    if (this.closed) return
    const id = `${scope}\n${key}`
    let entry = this.all.get(id)
    if (entry === undefined || entry.fp !== fp) {
      // Forgotten meanwhile (evicted for room): keep the outcome all the same, as a new entry.
      if (entry !== undefined) this.remove(id, entry)
      entry = { scope, key, fp, outcome: undefined, until: 0, bytes: ENTRY_OVERHEAD + 2 * (id.length + fp.length), wake: undefined, settled: undefined }
      this.add(id, entry)
    }
    const grown = 2 * outcome.length - 2 * (entry.outcome?.length ?? 0)
    entry.outcome = outcome
    entry.bytes += grown
    this.bytes += grown
    entry.until = performance.now() + this.options.window
    // Move it to the end: the map stays ordered by expiry (every outcome lives `window` from when it was set).
    this.all.delete(id)
    this.all.set(id, entry)
    const wake = entry.wake
    entry.wake = entry.settled = undefined
    wake?.()
    this.trim()
  }

  close (): void {
    this.closed = true
    for (const entry of this.all.values()) entry.wake?.()
    this.all.clear()
    this.scopes.clear()
    this.bytes = 0
  }

  private add (id: string, entry: Entry): void {
    this.all.set(id, entry)
    this.bytes += entry.bytes
    let scoped = this.scopes.get(entry.scope)
    if (scoped === undefined) this.scopes.set(entry.scope, scoped = new Map())
    scoped.set(entry.key, entry)
    if (scoped.size > this.options.maxKeys) {
      // The scope's oldest outcome goes (a pending claim stays, as in trim()).
      for (const [oldest, old] of scoped) {
        if (old.outcome === undefined) continue
        this.remove(`${entry.scope}\n${oldest}`, old)
        break
      }
    }
    this.trim()
  }

  private remove (id: string, entry: Entry): void {
    if (this.all.get(id) !== entry) return
    this.all.delete(id)
    this.bytes -= entry.bytes
    const scoped = this.scopes.get(entry.scope)
    if (scoped !== undefined) {
      scoped.delete(entry.key)
      if (scoped.size === 0) this.scopes.delete(entry.scope)
    }
    // A waiter of a forgotten pending entry claims again and runs the request itself.
    const wake = entry.wake
    entry.wake = entry.settled = undefined
    wake?.()
  }

  /**
   * Drops what expired, from the head: the map is ordered by expiry, since claims are added in time order with the
   * same `pendingTtl` and an outcome moves its entry to the end with `window >= pendingTtl`.
   */
  private sweep (now: number): void {
    for (const [id, entry] of this.all) {
      if (entry.until > now) break
      this.remove(id, entry)
    }
  }

  /**
   * Over the byte budget, the oldest outcomes go. A pending claim is never pushed out for room: its request still
   * runs, and a retry that found the key free would run it a second time (claims are few: one running request per
   * connection, and each is freed by its `pendingTtl`).
   */
  private trim (): void {
    if (this.bytes <= this.options.memoryBudget) return
    for (const [id, entry] of this.all) {
      if (this.bytes <= this.options.memoryBudget) return
      if (entry.outcome !== undefined) this.remove(id, entry)
    }
  }
}
