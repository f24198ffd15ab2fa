// Who is in which room, for the presence list: in memory on one instance, in Redis when instances share rooms.
// A user with several tabs counts once; the count per (room, user) is what tabs and instances add up.
import type { Redis } from 'ioredis'

export interface Presence {
  /** Adds one connection of `user` to `room`; resolves with the room's users. */
  join: (room: string, user: string) => Promise<string[]>
  /** Removes one connection; resolves with the room's users. */
  leave: (room: string, user: string) => Promise<string[]>
  close: () => Promise<void>
}

export function memoryPresence (): Presence {
  const rooms = new Map<string, Map<string, number>>()
  const users = (room: string): string[] => [...(rooms.get(room)?.keys() ?? [])].sort()
  return {
    async join (room, user) {
      let counts = rooms.get(room)
      if (counts === undefined) rooms.set(room, counts = new Map())
      counts.set(user, (counts.get(user) ?? 0) + 1)
      return users(room)
    },
    async leave (room, user) {
      const counts = rooms.get(room)
      const n = (counts?.get(user) ?? 0) - 1
      if (n > 0) counts?.set(user, n)
      else counts?.delete(user)
      if (counts?.size === 0) rooms.delete(room)
      return users(room)
    },
    async close () {}
  }
}

/** A hash per room, user → number of connections, shared by every instance on the same Redis. */
export function redisPresence (redis: Redis, prefix = 'example:presence:'): Presence {
  const users = async (room: string): Promise<string[]> => Object.keys(await redis.hgetall(prefix + room)).sort()
  return {
    async join (room, user) {
      await redis.hincrby(prefix + room, user, 1)
      return await users(room)
    },
    async leave (room, user) {
      if (await redis.hincrby(prefix + room, user, -1) <= 0) await redis.hdel(prefix + room, user)
      return await users(room)
    },
    async close () { await redis.quit() }
  }
}
