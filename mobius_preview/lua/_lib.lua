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
