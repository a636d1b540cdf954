-- A worker starting a job: nothing to do for an ended one (its message came back
-- before the ack landed); otherwise count the delivery and mark it running, in one
-- round trip. When the outcome is known before the job starts (its preview is
-- stored: a cache hit), the same call also marks it succeeded, unless it was
-- delivered more than the delivery limit. A job found ended, or ended here, is no longer
-- counted running for its project; then the feed tops up the Celery lists (a worker has
-- just taken a message off one).
--
-- KEYS[1] the job's record (hash)   KEYS[2] its event stream
-- KEYS[3..13] the turns (_lib.lua's turns_at)
-- ARGV[1] fields to set (JSON object of strings: state running, attempts, worker...)
-- ARGV[2] record TTL, seconds
-- ARGV[3] now (ISO 8601): firstStartedAt on the first start
-- ARGV[4] delivery limit for marking it succeeded here
-- ARGV[5] the succeeded fields (JSON), '' for a plain start
-- ARGV[6] the succeeded event (JSON), '' for a plain start
-- ARGV[7] the running event (JSON)
-- ARGV[8] event stream MAXLEN
-- ARGV[9] the states in which a job has ended (space-separated)
-- ARGV[10] the job's id
-- ARGV[11..18] the turns (_lib.lua's turns_at)
-- ARGV[19] the stream's TTL once the job has ended here, seconds (the events window)
-- ARGV[20] the record's fields left out of its fold once ended here (space-separated)
-- Returns {state before, deliveries, outcome of an ended job, submittedTs,
-- retryDelays, firstStartedAt}.

local t = turns_at(3, 11)
local state = redis.call('HGET', KEYS[1], 'state')
if state and set_of(ARGV[9])[state] then
  release(t, ARGV[10])
  feed(t)
  return {state, '0', redis.call('HGET', KEYS[1], 'outcome') or '', '', '', ''}
end
local ttl = tonumber(ARGV[2])
local deliveries = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
local before = redis.call('HMGET', KEYS[1], 'submittedTs', 'retryDelays', 'firstStartedAt')
local fields = cjson.decode(ARGV[1])
if not before[3] then fields['firstStartedAt'] = ARGV[3] end
local done = ARGV[5] ~= '' and deliveries <= tonumber(ARGV[4])
if done then
  redis.call('HINCRBY', KEYS[1], 'completions', 1)
  for name, value in pairs(cjson.decode(ARGV[5])) do fields[name] = value end
end
hset_table(KEYS[1], fields)
redis.call('EXPIRE', KEYS[1], ttl)
emit(KEYS[2], ARGV[8], ttl, 'state', ARGV[7])
if done then
  ended(KEYS[1], KEYS[2], ARGV[8], ARGV[19], ARGV[6], ARGV[20], t, ARGV[10])
else
  feed(t)
end
return {state or '', tostring(deliveries), '', before[1] or '', before[2] or '', before[3] or ''}
