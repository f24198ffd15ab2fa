// The checks over what a run recorded (frames and publishes); the checks that need the live system (presence
// convergence, per-room structures, keys, close times) are in run.ts. Each names the promise of docs/ it checks.
import type { SimClient } from './clients.js'

export interface Violation {
  invariant: 'a' | 'b' | 'c' | 'd' | 'run'
  what: string
  details?: unknown
}

export interface Publish {
  n: number
  room: string
  instance: number
  t: number
  position?: { epoch: string, offset: number }
  error?: string
}

/**
 * (a) History: the app's listener sees each event at most once and, per room and epoch, in offset order; on the
 * wire every event follows the position the client holds (offset + 1: a silent hole is a violation; an offset at
 * or below it is the replay's overlap, which the client drops by design), a resumed join either replays from the
 * client's own position or says `recovered: false` with a reason, and every `rt.position` that is not a
 * notification (`epoch`, `gap`, or `unavailable` with a position) answers a join of that room on that connection (a stale join's answer after a
 * leave is a violation).
 */
export function checkHistory (c: SimClient, publishes: Map<number, Publish>): Violation[] {
  const out: Violation[] = []
  const add = (what: string, details?: unknown): void => { if (out.length < 20) out.push({ invariant: 'a', what: `client ${c.id} (${c.user}): ${what}`, details }) }
  // The app's view.
  const seen = new Set<number>()
  const lastByRoom = new Map<string, { epoch: string, offset: number, n: number }>()
  for (const { n } of c.delivered) {
    if (seen.has(n)) add(`event n=${n} reached the app twice`)
    seen.add(n)
    const p = publishes.get(n)
    if (p?.position === undefined) continue
    const last = lastByRoom.get(p.room)
    if (last !== undefined && last.epoch === p.position.epoch && p.position.offset <= last.offset) {
      add(`room ${p.room}: event n=${n} (offset ${p.position.offset}) reached the app after n=${last.n} (offset ${last.offset}) of the same epoch`)
    }
    lastByRoom.set(p.room, { ...p.position, n })
  }
  // The wire.
  const base = new Map<string, { epoch: string | undefined, offset: number } | undefined>()
  let conn = -1
  let outstanding = new Map<string, number>()
  let joinsSinceLeave = new Map<string, number>()
  let pendingJoinIds = new Map<number, string>()
  let resumed = new Set<string>()
  let answered = new Set<string>()
  let member = new Set<string>()
  const bump = (m: Map<string, number>, k: string, d: number): void => { m.set(k, (m.get(k) ?? 0) + d) }
  for (const f of c.frames) {
    if (f.conn !== conn) {
      conn = f.conn
      outstanding = new Map(); joinsSinceLeave = new Map(); pendingJoinIds = new Map(); resumed = new Set(); answered = new Set(); member = new Set()
    }
    const m = f.msg
    if (f.dir === 'out') {
      if (m?.type === 'rt.resume') for (const room of Object.keys(m.data?.rooms ?? {})) resumed.add(room)
      if (m?.type === 'join' && typeof m.data?.room === 'string' && m.data.room.startsWith('h')) {
        bump(outstanding, m.data.room, 1); bump(joinsSinceLeave, m.data.room, 1); pendingJoinIds.set(m.id, m.data.room)
      }
      if (m?.type === 'leave' && typeof m.data?.room === 'string') joinsSinceLeave.set(m.data.room, 0)
      continue
    }
    if ((m?.type === 'reply' || m?.type === 'error') && pendingJoinIds.has(m.id)) {
      const room = pendingJoinIds.get(m.id) as string
      pendingJoinIds.delete(m.id)
      const stillPending = [...pendingJoinIds.values()].filter((r) => r === room).length
      outstanding.set(room, Math.min(outstanding.get(room) ?? 0, stillPending))
      continue
    }
    if (m?.type === 'rt.position') {
      const { room, epoch, offset, recovery } = m.data ?? {}
      const reason: string | undefined = recovery?.reason
      // `unavailable` with a position is the instance handing one to a member whose join could not read the store.
      const notification = reason === 'epoch' || reason === 'gap' || (reason === 'unavailable' && offset !== null)
      if (offset === null && reason !== 'unavailable') {
        // The answer to a leave: joins sent before it are void.
        outstanding.set(room, joinsSinceLeave.get(room) ?? 0)
        base.set(room, undefined)
        member.delete(room)
        continue
      }
      if (!notification) {
        if ((outstanding.get(room) ?? 0) <= 0) add(`room ${room}: an rt.position (${JSON.stringify(m.data)}) that answers no join on connection ${conn} (a stale join?)`, { t: f.t })
        else bump(outstanding, room, -1)
        if (resumed.has(room) && !answered.has(room) && recovery === undefined) add(`room ${room}: resumed from a position, but the join's rt.position has no recovery`, { t: f.t, data: m.data })
        answered.add(room)
      }
      member.add(room)
      const prev = base.get(room)
      if (offset === null) {
        base.set(room, undefined)
        continue
      }
      if (recovery?.recovered === true && prev !== undefined && prev.epoch === epoch && offset > prev.offset) {
        add(`room ${room}: recovered: true from offset ${offset}, but the client held ${prev.offset} (events ${prev.offset + 1}..${offset} silently skipped)`, { t: f.t })
      }
      base.set(room, { epoch, offset })
      continue
    }
    if (m?.type === 'said' && typeof m.room === 'string' && typeof m.offset === 'number') {
      const room = m.room
      if (!member.has(room)) add(`room ${room}: event offset ${m.offset} on connection ${conn} before any rt.position of this membership (or after the leave)`, { t: f.t })
      const prev = base.get(room)
      if (prev === undefined) { base.set(room, { epoch: undefined, offset: m.offset }); continue }
      if (m.offset > prev.offset + 1) add(`room ${room}: silent hole, offset ${m.offset} after ${prev.offset} with no rt.position between`, { t: f.t })
      if (m.offset > prev.offset) prev.offset = m.offset
    }
  }
  return out
}

