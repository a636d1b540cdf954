-- A retry is scheduled: record the error and append the delay to retryDelays.
--
-- KEYS[1] the job's record (hash)   KEYS[2] its event stream
-- ARGV[1] fields to set (JSON object of strings: state, error, updatedAt)
-- ARGV[2] the retry's delay, seconds
-- ARGV[3] record TTL, seconds
-- ARGV[4] the retrying event (JSON)
-- ARGV[5] event stream MAXLEN

local ttl = tonumber(ARGV[3])
local delays = cjson.decode(redis.call('HGET', KEYS[1], 'retryDelays') or '[]')
delays[#delays + 1] = tonumber(ARGV[2])
local fields = cjson.decode(ARGV[1])
fields['retryDelays'] = cjson.encode(delays)
hset_table(KEYS[1], fields)
redis.call('EXPIRE', KEYS[1], ttl)
emit(KEYS[2], ARGV[5], ttl, 'state', ARGV[4])
return 1
