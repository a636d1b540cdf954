-- Accept jobs: for each, unless its record exists in a state that blocks it or the
-- queues hold `limit` jobs, write its record, start its event stream afresh and push
-- its message onto its queue. All jobs in one round trip and atomically, so a job is
-- either recorded and queued, or neither. When every job was accepted, the batch's
-- task-sent events go out too (PUBLISH).
--
-- KEYS: the job queues (lists, ARGV[1] of them; their total length is the depth),
--       then per job: its record (hash), its queue (list), its event stream.
-- ARGV[1]  number of job queues at the front of KEYS
-- ARGV[2]  limit: most jobs the queues may hold (PREVIEW_QUEUE_MAX)
-- ARGV[3]  '1' on a dead-letter replay, else '0'
-- ARGV[4]  record TTL, seconds
-- ARGV[5]  event stream MAXLEN
-- ARGV[6]  channel of the task-sent events ('' for none)
-- ARGV[7]  the task-sent events message
-- ARGV[8]  the "queued" event (JSON) each new stream starts with
-- ARGV[9]  states a record may be in and still be submitted again (space-separated)
-- ARGV[10] states a record may be in and be accepted again on a replay
-- then per job: its record's fields (JSON object of strings), its message.
-- Returns per job 'claimed:<depth>', 'exists:<state>' or 'full:<depth>'.

local nqueues, limit, replay, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local maxlen = ARGV[5]
local again, replayable = set_of(ARGV[9]), set_of(ARGV[10])
local depth = 0
for q = 1, nqueues do depth = depth + redis.call('LLEN', KEYS[q]) end
local out, jobs, accepted = {}, (#KEYS - nqueues) / 3, 0
for j = 1, jobs do
  local first = nqueues + 3 * (j - 1)
  local record, queue, stream = KEYS[first + 1], KEYS[first + 2], KEYS[first + 3]
  local fields, message = ARGV[9 + 2 * j], ARGV[10 + 2 * j]
  local state = redis.call('HGET', record, 'state')
  if state and not (again[state] or (replay == '1' and replayable[state])) then
    out[j] = 'exists:' .. state
  elseif depth >= limit then
    out[j] = 'full:' .. depth
  else
    redis.call('DEL', record, stream)
    hset_json(record, fields)
    redis.call('EXPIRE', record, ttl)
    emit(stream, maxlen, ttl, 'state', ARGV[8])
    redis.call('LPUSH', queue, message)
    depth = depth + 1
    accepted = accepted + 1
    out[j] = 'claimed:' .. depth
  end
end
if accepted == jobs and ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return out
