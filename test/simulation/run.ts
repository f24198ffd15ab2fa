// Runs one schedule against real instances and checks the invariants (see docs/11-testing.md, "Fault-schedule simulator").
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { freePort } from '../helpers/redis-server.js'
import { SimInstance } from './instances.js'
import { LinkProxy } from '../helpers/link-proxy.js'
import { SimClient } from './clients.js'
import { checkHistory, checkPresenceWire, type Publish, type Violation } from './invariants.js'
import { HISTORY_ROOMS, PRESENCE_ROOMS, type Schedule, type Step } from './schedule.js'

export interface RedisTarget {
  url: string
  /** FLUSHALL is allowed (a throw-away redis-server of the simulator's own). */
  flushable: boolean
}

export interface RunResult {
  violations: Violation[]
  took: number
  /** What happened, for the report of a failing schedule. */
  log: string[]
  /** Every client's recorded frames and deliveries, and every publish (for --dump). */
  record: { clients: Array<{ id: string, user: string, instance: number, frames: unknown[], delivered: unknown[], recoveries: unknown[] }>, publishes: Publish[] }
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Polls `check` (null: holds; a string: why not) until it holds or `ms` pass; returns the last reason. */
async function until (ms: number, check: () => Promise<string | null> | string | null, every = 50): Promise<string | null> {
  const deadline = Date.now() + ms
  for (;;) {
    const why = await check()
    if (why === null || Date.now() > deadline) return why
    await sleep(every)
  }
}

/** Slack for a loaded machine (2 shared cores), added to every window the docs give. */
export const SLACK = Number(process.env.SIM_SLACK ?? 3000)

export async function runSchedule (schedule: Schedule, redis: RedisTarget | undefined, options: { verbose?: boolean } = {}): Promise<RunResult> {
  const t0 = Date.now()
  const log: string[] = []
  const note = (line: string): void => {
    log.push(`${String(Date.now() - t0).padStart(6)} ${line}`)
    if (options.verbose === true) process.stderr.write(`${log[log.length - 1] as string}\n`)
  }
  const violations: Violation[] = []
  const violate = (v: Violation): void => { violations.push(v); note(`VIOLATION (${v.invariant}) ${v.what}`) }
  const useRedis = schedule.mode === 'redis' && redis !== undefined
  const prefix = `sim-${schedule.seed}-${randomBytes(3).toString('hex')}:`
  const target = useRedis ? new URL((redis as RedisTarget).url) : undefined
  const admin = useRedis ? new Redis((redis as RedisTarget).url, { maxRetriesPerRequest: 1, lazyConnect: true }) : undefined
  await admin?.connect()
  const proxies: LinkProxy[] = []
  const instances: SimInstance[] = []
  const clients: Array<SimClient | undefined> = []
  const everyClient: SimClient[] = []
  const publishes = new Map<number, Publish>()
  const faults = new Set<Promise<void>>()
  const closeLimit = schedule.shutdownTimeout + 1000
  let nextN = 1
  let clientSerial = 0
  const { presenceTtl: ttl, leaveDelay } = schedule

  const closeInstance = async (inst: SimInstance, why: string): Promise<void> => {
    const took = await inst.close(closeLimit + 5000)
    note(`instance ${inst.index} closed (${why}) in ${took} ms`)
    if (!(took <= closeLimit)) {
      violate({ invariant: 'd', what: `instance ${inst.index}: app.close() (${why}) took ${took === Infinity ? `more than ${closeLimit + 5000}` : took} ms, more than shutdown.timeout ${schedule.shutdownTimeout} + 1000 ms`, details: { proxy: proxies[inst.index]?.state } })
    }
  }
  const urlOf = (i: number): string => `ws://127.0.0.1:${(instances[i] as SimInstance).config.port}`
  const newClient = (slot: number, user: string, instance: number): SimClient => {
    const c = new SimClient(`${slot}.${clientSerial++}`, user, instance, urlOf(instance), t0)
    clients[slot] = c
    everyClient.push(c)
    return c
  }
  const keysOf = async (match: (key: string) => boolean): Promise<string[]> => {
    if (admin === undefined) return []
    const out: string[] = []
    let cursor = '0'
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      cursor = next
      out.push(...keys.filter(match))
    } while (cursor !== '0')
    return out
  }