/**
 * (b) Presence on the wire: per connection, no diff before the room's first snapshot; a diff that follows the
 * version the client holds (v + 1) never joins a key already listed nor leaves one that is not (no leave without a
 * join); a snapshot never goes back below a version the client already applied within the same epoch (a stale
 * resnapshot would undo newer diffs: a false leave); a new epoch starts its versions again.
 */
export function checkPresenceWire (c: SimClient): Violation[] {
  const out: Violation[] = []
  const add = (what: string, details?: unknown): void => { if (out.length < 20) out.push({ invariant: 'b', what: `client ${c.id} (${c.user}): ${what}`, details }) }
  let conn = -1
  let state = new Map<string, { v: number, epoch: string | undefined, keys: Set<string> }>()
  for (const f of c.frames) {
    if (f.dir !== 'in') continue
    if (f.conn !== conn) { conn = f.conn; state = new Map() }
    const m = f.msg
    if (m?.type === 'rt.presence') {
      const { room, v, epoch, members } = m.data
      const prev = state.get(room)
      // Versions compare within an epoch: a new epoch (the room's hash was lost and made anew) starts again at 1, and
      // a snapshot with none (v 0: the hash is gone, until its members are put back) is the start of the next one.
      const sameEpoch = prev !== undefined && epoch !== undefined && epoch === prev.epoch
      if (prev !== undefined && sameEpoch && v < prev.v) add(`room ${room}: snapshot v=${v} after v=${prev.v} was applied (versions went back)`, { t: f.t, keys: Object.keys(members ?? {}), had: [...prev.keys] })
      state.set(room, { v, epoch, keys: new Set(Object.keys(members ?? {})) })
    } else if (m?.type === 'rt.presence.diff') {
      const { room, v, epoch, joins, leaves } = m.data
      const s = state.get(room)
      if (s === undefined) { add(`room ${room}: diff v=${v} before any snapshot`, { t: f.t }); continue }
      // A diff of another epoch than the view's is one the client ignores until the new epoch's snapshot.
      if (epoch !== undefined && s.epoch !== undefined && epoch !== s.epoch) continue
      if (v <= s.v) continue
      if (epoch !== undefined) s.epoch = epoch
      if (v === s.v + 1) {
        for (const key of Object.keys(joins ?? {})) if (s.keys.has(key)) add(`room ${room}: diff v=${v} joins ${key}, already listed`, { t: f.t })
        for (const key of leaves ?? []) if (!s.keys.has(key)) add(`room ${room}: diff v=${v} leaves ${key}, not listed (a leave without a join)`, { t: f.t })
      }
      s.v = v
      for (const key of Object.keys(joins ?? {})) s.keys.add(key)
      for (const key of leaves ?? []) s.keys.delete(key)
    }
  }
  return out
}
