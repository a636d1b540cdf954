-- Resume a paused project: it joins the rotation of each priority where it has jobs
-- waiting (at the end: it takes its turn after the projects already waiting), and the
-- feed runs.
--
-- KEYS[1..11]  the turns (_lib.lua's turns_at)
-- KEYS[12..14] the project's lists, one per priority (in the turns' order)
-- ARGV[1..8]   the turns (_lib.lua's turns_at)
-- ARGV[9]      the project
-- Returns 1 when it was paused, else 0.

local t = turns_at(1, 1)
local project = ARGV[9]
local was = redis.call('SREM', t.paused, project)
for i, rotation in ipairs(t.rotations) do
  if redis.call('LLEN', KEYS[11 + i]) > 0 and not redis.call('LPOS', rotation, project) then
    redis.call('RPUSH', rotation, project)
  end
end
feed(t)
return was
