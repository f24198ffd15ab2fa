// The server processes of one repeat: every kind (and the Redis pair) started side by side, so that start-up is never
// measured, then used one after the other; a server that failed a step is replaced by a fresh process.
import { randomBytes } from 'node:crypto'
import { expect, spawn, stop } from './children.js'
import type { Kind, Server, Target } from './workloads.js'

export interface ServerSetOptions {
  stepMs: number
  redisUrl: string
  /** The kind to run under --cpu-prof, and where its profiles go. */
  profiled?: string
  profileDir: string
  /** Names the profiles of this run and repeat apart. */
  tag: string
}

/** Starts `bench/server.ts <kind>` and waits for its port. */
async function startServer (kind: string, options: ServerSetOptions, args: string[] = []): Promise<Server> {
  // A directory per server process: Node writes one profile per thread there (tsx's loader runs in a second one).
  const profile = options.profiled === kind
    ? ['--cpu-prof', `--cpu-prof-dir=${options.profileDir}${kind}-${options.tag}-${randomBytes(2).toString('hex')}`]
    : []
  const child = spawn('./server.ts', [kind, ...args], ['--expose-gc', ...profile])
  const { port } = await expect<{ port: number }>(child, 'port', options.stepMs)
  return { child, port }
}

/** The server kind behind a slot: a `-redis` slot runs its kind on the Redis broker. */
const kindOf = (slot: Kind): Kind => slot.endsWith('-redis') ? slot.slice(0, -'-redis'.length) as Kind : slot

export class ServerSet {
  private readonly running = new Map<Kind, Promise<Server[]>>()
  /** One Redis key prefix per repeat: the pair shares it, nothing else sees it. */
  private readonly prefix = `rt-bench-${randomBytes(4).toString('hex')}:`
  constructor (private readonly options: ServerSetOptions) {}

  /** Starts the servers of every slot at once; failures show when a slot is used. */
  async startAll (slots: Kind[]): Promise<void> {
    await Promise.allSettled(slots.map(async (slot) => await this.get(slot)))
  }

  /** The server(s) of `slot` (two for the `-redis` slots), started if they are not running. */
  async get (slot: Kind): Promise<Server[]> {
    let running = this.running.get(slot)
    if (running === undefined) {
      running = slot.endsWith('-redis')
        ? Promise.all([0, 1].map(async () => await startServer(kindOf(slot), this.options, [this.options.redisUrl, `${this.prefix}${slot}:`])))
        : startServer(slot, this.options).then((s) => [s])
      this.running.set(slot, running)
      // A start that failed is forgotten, so that the next use tries again.
      running.catch(() => { if (this.running.get(slot) === running) this.running.delete(slot) })
    }
    return await running
  }

  async target (slot: Kind): Promise<Target> {
    const [server] = await this.get(slot) as [Server]
    // The observed variant speaks the realtime protocol to the generators.
    return { slot, kind: slot === 'realtime-observed' ? 'realtime' : kindOf(slot), server }
  }

  /** Stops the server(s) of `slot`; the next use starts a fresh process. */
  async discard (slot: Kind): Promise<void> {
    const running = this.running.get(slot)
    this.running.delete(slot)
    const servers = await running?.catch(() => []) ?? []
    // A profiled server gets time to write its profile.
    await Promise.all(servers.map(async (s) => { await stop(s.child, this.options.profiled !== undefined ? 10_000 : 300) }))
  }

  async close (): Promise<void> {
    await Promise.all([...this.running.keys()].map(async (slot) => { await this.discard(slot) }))
  }
}
