// A simulated instance, in this process or in a child process (when the schedule SIGKILLs instances); the same
// port across restarts, so the clients' reconnects find it again.
import { fork, type ChildProcess } from 'node:child_process'
import type { FastifyInstance } from 'fastify'
import { opsOf, startSimApp, type InstanceConfig, type InstanceOps } from './app.js'

export class SimInstance {
  private app: FastifyInstance | undefined
  private child: ChildProcess | undefined
  private ops: InstanceOps | undefined
  private nextId = 1
  private readonly waiting = new Map<number, (value: { result?: unknown, error?: string }) => void>()
  /** True between a successful start and a kill or close. */
  up = false

  constructor (readonly index: number, readonly config: InstanceConfig, readonly inChild: boolean) {}

  async start (): Promise<void> {
    if (!this.inChild) {
      for (let attempt = 0; ; attempt++) {
        try {
          this.app = await startSimApp(this.config)
          break
        } catch (err) {
          // EADDRINUSE right after a close on a loaded machine: try again briefly.
          if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt >= 50) throw err
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      }
      this.ops = opsOf(this.app)
      this.config.port = this.app.server.address() !== null ? (this.app.server.address() as { port: number }).port : this.config.port
      this.up = true
      return
    }
    const child = fork(new URL('./instance-child.ts', import.meta.url), [JSON.stringify(this.config)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    this.child = child
    child.on('message', (m: { id?: number, result?: unknown, error?: string }) => {
      if (m.id === undefined) return
      this.waiting.get(m.id)?.(m)
      this.waiting.delete(m.id)
    })
    child.on('exit', () => {
      for (const resolve of this.waiting.values()) resolve({ error: 'the instance exited' })
      this.waiting.clear()
      if (this.child === child) this.up = false
    })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`instance ${this.index} did not start within 30 s`)) }, 30_000)
      child.once('message', () => { clearTimeout(timer); resolve() })
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`instance ${this.index} exited with ${String(code)} while starting`)) })
    })
    this.up = true
  }

  private async call (op: keyof InstanceOps, ...args: unknown[]): Promise<any> {
    if (!this.up) return { error: 'the instance is down' }
    if (this.ops !== undefined) return await (this.ops[op] as (...a: unknown[]) => Promise<unknown>)(...args)
    const child = this.child as ChildProcess
    const id = this.nextId++
    const answer = await new Promise<{ result?: unknown, error?: string }>((resolve) => {
      this.waiting.set(id, resolve)
      child.send({ id, op, args })
    })
    if (answer.error !== undefined) return op === 'structures' ? {} : { error: answer.error }
    return answer.result
  }

  async publish (room: string, n: number, volatile = false): Promise<{ epoch: string, offset: number } | { error: string }> {
    return await this.call('publish', room, n, volatile)
  }

  async list (room: string): Promise<{ keys: Record<string, unknown> } | { error: string }> {
    return await this.call('list', room)
  }

  async position (room: string): Promise<{ epoch: string, offset: number } | { error: string }> {
    return await this.call('position', room)
  }

  async structures (): Promise<Record<string, string[]>> {
    return await this.call('structures')
  }

  /** `app.close()`; resolves with how long it took, or with Infinity when it did not finish within `limit` ms. */
  async close (limit: number): Promise<number> {
    if (!this.up) return 0
    const closing = this.call('close') as Promise<number>
    this.up = false
    let timer: NodeJS.Timeout | undefined
    const took = await Promise.race([closing, new Promise<number>((resolve) => { timer = setTimeout(() => { resolve(Infinity) }, limit) })])
    clearTimeout(timer)
    if (took === Infinity) {
      // A hung close: a child is killed; an in-process app is abandoned (its server is closed so the port frees).
      if (this.child !== undefined) this.child.kill('SIGKILL')
      else this.app?.server.closeAllConnections()
    }
    this.app = undefined
    this.ops = undefined
    return typeof took === 'number' ? took : Infinity
  }

  /** SIGKILL (child instances only). */
  async kill (): Promise<void> {
    const child = this.child
    if (child === undefined || !this.up) return
    this.up = false
    const exited = new Promise<void>((resolve) => { if (child.exitCode !== null || child.signalCode !== null) resolve(); else child.once('exit', () => { resolve() }) })
    child.kill('SIGKILL')
    await exited
  }

  /** Ends whatever is left, whatever its state (the run's teardown). */
  async dispose (): Promise<void> {
    if (this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null) {
      const child = this.child
      const exited = new Promise<void>((resolve) => { child.once('exit', () => { resolve() }) })
      child.kill('SIGKILL')
      await exited
    }
    if (this.app !== undefined) await this.close(3000)
  }
}
