// Schedules: the steps a seed generates (JSON, so a failing one can be replayed from a file).
import { Prng } from './prng.js'

export type Step =
  | { op: 'connect', client: number, instance: number, user: string }
  | { op: 'join', client: number, room: string, data?: number }
  | { op: 'leave', client: number, room: string }
  | { op: 'publish', instance: number, room: string, volatile?: boolean }
  | { op: 'update', client: number, room: string, data: number }
  /** The client's TCP link drops; it reconnects and resumes from its positions. */
  | { op: 'drop', client: number }
  /** The client is replaced by a fresh one (same user, same instance, same rooms): a reconnect without positions. */
  | { op: 'renew', client: number }
  /** The client's connection is killed and the client is gone for good. */
  | { op: 'kill', client: number }
  /** The instance's link to Redis is cut (or stalled) for `ms`; the schedule goes on meanwhile. */
  | { op: 'cut', instance: number, ms: number }
  | { op: 'stall', instance: number, ms: number }
  /** DEL of the run's keys: presence room hashes, history streams and metas, or every key of the prefix. */
  | { op: 'del', what: 'presence' | 'history' | 'all' }
  | { op: 'flush' }
  | { op: 'sigkill', instance: number }
  | { op: 'restart', instance: number }
  | { op: 'shutdown', instance: number }
  | { op: 'wait', ms: number }

export interface Schedule {
  seed: number
  mode: 'redis' | 'memory'
  instances: number
  /** Instances run as child processes (the schedule SIGKILLs some). */
  children: boolean
  presenceTtl: number
  leaveDelay: number
  shutdownTimeout: number
  steps: Step[]
}

export const ROOMS = ['h1', 'h2', 'p1', 'hp1'] as const
export const HISTORY_ROOMS = ROOMS.filter((r) => r.startsWith('h'))
export const PRESENCE_ROOMS = ROOMS.filter((r) => r.startsWith('p') || r.startsWith('hp'))
const USERS = ['u0', 'u1', 'u2', 'u3']
const MAX_CLIENTS = 5

/** The schedule of a seed: `length` steps over 1-3 instances (Redis), or one instance on the memory stores. */
export function generate (seed: number, length: number, options: { redis: boolean } = { redis: true }): Schedule {
  const r = new Prng(seed)
  const mode = options.redis && r.chance(0.8) ? 'redis' : 'memory'
  const instances = mode === 'memory' ? 1 : r.int(1, 3)
  const children = mode === 'redis' && r.chance(0.35)
  const presenceTtl = r.int(900, 1500)
  const leaveDelay = r.int(50, 300)
  const shutdownTimeout = r.int(300, 1200)
  // A model good enough to make most steps meaningful; the runner skips those that no longer apply.
  const clients: Array<{ instance: number, rooms: Set<string> } | undefined> = []
  const up = Array.from({ length: instances }, () => true)
  const steps: Step[] = []
  const live = (): number[] => clients.flatMap((c, i) => c === undefined ? [] : [i])
  const upInstances = (): number[] => up.flatMap((u, i) => u ? [i] : [])
  const faultMs = (): number => Math.round(presenceTtl * r.pick([0.3, 0.6, 1.6, 2.2]))
  for (let i = 0; steps.length < length; i++) {
    const alive = live()
    const ups = upInstances()
    const op = alive.length === 0 || i < 2
      ? 'connect'
      : r.weighted<Step['op']>([
        ['connect', alive.length < MAX_CLIENTS ? 3 : 0.3],
        ['join', 8], ['leave', 3], ['publish', 9], ['update', 2],
        ['drop', 3], ['renew', 1], ['kill', 1],
        ['cut', mode === 'redis' ? 1.5 : 0], ['stall', mode === 'redis' ? 1.5 : 0],
        ['del', mode === 'redis' ? 0.7 : 0], ['flush', mode === 'redis' ? 0.2 : 0],
        ['sigkill', children && ups.length > 0 ? 0.8 : 0],
        ['restart', ups.length < instances ? 3 : 0],
        ['shutdown', ups.length > 0 ? 0.5 : 0],
        ['wait', 2]
      ])
    switch (op) {
      case 'connect': {
        const free = clients.findIndex((c) => c === undefined)
        const slot = free === -1 ? (clients.length < MAX_CLIENTS ? clients.length : r.int(0, MAX_CLIENTS - 1)) : free
        const instance = r.int(0, instances - 1)
        clients[slot] = { instance, rooms: new Set() }
        steps.push({ op, client: slot, instance, user: r.pick(USERS) })
        break
      }
      case 'join': case 'leave': case 'update': case 'drop': case 'renew': case 'kill': {
        const client = r.pick(alive)
        const model = clients[client] as { instance: number, rooms: Set<string> }
        if (op === 'join') {
          const room = r.pick(ROOMS)
          model.rooms.add(room)
          steps.push({ op, client, room, data: r.int(0, 9) })
        } else if (op === 'leave' || op === 'update') {
          const joined = [...model.rooms].filter((room) => op === 'leave' || PRESENCE_ROOMS.includes(room as typeof PRESENCE_ROOMS[number]))
          if (joined.length === 0) continue
          const room = r.pick(joined)
          if (op === 'leave') {
            model.rooms.delete(room)
            steps.push({ op, client, room })
          } else {
            steps.push({ op, client, room, data: r.int(0, 9) })
          }
        } else {
          if (op === 'kill') clients[client] = undefined
          steps.push({ op, client })
        }
        break
      }
      case 'publish':
        if (ups.length === 0) continue
        steps.push({ op, instance: r.pick(ups), room: r.pick(HISTORY_ROOMS), ...(r.chance(0.1) ? { volatile: true } : {}) })
        break
      case 'cut': case 'stall':
        steps.push({ op, instance: r.int(0, instances - 1), ms: faultMs() })
        break
      case 'del':
        steps.push({ op, what: r.pick(['presence', 'history', 'all'] as const) })
        break
      case 'flush':
        steps.push({ op })
        break
      case 'sigkill': case 'shutdown': {
        const instance = r.pick(ups)
        up[instance] = false
        steps.push({ op, instance })
        break
      }
      case 'restart': {
        const instance = r.pick(up.flatMap((u, k) => u ? [] : [k]))
        up[instance] = true
        steps.push({ op, instance })
        break
      }
      case 'wait':
        steps.push({ op, ms: r.pick([50, 150, 400, Math.round(presenceTtl * 0.5)]) })
        break
    }
  }
  return { seed, mode, instances, children, presenceTtl, leaveDelay, shutdownTimeout, steps }
}
