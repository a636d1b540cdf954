-- A job is dead-lettered: its dead letter is written and its record marked dead with the
-- event on its stream, together, and the record folded like every ended job's. It is no
-- longer counted running for its project, and the feed tops up the Celery lists.
--
-- KEYS[1] the dead-letter hash (jobId -> letter)   KEYS[2] the job's record (hash)
-- KEYS[3] its event stream
-- KEYS[4..14] the turns (_lib.lua's turns_at)
-- ARGV[1] the job's id
-- ARGV[2] the dead letter (JSON)
-- ARGV[3] fields to set (JSON object of strings: state dead, error, attempts, times...)
-- ARGV[4] record TTL, seconds
-- ARGV[5] the dead event (JSON)
-- ARGV[6] event stream MAXLEN
-- ARGV[7..14] the turns (_lib.lua's turns_at)
-- ARGV[15] the stream's TTL from now on, seconds (the events window of an ended job)
-- ARGV[16] the record's fields left out of its fold (space-separated)

local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
hset_json(KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ttl)
ended(KEYS[2], KEYS[3], ARGV[6], ARGV[15], ARGV[5], ARGV[16], turns_at(4, 7), ARGV[1])
return 1
