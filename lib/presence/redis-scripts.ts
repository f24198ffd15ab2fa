/**
 * The Lua of the Redis presence store. Each change of a room is one script on the room's hash
 * `<prefix>pr:{room}`, so every transition of a key (0 → 1 instance holding it, 1 → 0, new data) happens once in
 * the whole cluster and is published once, with the room's next version, on the room's channel (which shares the
 * hash's slot on a cluster). Fields of the hash:
 *
 *   v             the room's version (one more per published diff)
 *   n             the number of members
 *   m:<key>       the member's data (JSON text)
 *   h:<key>       how many instances hold the key
 *   i:<inst>:<key> this instance holds the key (makes enter and leave idempotent per instance)
 */

/** Shared by the scripts: the diff under construction and its publication. */
const DIFF = `
local joins, leaves, updates = {}, {}, {}
local function publish (h, channel, command)
  if #joins + #leaves + #updates == 0 then return end
  local v = redis.call('HINCRBY', h, 'v', 1)
  local body = '{"v":' .. string.format('%d', v) .. ',"joins":{' .. table.concat(joins, ',') .. '},"leaves":[' ..
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
    redis.call('HSET', h, marker, 1)
    redis.call('HINCRBY', h, 'h:' .. key, 1)
  end
  if not old then
    redis.call('HINCRBY', h, 'n', 1)
    redis.call('PERSIST', h)
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

/** KEYS: room hash. ARGV: inst, key, data, max members, channel, publish command. Returns 1, or 0 when full. */
export const ENTER = `${DIFF}
if not hold(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])) then return 0 end
publish(KEYS[1], ARGV[5], ARGV[6])
return 1`

/** KEYS: room hash. ARGV: inst, key, data, channel, publish command. Only a key this instance holds. */
export const UPDATE = `${DIFF}
if redis.call('HEXISTS', KEYS[1], 'i:' .. ARGV[1] .. ':' .. ARGV[2]) == 0 then return 0 end
hold(KEYS[1], ARGV[1], ARGV[2], ARGV[3], false)
publish(KEYS[1], ARGV[4], ARGV[5])
return 1`

/** KEYS: room hash. ARGV: inst, key, channel, publish command, empty ttl. */
export const LEAVE = `${DIFF}
release(KEYS[1], ARGV[1], ARGV[2], ARGV[5])
publish(KEYS[1], ARGV[3], ARGV[4])
return 1`

/**
 * KEYS: room hash. ARGV: inst, channel, publish command, empty ttl, then key, data pairs: makes the instance hold
 * exactly these keys in the room (putting back what an outage lost, removing what it should not hold), in one
 * diff. With no pairs it evicts a dead instance.
 */
export const SYNC = `${DIFF}
local h, inst = KEYS[1], ARGV[1]
local wanted = {}
for i = 5, #ARGV, 2 do
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
return 1`

const CLOCK = `local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
`

/**
 * KEYS: instances zset. ARGV: inst, ttl ms, mode. The deadline is Redis's clock + ttl. `start` registers;
 * `beat` renews and returns 0 when the instance is gone (reaped: it was taken for dead); `grace` sets the deadline
 * to now + ttl for a graceful shutdown.
 */
export const BEAT = `${CLOCK}
if ARGV[3] ~= 'start' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1`

/**
 * KEYS: instances zset, reaping zset (one slot). ARGV: ttl ms. Claims up to 10 instances past their deadline (and
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
return out`
