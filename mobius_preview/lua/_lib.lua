-- Helpers shared by the scripts: mobius_preview.scripts puts this file in front of
-- each one. Not a script itself; it touches only the keys it is handed.

-- Set every field of `fields` (a Lua table of strings) on hash `key`.
local function hset_table(key, fields)
  local flat = {}
  for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call('HSET', key, unpack(flat))
end

-- Fields travel as one JSON object of strings: far fewer arguments for redis-py to
-- encode than field, value, field, value...
local function hset_json(key, text)
  hset_table(key, cjson.decode(text))
end

-- One change of a job (`data`, a JSON object; `kind`: state, progress, playable) onto its
-- event stream, which keeps about `maxlen` entries and lives as long as the record.
local function emit(stream, maxlen, ttl, kind, data)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', kind, 'data', data)
  redis.call('EXPIRE', stream, ttl)
end

-- The space-separated words of `text` as a set (word -> true): the job states a rule
-- applies to, handed in from mobius_preview.states.
local function set_of(text)
  local set = {}
  for word in string.gmatch(text, '%S+') do set[word] = true end
  return set
end

-- An ended job's record folded: every field but those in `keep` (a set) moves into
-- one JSON object, the field `final`, merged under what an earlier fold put there
-- (loose fields are newer and win). Redis keeps a hash with any value over 64 bytes
-- as a hashtable, about 70 bytes a field; a finished job keeps its record for days,
-- so it keeps a few fields and one value instead (mobius_preview.records.get unfolds).
local function fold(record, keep)
  local all = redis.call('HGETALL', record)
  local final, moved = {}, {}
  for i = 1, #all, 2 do
    local name, value = all[i], all[i + 1]
    if name == 'final' then
      for old, text in pairs(cjson.decode(value)) do
        if final[old] == nil then final[old] = text end
      end
    elseif not keep[name] then
      final[name] = value
      moved[#moved + 1] = name
    end
  end
  if #moved > 0 then redis.call('HDEL', record, unpack(moved)) end
  redis.call('HSET', record, 'final', cjson.encode(final))
end

-- Add `n` to field `field` of hash `hash`, dropping the field at 0 (the count hashes hold
-- only projects with work).
local function add(hash, field, n)
  if redis.call('HINCRBY', hash, field, n) <= 0 then redis.call('HDEL', hash, field) end
end

-- The turns (mobius_preview.turns builds them, mobius_preview.layout names them), handed
-- to a script as a block of 11 KEYS from index `k`: the Celery lists (high, normal, low),
-- their rotations (same order), the backlog per priority, projects' waiting and running
-- counts, the released jobs, the paused projects; and 8 ARGV from index `a`: how many
-- jobs each Celery list may hold ahead of the workers, the cap of a project's running
-- jobs (0: none), the prefix of each priority's project lists, the priorities (the
-- backlog's fields).
local function turns_at(k, a)
  return {queues = {KEYS[k], KEYS[k + 1], KEYS[k + 2]},
          rotations = {KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]},
          backlog = KEYS[k + 6], waiting = KEYS[k + 7], running = KEYS[k + 8],
          released = KEYS[k + 9], paused = KEYS[k + 10],
          ahead = tonumber(ARGV[a]), cap = tonumber(ARGV[a + 1]),
          lists = {ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]},
          priorities = {ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]}}
end

-- The job id in a Celery message as kombu writes it (json.dumps: '"id": "<id>"' in its
-- headers; no other field is named "id"), as the liveness sweep reads it too.
local function message_id(message)
  return string.match(message, '"id": "([^"]+)"')
end

-- Hand one priority's waiting jobs to its Celery list until it holds `ahead`: each time
-- the oldest job of the project whose turn it is (the rotation's left end; it then moves
-- to the right end). A project at its cap keeps its place and is passed over; one whose
-- list empties, or that is paused, leaves the rotation. The feed builds a project list's
-- key from the prefix it is handed and the project it reads from the rotation: it knows
-- the name only from that read. Each job handed over is counted running for its project
-- once (`released`). Returns how many it handed over.
local function feed_priority(t, i)
  local room = t.ahead - redis.call('LLEN', t.queues[i])
  local rotation, handed, passed = t.rotations[i], 0, 0
  while room > 0 do
    local project = redis.call('LMOVE', rotation, rotation, 'LEFT', 'RIGHT')
    if not project then break end
    if redis.call('SISMEMBER', t.paused, project) == 1 then
      redis.call('RPOP', rotation)  -- it is at the right end now
    elseif t.cap > 0 and (tonumber(redis.call('HGET', t.running, project)) or 0) >= t.cap then
      passed = passed + 1
      if passed >= redis.call('LLEN', rotation) then break end  -- every project is at its cap
    else
      local list = t.lists[i] .. project
      local message = redis.call('RPOP', list)
      if message then
        redis.call('LPUSH', t.queues[i], message)
        add(t.backlog, t.priorities[i], -1)
        add(t.waiting, project, -1)
        local id = message_id(message)
        if id and redis.call('HSETNX', t.released, id, project) == 1 then
          redis.call('HINCRBY', t.running, project, 1)
        end
        room, handed, passed = room - 1, handed + 1, 0
      end
      if redis.call('LLEN', list) == 0 then redis.call('RPOP', rotation) end
    end
  end
  return handed
end

-- Top up every priority's Celery list from the projects' lists, in turns.
local function feed(t)
  local handed = 0
  for i = 1, #t.queues do handed = handed + feed_priority(t, i) end
  return handed
end

-- Job `id` ended (or was found ended): if it was counted running for its project, it no
-- longer is. Safe to call more than once: only the first call finds it.
local function release(t, id)
  local project = redis.call('HGET', t.released, id)
  if project then
    redis.call('HDEL', t.released, id)
    add(t.running, project, -1)
  end
end

-- A job has ended (succeeded, dead, cancelled): its last state `event` onto its stream,
-- which is kept only the events `window` from now on; its record folded, all but the
-- fields in `keep`; job `id` no longer counted running for its project; the feed tops up
-- the Celery lists. Every script that ends a job ends it here.
local function ended(record, stream, maxlen, window, event, keep, t, id)
  emit(stream, maxlen, tonumber(window), 'state', event)
  fold(record, set_of(keep))
  release(t, id)
  feed(t)
end
