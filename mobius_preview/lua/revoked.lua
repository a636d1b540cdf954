-- A worker dropped a job's message without running it (Celery's revoke, after a cancel):
-- if the job has ended (or its record is gone), it is no longer counted running for its
-- project, and the feed tops up the Celery lists (a message left one).
--
-- KEYS[1] the job's record (hash)
-- KEYS[2..12] the turns (_lib.lua's turns_at)
-- ARGV[1] the job's id
-- ARGV[2] the states in which a job has ended (space-separated)
-- ARGV[3..10] the turns (_lib.lua's turns_at)
-- Returns how many jobs the feed handed over.

local t = turns_at(2, 3)
local state = redis.call('HGET', KEYS[1], 'state')
if not state or set_of(ARGV[2])[state] then release(t, ARGV[1]) end
return feed(t)
