-- A job succeeded: count the completion (and the render, when it encoded a video)
-- and set its outcome. It is no longer counted running for its project, and the feed
-- tops up the Celery lists (its project may have been at its cap).
--
-- KEYS[1] the job's record (hash)   KEYS[2] its event stream
-- KEYS[3..13] the turns (_lib.lua's turns_at)
-- ARGV[1] '1' when this run rendered a video, else '0'
-- ARGV[2] record TTL, seconds
-- ARGV[3] the succeeded fields (JSON object of strings)
-- ARGV[4] the succeeded event (JSON)
-- ARGV[5] event stream MAXLEN
-- ARGV[6] the job's id
-- ARGV[7..14] the turns (_lib.lua's turns_at)
-- ARGV[15] the stream's TTL from now on, seconds (the events window of an ended job)
-- ARGV[16] the record's fields left out of its fold (space-separated)

local ttl = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'completions', 1)
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'renders', 1) end
hset_json(KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
ended(KEYS[1], KEYS[2], ARGV[5], ARGV[15], ARGV[4], ARGV[16], turns_at(3, 7), ARGV[6])
return 1
