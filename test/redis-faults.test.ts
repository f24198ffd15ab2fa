// Issue 19 on a single Redis: guarantees of the Redis broker that hold under faults (room names of any characters,
// except strings that cannot corrupt frames, counts repaired after a failed write, keys that expire, a bounded close).
import assert from 'node:assert/strict'
import { redisBroker } from '../lib/redis.js'
import { redisTest, REDIS_URL, uniquePrefix } from './helpers/redis.js'
import { checkRoomNames } from './helpers/room-names.js'

redisTest('room names of any characters (empty, "}", "%", "{}", 200 unicode characters): publish with history, recovery, roomSize', { timeout: 30000 }, async (t) => {
  const prefix = uniquePrefix()
  await checkRoomNames(t, () => redisBroker({ url: REDIS_URL, prefix }))
})

redisTest('a prefix with "{" or "}" is refused when the broker is made, naming the option', { timeout: 5000 }, () => {
  for (const prefix of ['{rt}:', 'rt}:', 'a{']) {
    assert.throws(() => redisBroker({ url: REDIS_URL, prefix }), (err: Error) => err instanceof TypeError && err.message.includes('prefix option') && err.message.includes(JSON.stringify(prefix)))
  }
})
