-- A job succeeded: count the completion (and the render, when it encoded a video)
-- and set its outcome.
--
-- KEYS[1] the job's record (hash)   KEYS[2] its event stream
-- ARGV[1] '1' when this run rendered a video, else '0'
-- ARGV[2] record TTL, seconds
-- ARGV[3] the succeeded fields (JSON object of strings)
-- ARGV[4] the succeeded event (JSON)
-- ARGV[5] event stream MAXLEN
-- ARGV[6] the stream's TTL from now on, seconds (the events window of an ended job)
-- ARGV[7] the record's fields left out of its fold (space-separated)

local ttl = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'completions', 1)
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'renders', 1) end
hset_json(KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
emit(KEYS[2], ARGV[5], tonumber(ARGV[6]), 'state', ARGV[4])
fold(KEYS[1], set_of(ARGV[7]))
return 1
