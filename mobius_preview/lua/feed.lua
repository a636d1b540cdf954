-- Top up the Celery lists from the projects' lists, in turns (_lib.lua's feed): what the
-- heartbeat runs every few seconds, a safety net behind the scripts that feed as they
-- go (accept, start, finish, bury, cancel, stopped, resume).
--
-- KEYS[1..11] the turns (_lib.lua's turns_at)
-- ARGV[1..8]  the turns (_lib.lua's turns_at)
-- Returns how many jobs it handed to the Celery lists.

return feed(turns_at(1, 1))
