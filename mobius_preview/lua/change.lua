-- Fields of a job change and the change goes onto its stream (progress, cancelled
-- while running).
--
-- KEYS[1] the job's record (hash)   KEYS[2] its event stream
-- ARGV[1] fields to set (JSON object of strings)
-- ARGV[2] record TTL, seconds
-- ARGV[3] the event's kind: state, progress or playable
-- ARGV[4] the event (JSON)
-- ARGV[5] event stream MAXLEN
-- ARGV[6] the stream's TTL, seconds: the record's, or the events window when the change ends the job
-- ARGV[7] when the change ends the job: the record's fields left out of its fold
--         (space-separated); '' otherwise

local ttl = tonumber(ARGV[2])
hset_json(KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ttl)
emit(KEYS[2], ARGV[5], tonumber(ARGV[6]), ARGV[3], ARGV[4])
if ARGV[7] ~= '' then fold(KEYS[1], set_of(ARGV[7])) end
return 1
