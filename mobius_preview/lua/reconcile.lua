-- Repair the turns' bookkeeping, a safety net run now and then by the heartbeat (the
-- scripts keep it right as they go; this undoes what a lost write or a job ended by an
-- older version could leave): a released job whose record is gone or ended is released;
-- the running counts are recounted from the released jobs; each handed-in project's
-- waiting count and place in the rotations are rebuilt from the lengths of its lists, and
-- the backlog from all of them. Then the feed runs.
--
-- KEYS[1..11] the turns (_lib.lua's turns_at)
-- then per released job (ARGV[9] of them): its record;
-- then per project (ARGV[10] of them): its lists, one per priority (in the turns' order).
-- ARGV[1..8]  the turns (_lib.lua's turns_at)
-- ARGV[9]     number of released jobs handed in
-- ARGV[10]    number of projects handed in (every project with waiting jobs or in a rotation)
-- ARGV[11]    the states in which a job has ended (space-separated)
-- then the released jobs' ids, then the projects.
-- Returns {jobs released, projects whose place in a rotation was repaired}.

local t = turns_at(1, 1)
local njobs, nprojects, ended = tonumber(ARGV[9]), tonumber(ARGV[10]), set_of(ARGV[11])
local freed = 0
for j = 1, njobs do
  local state = redis.call('HGET', KEYS[11 + j], 'state')
  if (not state or ended[state]) and redis.call('HEXISTS', t.released, ARGV[11 + j]) == 1 then
    release(t, ARGV[11 + j])
    freed = freed + 1
  end
end
local running = {}
local released = redis.call('HGETALL', t.released)
for n = 2, #released, 2 do running[released[n]] = (running[released[n]] or 0) + 1 end
redis.call('DEL', t.running)
for project, count in pairs(running) do redis.call('HSET', t.running, project, count) end

local members = {}
for i, rotation in ipairs(t.rotations) do
  members[i] = {}
  for _, project in ipairs(redis.call('LRANGE', rotation, 0, -1)) do
    members[i][project] = (members[i][project] or 0) + 1
  end
end
local backlog = {0, 0, 0}
local repaired = 0
local known = {}
for p = 1, nprojects do
  local project = ARGV[11 + njobs + p]
  known[project] = true
  local paused = redis.call('SISMEMBER', t.paused, project) == 1
  local total, fixed = 0, false
  for i, rotation in ipairs(t.rotations) do
    local length = redis.call('LLEN', KEYS[11 + njobs + 3 * (p - 1) + i])
    total, backlog[i] = total + length, backlog[i] + length
    local want = (length > 0 and not paused) and 1 or 0
    local have = members[i][project] or 0
    if have ~= want then
      redis.call('LREM', rotation, 0, project)
      if want == 1 then redis.call('RPUSH', rotation, project) end
      fixed = true
    end
  end
  if total > 0 then redis.call('HSET', t.waiting, project, total) else redis.call('HDEL', t.waiting, project) end
  if fixed then repaired = repaired + 1 end
end
-- The backlog is rebuilt only when every project with waiting jobs was handed in (one
-- accepted since the caller looked is left for the next time).
for _, project in ipairs(redis.call('HKEYS', t.waiting)) do
  if not known[project] then return {freed, repaired} end
end
for i, priority in ipairs(t.priorities) do
  if backlog[i] > 0 then redis.call('HSET', t.backlog, priority, backlog[i])
  else redis.call('HDEL', t.backlog, priority) end
end
feed(t)
return {freed, repaired}
