// A small seeded PRNG (mulberry32): every random choice of a schedule comes from one of these, so a seed names a
// schedule exactly (its timing, on a loaded machine, is another matter: see docs/11-testing.md "Fault-schedule simulator").
export class Prng {
  private state: number

  constructor (seed: number) {
    this.state = (seed >>> 0) ^ 0x9e3779b9
  }

  /** A float in [0, 1). */
  next (): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** An integer in [min, max]. */
  int (min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }

  pick<T> (items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T
  }

  chance (p: number): boolean {
    return this.next() < p
  }

  /** A choice weighted by `[item, weight]` pairs. */
  weighted<T> (pairs: ReadonlyArray<readonly [T, number]>): T {
    const total = pairs.reduce((sum, [, w]) => sum + w, 0)
    let x = this.next() * total
    for (const [item, w] of pairs) {
      if ((x -= w) < 0) return item
    }
    return (pairs[pairs.length - 1] as readonly [T, number])[0]
  }
}
