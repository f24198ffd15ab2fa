/**
 * The Lua of the Redis presence store. Each change of a room is one script on the room's hash
 * `<prefix>pr:{room}`, so every transition of a key (0 → 1 instance holding it, 1 → 0, new data) happens once in
 * the whole cluster and is published once, with the room's next version, on the room's channel (which shares the
 * hash's slot on a cluster). Fields of the hash:
 *
 *   e             the room's epoch: random, set when the hash is made; a lost hash (restart without persistence,
 *                 failover, eviction, flush) comes back with another one, so a version that restarts is seen
 *   v             the room's version (one more per published diff)
 *   n             the number of members
 *   m:<key>       the member's data (JSON text)
 *   h:<key>       how many instances hold the key
 *   i:<inst>:<key> this instance holds the key (makes enter and leave idempotent per instance)
 *
 * Every script that may publish takes an epoch candidate (random, made by the caller) used only by a hash without
 * one. A hash with members has no TTL while any instance holds a key in it; an emptied one keeps its version for
 * `emptyTtl`; one left by an instance shutting down gracefully gets a TTL (`KEEP`) that the next holder removes.
 */

/** Shared by the scripts: the diff under construction and its publication. */
const DIFF = `
local joins, leaves, updates = {}, {}, {}
local epoch = ''
local function publish (h, channel, command)
  if #joins + #leaves + #updates == 0 then return end
  local e = redis.call('HGET', h, 'e')
  if not e then
    e = epoch
    redis.call('HSET', h, 'e', e)
  end
  local v = redis.call('HINCRBY', h, 'v', 1)
  local body = '{"v":' .. string.format('%d', v) .. ',"epoch":' .. cjson.encode(e) .. ',"joins":{' .. table.concat(joins, ',') .. '},"leaves":[' ..
    table.concat(leaves, ',') .. '],"updates":{' .. table.concat(updates, ',') .. '}}'
  redis.call(command, channel, '\\3' .. body)
end
local function entry (key, data) return cjson.encode(key) .. ':{"data":' .. data .. '}' end
-- This instance holds key (with data): a join when no instance held it, an update when the data changed.
local function hold (h, inst, key, data, max)
  local marker = 'i:' .. inst .. ':' .. key
  local old = redis.call('HGET', h, 'm:' .. key)
  if redis.call('HEXISTS', h, marker) == 0 then
    if not old and max and tonumber(redis.call('HGET', h, 'n') or '0') >= max then return false end
    redis.call('HSETNX', h, 'e', epoch)
    redis.call('HSET', h, marker, 1)
    redis.call('HINCRBY', h, 'h:' .. key, 1)
    -- A holder again: no TTL (an emptied room's, or the one a graceful shutdown set) while a key is held.
    redis.call('PERSIST', h)
  end
  if not old then
    redis.call('HINCRBY', h, 'n', 1)
    joins[#joins + 1] = entry(key, data)
  elseif old ~= data then
    updates[#updates + 1] = entry(key, data)
  end
  redis.call('HSET', h, 'm:' .. key, data)
  return true
end
-- This instance no longer holds key: a leave when no instance holds it any more.
local function release (h, inst, key, emptyTtl)
  if redis.call('HDEL', h, 'i:' .. inst .. ':' .. key) == 0 then return end
  if redis.call('HINCRBY', h, 'h:' .. key, -1) > 0 then return end
  redis.call('HDEL', h, 'h:' .. key, 'm:' .. key)
  leaves[#leaves + 1] = cjson.encode(key)
  -- An empty room's version outlives it for a while (a watcher's snapshot must stay older than the next join).
  if redis.call('HINCRBY', h, 'n', -1) <= 0 then redis.call('PEXPIRE', h, emptyTtl) end
end
`

/** KEYS: room hash. ARGV: inst, key, data, max members, channel, publish command, epoch. Returns 1, or 0 when full. */
export const ENTER = `${DIFF}
epoch = ARGV[7]
if not hold(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])) then return 0 end
publish(KEYS[1], ARGV[5], ARGV[6])
return 1`

