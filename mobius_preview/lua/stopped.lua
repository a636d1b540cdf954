-- A running job stopped on request: it ends cancelled (its fields, the event on its
-- stream; the record folded). It is no longer counted running for its project, and the feed tops up the
-- Celery lists.
--
-- KEYS[1] the job's record (hash)   KEYS[2] its event stream
-- KEYS[3..13] the turns (_lib.lua's turns_at)
-- ARGV[1] fields to set (JSON object of strings)
-- ARGV[2] record TTL, seconds
-- ARGV[3] the cancelled event (JSON)
-- ARGV[4] event stream MAXLEN
-- ARGV[5] the job's id
-- ARGV[6..13] the turns (_lib.lua's turns_at)
-- ARGV[14] the stream's TTL from now on, seconds (the events window of an ended job)
-- ARGV[15] the record's fields left out of its fold (space-separated)

local ttl = tonumber(ARGV[2])
hset_json(KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ttl)
ended(KEYS[1], KEYS[2], ARGV[4], ARGV[14], ARGV[3], ARGV[15], turns_at(3, 6), ARGV[5])
return 1
