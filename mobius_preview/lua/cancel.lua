-- Cancel a job: one waiting to start is cancelled at once; a running one is asked to
-- stop (its worker watches for the request field and stops the render). Any other
-- state is left as it is. A job cancelled at once is no longer counted running for its
-- project (if it had been handed to the workers' queue: a worker will skip it), and the
-- feed tops up the Celery lists. One still in its project's list stays there until its
-- turn, and is skipped then, as before.
--
-- KEYS[1] the job's record (hash)   KEYS[2] its event stream
-- KEYS[3..13] the turns (_lib.lua's turns_at)
-- ARGV[1] record TTL, seconds
-- ARGV[2] event stream MAXLEN
-- ARGV[3] states that are cancelled at once (space-separated)
-- ARGV[4] states that are asked to stop
-- ARGV[5] fields of a job cancelled at once (JSON object of strings)
-- ARGV[6] fields of a stop request (JSON object of strings)
-- ARGV[7] the cancelled event (JSON)
-- ARGV[8] the job's id
-- ARGV[9..16] the turns (_lib.lua's turns_at)
-- ARGV[17] the stream's TTL once cancelled, seconds (the events window)
-- ARGV[18] the record's fields left out of its fold once cancelled (space-separated)
-- Returns the state it found ('' for no record).

local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if set_of(ARGV[3])[state] then
  hset_json(KEYS[1], ARGV[5])
  ended(KEYS[1], KEYS[2], ARGV[2], ARGV[17], ARGV[7], ARGV[18], turns_at(3, 9), ARGV[8])
elseif set_of(ARGV[4])[state] then
  hset_json(KEYS[1], ARGV[6])
end
return state
