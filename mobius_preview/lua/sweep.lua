-- Put back the messages of dead workers: every message kombu delivered before the
-- cutoff that no living worker holds goes back to the front of its queue, and its
-- job's record (when running) says it was recovered. One script, so two sweepers
-- never restore one message twice.
--
-- The exception to "every key in KEYS": the keys of worker heartbeats, held sets,
-- queues and job records are known only from what this script reads (the worker
-- set, kombu's entries of delivered messages, the job id inside a message), so it is handed their
-- prefixes (and the events suffix) from mobius_preview.layout in ARGV and joins them
-- to those names. It never spells a key itself.
--
-- KEYS[1] kombu's hash of delivered, unacknowledged messages (delivery tag -> entry)
-- KEYS[2] kombu's index of that hash (zset: delivery tag by delivery time)
-- KEYS[3] the set of worker names
-- ARGV[1]  cutoff (Unix time): messages delivered before it may be put back
-- ARGV[2]  heartbeat key prefix (+ worker name)
-- ARGV[3]  held-set key prefix (+ worker name)
-- ARGV[4]  record key prefix (+ job id)
-- ARGV[5]  event stream suffix (record key + it)
-- ARGV[6]  queue key prefix (+ the routing key kombu kept)
-- ARGV[7]  now (ISO 8601)
-- ARGV[8]  record TTL, seconds
-- ARGV[9]  most messages to put back in one pass
-- ARGV[10] event stream MAXLEN
-- ARGV[11] states of a job whose worker is lost (space-separated)
-- ARGV[12] the state such a job goes back to
-- Returns the job ids put back.

local live = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('EXISTS', ARGV[2] .. name) == 1 then live[#live + 1] = name
  else redis.call('SREM', KEYS[3], name) end
end
local lost_states = set_of(ARGV[11])
local restored = {}
local ttl = tonumber(ARGV[8])
for _, tag in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[9]))) do
  local held = false
  for _, name in ipairs(live) do
    if redis.call('SISMEMBER', ARGV[3] .. name, tag) == 1 then held = true break end
  end
  local entry = (not held) and redis.call('HGET', KEYS[1], tag)
  if entry then
    -- kombu keeps json.dumps([message, exchange, routing_key]); the message goes back as it was.
    local message, _, queue = string.match(entry, '^%[(.*), "([^"]*)", "([^"]*)"%]$')
    if message then
      redis.call('RPUSH', ARGV[6] .. queue, message)
      redis.call('HDEL', KEYS[1], tag)
      redis.call('ZREM', KEYS[2], tag)
      local id = string.match(message, '"id": "([^"]+)"')
      if id then
        local record = ARGV[4] .. id
        local state = redis.call('HGET', record, 'state')
        if state and lost_states[state] then
          local count = redis.call('HINCRBY', record, 'recovered', 1)
          local worker = redis.call('HGET', record, 'worker') or ''
          redis.call('HSET', record, 'state', ARGV[12], 'recoveredAt', ARGV[7], 'lostWorker', worker,
                     'updatedAt', ARGV[7])
          emit(record .. ARGV[5], ARGV[10], ttl, 'state',
               cjson.encode({state = ARGV[12], at = ARGV[7], recovered = count, lostWorker = worker}))
        end
        restored[#restored + 1] = id
      end
    end
  end
end
return restored
