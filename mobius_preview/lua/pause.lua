-- Pause a project: it leaves every rotation, so its jobs wait in its lists until it is
-- resumed; accepted jobs keep joining its lists. Its jobs already handed to a Celery
-- list but not yet taken by a worker come back to the oldest end of its lists (no longer
-- counted running). Jobs a worker holds run to their end. Then the feed gives the freed
-- places to other projects.
--
-- KEYS[1..11]  the turns (_lib.lua's turns_at)
-- KEYS[12..14] the project's lists, one per priority (in the turns' order)
-- ARGV[1..8]   the turns (_lib.lua's turns_at)
-- ARGV[9]      the project
-- Returns how many of its jobs came back from the Celery lists.

local t = turns_at(1, 1)
local project = ARGV[9]
redis.call('SADD', t.paused, project)
local back = 0
for i, queue in ipairs(t.queues) do
  redis.call('LREM', t.rotations[i], 0, project)
  -- newest first, each onto the oldest end of the project's list: they keep their order,
  -- and come before the project's jobs that were never handed over
  for _, message in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    if string.match(message, '"projectId": "([^"]+)"') == project then
      redis.call('LREM', queue, 1, message)
      redis.call('RPUSH', KEYS[11 + i], message)
      redis.call('HINCRBY', t.backlog, t.priorities[i], 1)
      redis.call('HINCRBY', t.waiting, project, 1)
      local id = message_id(message)
      if id then release(t, id) end
      back = back + 1
    end
  end
end
feed(t)
return back
