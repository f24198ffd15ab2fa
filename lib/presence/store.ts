/**
 * Where a presence room's members live: in this process (memory) or in Redis, shared by every instance. The store
 * sees one instance's changes of a key: `enter` when the key's first local connection arrives, `leave` when its
 * last one is gone (after `leaveDelay`), `update` when its data changes. Every change that alters the room's
 * member list is one versioned diff, handed to every instance with local members through `PresenceHost.diff`.
 */

/** A room's members with the version of the list. */
export interface PresenceSnapshot {
  /** The room's version: the `v` of the last diff applied to this list. */
  v: number
  /**
   * The room's epoch: versions compare only within one. A store that can lose a room's version (Redis: a lost
   * hash) gives the room a new epoch then; undefined for a room the store has nothing of (or a store without).
   */
  epoch?: string
  /** Member key → its data as JSON text (`null` when none). */
  members: Map<string, string>
}

/** What a store needs of its instance. */
export interface PresenceHost {
  /**
   * A room's diff: `v`, the JSON text `{"v":n,"epoch":"…","joins":{key:{"data":…}},"leaves":[key…],"updates":{…}}`
   * (without the room, which the host adds; `"epoch"` only from a store with epochs) and the room's epoch. Every
   * instance with local members of the room gets each diff.
   */
  diff: (room: string, v: number, body: string, epoch?: string) => void
  /** The store lost changes (a broken subscription, an instance that was reaped): snapshots go out again. */
  resync: () => void
  /** The instance's entered keys per room (those leaving excepted). */
  local: () => Iterable<[room: string, members: Map<string, string>]>
  /**
   * Makes the store hold exactly this instance's keys again (after a failed or timed-out call, an outage, or when it
   * was taken for dead), room by room through each room's queue of store calls, so that a re-sync never runs
   * between a key's enter and its confirmation. `stored`: the rooms the store says this instance holds keys in
   * (those without a local key are released). Rejects when a room could not be synced (the store retries later).
   */
  repair: (stored: Iterable<string>) => Promise<void>
  log: { warn: (obj: object, msg: string) => void, error: (obj: object, msg: string) => void }
}

/** The outcome of `enter`: `full` when the room has `maxMembers` other keys. */
export type EnterResult = 'ok' | 'full'

export interface PresenceStore {
  /** Versions of a room go up by one per diff, so a skipped one means a lost diff (Redis); memory's need not. */
  readonly contiguous?: boolean
  /** Starts heartbeats and the reaper (Redis). */
  start: (host: PresenceHost) => Promise<void> | void
  /** This instance now holds `key` in `room` (its data as JSON text). */
  enter: (room: string, key: string, data: string, maxMembers: number) => Promise<EnterResult>
  /** The data of a key this instance holds changed. */
  update: (room: string, key: string, data: string) => Promise<void>
  /** This instance no longer holds `key` in `room`; `last`: it holds no other key there. */
  leave: (room: string, key: string, last?: boolean) => Promise<void>
  /** Makes this instance hold exactly `members` in `room` (`PresenceHost.repair`); a store that cannot fail needs none. */
  sync?: (room: string, members: ReadonlyMap<string, string>) => Promise<void>
  /** The room's members and version, read atomically. */
  read: (room: string) => Promise<PresenceSnapshot>
  /** The number of members of the room. */
  count: (room: string) => Promise<number>
  /**
   * A graceful shutdown: this instance's entries stay for `grace` ms (clients that reconnect elsewhere in time keep
   * their key, so nobody sees a leave), then the other instances remove what is left. The caller bounds its wait.
   */
  shutdown: (grace: number) => Promise<void>
  close: () => void
}

/** The diff body as stores publish it. */
export function diffBody (v: number, joins: ReadonlyMap<string, string>, leaves: readonly string[], updates: ReadonlyMap<string, string>, epoch?: string): string {
  const map = (m: ReadonlyMap<string, string>): string => {
    const parts: string[] = []
    for (const [key, data] of m) parts.push(`${JSON.stringify(key)}:{"data":${data}}`)
    return `{${parts.join(',')}}`
  }
  return `{"v":${v},${epoch === undefined ? '' : `"epoch":${JSON.stringify(epoch)},`}"joins":${map(joins)},"leaves":${JSON.stringify(leaves)},"updates":${map(updates)}}`
}

/** The `rt.presence` snapshot envelope of a room. */
export function encodeSnapshot (room: string, snapshot: PresenceSnapshot): string {
  const parts: string[] = []
  for (const [key, data] of snapshot.members) parts.push(`${JSON.stringify(key)}:{"data":${data}}`)
  const epoch = snapshot.epoch === undefined ? '' : `"epoch":${JSON.stringify(snapshot.epoch)},`
  return `{"type":"rt.presence","data":{"room":${JSON.stringify(room)},"v":${snapshot.v},${epoch}"members":{${parts.join(',')}}}}`
}

/** The `rt.presence.diff` envelope of a room from a store's diff body. */
export function encodeDiff (room: string, body: string): string {
  return `{"type":"rt.presence.diff","data":{"room":${JSON.stringify(room)},${body.slice(1)}}`
}