  try {
    for (let i = 0; i < schedule.instances; i++) {
      let proxyUrl: string | undefined
      if (useRedis) {
        const proxy = new LinkProxy({ host: (target as URL).hostname, port: Number((target as URL).port || 6379) })
        proxyUrl = await proxy.start()
        proxies.push(proxy)
      }
      const inst = new SimInstance(i, {
        redisUrl: proxyUrl,
        prefix,
        port: await freePort(),
        presenceTtl: ttl,
        leaveDelay,
        shutdownTimeout: schedule.shutdownTimeout,
        historyTtl: 60_000,
        historySize: 50
      }, schedule.children && useRedis)
      await inst.start()
      instances.push(inst)
    }
    note(`${schedule.mode}${schedule.mode === 'redis' && !useRedis ? ' (no Redis: memory)' : ''}, ${schedule.instances} instance(s)${schedule.children ? ' in child processes' : ''}, ttl ${ttl}, leaveDelay ${leaveDelay}, shutdown.timeout ${schedule.shutdownTimeout}, prefix ${prefix}`)

    // A request to a client whose instance is down (or whose Redis is stalled) waits in its queue or on the store:
    // the schedule waits for it at most this long and goes on (the request carries on in the background).
    const settle = async (request: Promise<unknown>, what: string): Promise<void> => {
      const done = request.then(() => {}, (err: Error) => { note(`${what}: ${err.message}`) })
      await Promise.race([done, sleep(1500)])
    }
    const runStep = async (step: Step): Promise<void> => {
      const c = 'client' in step ? clients[step.client] : undefined
      const live = c !== undefined && !c.gone
      const inst = 'instance' in step ? instances[step.instance] : undefined
      switch (step.op) {
        case 'connect': {
          if (live || inst === undefined) return
          newClient(step.client, step.user, step.instance)
          return
        }
        case 'join': {
          if (!live) return
          c.rooms.set(step.room, step.data ?? 0)
          await settle(c.join(step.room, step.data ?? 0), `client ${c.id} join ${step.room}`)
          return
        }
        case 'leave': {
          if (!live || !c.rooms.has(step.room)) return
          c.rooms.delete(step.room)
          await settle(c.client.request('leave', { room: step.room }), `client ${c.id} leave ${step.room}`)
          return
        }
        case 'update': {
          if (!live || !c.rooms.has(step.room)) return
          c.rooms.set(step.room, step.data)
          await settle(c.client.request('update', { room: step.room, data: step.data }), `client ${c.id} update ${step.room}`)
          return
        }
        case 'drop': if (live) c.drop(); return
        case 'kill': if (live) c.kill(); return
        case 'renew': {
          if (!live) return
          c.kill()
          const fresh = newClient(step.client, c.user, c.instance)
          for (const [room, data] of c.rooms) {
            fresh.rooms.set(room, data)
            await settle(fresh.join(room, data), `client ${fresh.id} join ${room}`)
          }
          return
        }
        case 'publish': {
          if (inst === undefined || !inst.up) return
          const n = nextN++
          const p: Publish = { n, room: step.room, instance: step.instance, t: Date.now() - t0 }
          publishes.set(n, p)
          await settle(inst.publish(step.room, n, step.volatile === true).then((result) => {
            if ('error' in result) p.error = result.error
            else p.position = result
          }), `publish n=${n}`)
          return
        }
        case 'cut': case 'stall': {
          const proxy = proxies[step.instance]
          if (proxy === undefined || proxy.state !== 'up') return
          if (step.op === 'cut') await proxy.cut()
          else proxy.stall()
          const fault = (async () => {
            await sleep(step.ms)
            if (step.op === 'cut') await proxy.restore()
            else proxy.resume()
            note(`instance ${step.instance}: Redis link back after ${step.op} of ${step.ms} ms`)
          })()
          faults.add(fault)
          fault.finally(() => faults.delete(fault)).catch(() => {})
          return
        }
        case 'del': {
          const match = step.what === 'presence' ? (k: string) => k.startsWith(`${prefix}pr`) : step.what === 'history' ? (k: string) => k.startsWith(`${prefix}hist`) : () => true
          const keys = await keysOf(match)
          if (keys.length > 0) await admin?.del(...keys)
          note(`DEL ${keys.length} ${step.what} keys`)
          return
        }
        case 'flush':
          if (admin === undefined) return
          if ((redis as RedisTarget).flushable) await admin.flushall()
          else { const keys = await keysOf(() => true); if (keys.length > 0) await admin.del(...keys) }
          return
        case 'sigkill': if (inst?.up === true && inst.inChild) await inst.kill(); return
        case 'restart':
          if (inst === undefined || inst.up) return
          // An app does not start while its Redis is unreachable (registration fails): an
          // instance whose link is cut stays down now, and the heal starts it once the link is back.
          try {
            await inst.start()
          } catch (err) {
            note(`instance ${inst.index}: restart refused while its Redis link is down (${(err as Error).message.split('\n')[0]})`)
          }
          return
        case 'shutdown': if (inst?.up === true) await closeInstance(inst, 'shutdown step'); return
        case 'wait': await sleep(step.ms)
      }
    }

    let index = 0
    for (const step of schedule.steps) {
      note(`step ${index++}: ${JSON.stringify(step)}`)
      await runStep(step)
      await sleep(5)
    }

    // Heal: every fault ends, every instance is up, every client is back in its rooms.
    note('heal')
    await Promise.all([...faults])
    for (const p of proxies) { p.resume(); await p.restore() }
    for (const inst of instances) if (!inst.up) await inst.start()
    const healedAt = Date.now()
    const live = (): SimClient[] => clients.filter((c): c is SimClient => c !== undefined && !c.gone)
    const reconnected = await until(20_000 + SLACK, () => {
      const lagging = live().filter((c) => !c.open || c.pendingJoins > 0)
      return lagging.length === 0 ? null : `clients not back: ${lagging.map((c) => `${c.id} (${c.client.state}, ${c.pendingJoins} joins)`).join(', ')}`
    })
    if (reconnected !== null) violate({ invariant: 'run', what: reconnected })

    note('phase: (a) The tail:')
    // (a) The tail: one more event in every history room reaches every member (an epoch the room moved to
    // meanwhile is announced to them on the way).
    for (const room of HISTORY_ROOMS) {
      const members = live().filter((c) => c.rooms.has(room))
      if (members.length === 0) continue
      // Healed means every instance reaches Redis again: its position read waits for its subscription to the room,
      // so a probe published after this is one every instance's subscription carries.
      const reachable = await until(10_000 + SLACK, async () => {
        for (const inst of instances) {
          const at = await inst.position(room)
          if ('error' in at) return `instance ${inst.index} cannot read ${room}: ${at.error}`
        }
        return null
      }, 200)
      if (reachable !== null) violate({ invariant: 'run', what: reachable })
      const n = nextN++
      const p: Publish = { n, room, instance: 0, t: Date.now() - t0 }
      publishes.set(n, p)
      const why = await until(5000 + SLACK, async () => {
        const result = await (instances[0] as SimInstance).publish(room, n)
        if ('error' in result) return `the probe publish failed: ${result.error}`
        p.position = result
        return null
      }, 200)
      if (why !== null) { violate({ invariant: 'a', what: `room ${room}: ${why}` }); continue }
      // Reached: the app got the event, or was told after its publish that it must reload the room (recovered: false,
      // as when its instance's subscription was still coming back and the instance read past it).
      const missing = await until(5000 + SLACK, () => {
        const lacking = members.filter((c) => !c.delivered.some((d) => d.n === n) &&
          !c.recoveries.some((r) => r.room === room && !r.recovered && r.t >= p.t))
        return lacking.length === 0 ? null : lacking.map((c) => c.id).join(', ')
      })
      if (missing !== null) violate({ invariant: 'a', what: `room ${room}: the probe event n=${n} (${JSON.stringify(p.position)}) never reached the app of member client(s) ${missing}` })
    }

    note('phase: (b) Presence converges:')
    // (b) Presence converges: the store's list is the members the clients are (no lasting ghost, nobody missing),
    // on every instance, and every member client's view equals it, within leaveDelay + ttl + ttl/3 of the heal.
    const window = leaveDelay + ttl + ttl / 3 + SLACK
    for (const room of PRESENCE_ROOMS) {
      let why = await until(Math.max(0, healedAt + window - Date.now()), async () => {
        const expected = [...new Set(live().filter((c) => c.rooms.has(room)).map((c) => c.user))].sort()
        for (const inst of instances) {
          const list = await inst.list(room)
          if ('error' in list) return `instance ${inst.index}: list() failed: ${list.error}`
          const keys = Object.keys(list.keys).sort()
          if (keys.join() !== expected.join()) return `instance ${inst.index}: list() is [${keys.join(', ')}], the members are [${expected.join(', ')}]`
          for (const c of live().filter((x) => x.rooms.has(room))) {
            const view = [...c.client.presence(room).members.keys()].sort()
            if (view.join() !== keys.join()) return `client ${c.id} (${c.user}) sees [${view.join(', ')}], list() is [${keys.join(', ')}]`
          }
        }
        return null
      }, 100)
      if (why !== null) why = `room ${room}, ${Date.now() - healedAt} ms after the last fault (window ${window} ms): ${why}`
      if (why !== null) violate({ invariant: 'b', what: why })
    }

    note('phase: (a), (b) on the recorded frames.')
    // (a), (b) on the recorded frames.
    for (const c of everyClient) {
      for (const v of checkHistory(c, publishes)) violate(v)
      for (const v of checkPresenceWire(c)) violate(v)
    }
    const positions = new Map<string, number>()
    for (const p of publishes.values()) {
      if (p.position === undefined) continue
      const key = `${p.room}/${p.position.epoch}/${p.position.offset}`
      if (positions.has(key)) violate({ invariant: 'a', what: `publish n=${p.n} and n=${positions.get(key) as number} got the same position ${key}` })
      positions.set(key, p.n)
    }

    note('phase: (c) Everyone leaves:')
    // (c) Everyone leaves: per-room structures back to baseline on every instance.
    for (const c of live()) c.kill()
    const structures = await until(leaveDelay + ttl + SLACK, async () => {
      for (const inst of instances) {
        const s = await inst.structures()
        const left = Object.entries(s).filter(([, v]) => v.length > 0)
        if (left.length > 0) return `instance ${inst.index}: ${left.map(([k, v]) => `${k} = [${v.join(', ')}]`).join('; ')}`
      }
      return null
    }, 100)
    if (structures !== null) violate({ invariant: 'c', what: `after every client left: ${structures}` })

    note('phase: (d) Graceful closes,')
    // (d) Graceful closes, then (c) every key of the run has a TTL or is gone.
    for (const inst of instances) await closeInstance(inst, 'teardown')
    if (admin !== undefined) {
      const keys = await keysOf(() => true)
      const forever: string[] = []
      for (const key of keys) if (await admin.pttl(key) === -1) forever.push(key.slice(prefix.length))
      const contents: Record<string, unknown> = {}
      for (const key of forever) contents[key] = await admin.type(prefix + key) === 'hash' ? await admin.hgetall(prefix + key) : await admin.type(prefix + key)
      if (forever.length > 0) violate({ invariant: 'c', what: `keys without a TTL after every instance closed: ${forever.join(', ')}`, details: contents })
    }
  } catch (err) {
    violate({ invariant: 'run', what: `the run failed: ${(err as Error).stack ?? String(err)}` })
  } finally {
    for (const c of everyClient) if (!c.gone) c.kill()
    await Promise.all([...faults].map(async (f) => await f.catch(() => {})))
    await Promise.all(instances.map(async (inst) => await inst.dispose().catch(() => {})))
    for (const p of proxies) await p.stop()
    if (admin !== undefined) {
      const keys = await keysOf(() => true).catch(() => [])
      if (keys.length > 0) await admin.del(...keys).catch(() => {})
      admin.disconnect()
    }
  }
  const record = {
    clients: everyClient.map((c) => ({ id: c.id, user: c.user, instance: c.instance, frames: c.frames, delivered: c.delivered, recoveries: c.recoveries })),
    publishes: [...publishes.values()]
  }
  return { violations, took: Date.now() - t0, log, record }
}
