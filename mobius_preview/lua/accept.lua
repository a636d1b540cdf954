-- Accept jobs: for each, unless its record exists in a state that blocks it, or the
-- queues hold `limit` jobs, or its project already has its most jobs waiting, write its
-- record, start its event stream afresh and push its message onto its project's list for
-- its priority (the project joins that priority's rotation when the list was empty and
-- it is not paused). Then the feed hands jobs of that priority to its Celery list, in
-- turns, while it has room: a job accepted into an idle system is on its Celery list
-- when this returns, and each job of a batch meets the limits as if submitted alone.
-- All jobs in one round trip and atomically, so a job is either recorded and queued, or
-- neither. When every job was accepted, the batch's task-sent events go out too (PUBLISH).
--
-- KEYS[1..11] the turns (_lib.lua's turns_at): the Celery lists, their rotations, the
--       backlog, projects waiting, projects running, released jobs, paused projects;
--       the Celery lists' lengths and the backlog's counts add up to the depth;
--       then per job: its record (hash), its project's list at its priority, its event stream.
-- ARGV[1]  limit: most jobs waiting in all (PREVIEW_QUEUE_MAX)
-- ARGV[2]  most jobs of one project waiting their turn (PREVIEW_PROJECT_QUEUE_MAX; 0: no such limit)
-- ARGV[3]  '1' on a dead-letter replay, else '0'
-- ARGV[4]  record TTL, seconds
-- ARGV[5]  event stream MAXLEN
-- ARGV[6]  channel of the task-sent events ('' for none)
-- ARGV[7]  the task-sent events message
-- ARGV[8]  the "queued" event (JSON) each new stream starts with
-- ARGV[9]  states a record may be in and still be submitted again (space-separated)
-- ARGV[10] states a record may be in and be accepted again on a replay
-- ARGV[11..18] the turns (_lib.lua's turns_at): jobs ahead, the project cap, the project
--          lists' prefixes, the priorities
-- then per job: its record's fields (JSON object of strings, with projectId and
-- priority), its message.
-- Returns per job 'claimed:<depth>', 'exists:<state>', 'full:<depth>' or
-- 'projectfull:<jobs of its project waiting>'.

local t = turns_at(1, 11)
local limit, project_max, replay, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local maxlen = ARGV[5]
local again, replayable = set_of(ARGV[9]), set_of(ARGV[10])
local rank = {}
local depth = 0
for i, priority in ipairs(t.priorities) do
  rank[priority] = i
  depth = depth + redis.call('LLEN', t.queues[i]) + (tonumber(redis.call('HGET', t.backlog, priority)) or 0)
end
local nkeys = #t.queues + 8
local out, jobs, accepted = {}, (#KEYS - nkeys) / 3, 0
for j = 1, jobs do
  local first = nkeys + 3 * (j - 1)
  local record, list, stream = KEYS[first + 1], KEYS[first + 2], KEYS[first + 3]
  local fields, message = cjson.decode(ARGV[17 + 2 * j]), ARGV[18 + 2 * j]
  local project, priority = fields['projectId'], fields['priority']
  local state = redis.call('HGET', record, 'state')
  local waiting = tonumber(redis.call('HGET', t.waiting, project)) or 0
  if state and not (again[state] or (replay == '1' and replayable[state])) then
    out[j] = 'exists:' .. state
  elseif depth >= limit then
    out[j] = 'full:' .. depth
  elseif project_max > 0 and waiting >= project_max then
    out[j] = 'projectfull:' .. waiting
  else
    redis.call('DEL', record, stream)
    hset_table(record, fields)
    redis.call('EXPIRE', record, ttl)
    emit(stream, maxlen, ttl, 'state', ARGV[8])
    if redis.call('LPUSH', list, message) == 1 and redis.call('SISMEMBER', t.paused, project) == 0 then
      redis.call('RPUSH', t.rotations[rank[priority]], project)
    end
    redis.call('HINCRBY', t.backlog, priority, 1)
    redis.call('HINCRBY', t.waiting, project, 1)
    feed_priority(t, rank[priority])  -- as if submitted alone: a batch meets the same limits
    depth = depth + 1
    accepted = accepted + 1
    out[j] = 'claimed:' .. depth
  end
end
if accepted == jobs and ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return out