/** KEYS: room hash. ARGV: inst, key, data, channel, publish command, epoch. Only a key this instance holds. */
export const UPDATE = `${DIFF}
epoch = ARGV[6]
if redis.call('HEXISTS', KEYS[1], 'i:' .. ARGV[1] .. ':' .. ARGV[2]) == 0 then return 0 end
hold(KEYS[1], ARGV[1], ARGV[2], ARGV[3], false)
publish(KEYS[1], ARGV[4], ARGV[5])
return 1`

/** KEYS: room hash. ARGV: inst, key, channel, publish command, empty ttl, epoch. */
export const LEAVE = `${DIFF}
epoch = ARGV[6]
release(KEYS[1], ARGV[1], ARGV[2], ARGV[5])
publish(KEYS[1], ARGV[3], ARGV[4])
return 1`

/**
 * KEYS: room hash. ARGV: inst, channel, publish command, empty ttl, epoch, reaping ('1' or '0'), then key, data
 * pairs: makes the instance hold exactly these keys in the room (putting back what an outage or a lost hash took,
 * removing what it should not hold), in one diff. With no pairs it evicts the instance (and never makes a hash).
 * A live reaper's eviction leaves a room with members without TTL (a graceful shutdown's `KEEP` is lifted once
 * its instance is reaped: the members left are live instances', or will be reaped by a live reaper too).
 */
export const SYNC = `${DIFF}
local h, inst = KEYS[1], ARGV[1]
epoch = ARGV[5]
local wanted = {}
for i = 7, #ARGV, 2 do
  wanted[ARGV[i]] = true
  hold(h, inst, ARGV[i], ARGV[i + 1], false)
end
local prefix = 'i:' .. inst .. ':'
for _, field in ipairs(redis.call('HKEYS', h)) do
  if string.sub(field, 1, #prefix) == prefix then
    local key = string.sub(field, #prefix + 1)
    if not wanted[key] then release(h, inst, key, ARGV[4]) end
  end
end
publish(h, ARGV[2], ARGV[3])
if ARGV[6] == '1' and tonumber(redis.call('HGET', h, 'n') or '0') > 0 then redis.call('PERSIST', h) end
return 1`

const CLOCK = `local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- The key (when it exists) expires in ms at the earliest: a TTL is only ever raised, or given to a key without one.
local function keep (key, ms)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ms) then redis.call('PEXPIRE', key, ms) end
end
`

/** KEYS: a key. ARGV: ms. Gives the key (when it exists) a TTL of at least ms (a graceful shutdown's room hashes). */
export const KEEP = `${CLOCK}
keep(KEYS[1], tonumber(ARGV[1]))
return 1`

/**
 * KEYS: instances zset, reaping zset (one slot). ARGV: inst, ttl ms, mode, keep ms. The deadline is Redis's clock
 * + ttl. `start` registers; `beat` renews and returns 0 when the instance is gone (reaped: it was taken for dead);
 * `grace` sets the deadline to now + ttl for a graceful shutdown. Both sets live `keep` ms past the deadline: when
 * every instance is gone, they expire (the last one's ZREM empties them first when its shutdown has no grace).
 */
export const BEAT = `${CLOCK}
if ARGV[3] ~= 'start' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
keep(KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[4]))
keep(KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[4]))
return 1`

/**
 * KEYS: instances zset, reaping zset (one slot). ARGV: ttl ms, keep ms. Claims up to 10 instances past their deadline (and
 * reaps another reaper left unfinished for a ttl): each goes to exactly one reaper.
 */
export const CLAIM = `${CLOCK}
local out = {}
for _, inst in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 10)) do
  redis.call('ZREM', KEYS[1], inst)
  out[#out + 1] = inst
end
for _, inst in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 10)) do out[#out + 1] = inst end
for _, inst in ipairs(out) do redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), inst) end
if #out > 0 then keep(KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2])) end
return out`

/** KEYS: reaping zset. ARGV: inst, ttl ms. A reaper still at work on inst keeps it for another ttl (between batches). */
export const RENEW = `${CLOCK}
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])`
