-- A job is dead: its dead letter is written and its record marked dead, in one step,
-- and the record folded like every ended job's.
--
-- KEYS[1] the dead-letter hash   KEYS[2] the job's record (hash)   KEYS[3] its event stream
-- ARGV[1] the job's id (the dead letter's field)
-- ARGV[2] the dead letter (JSON)
-- ARGV[3] fields to set (JSON object of strings: state dead, error, finishedAt...)
-- ARGV[4] record TTL, seconds
-- ARGV[5] the dead event (JSON)
-- ARGV[6] event stream MAXLEN
-- ARGV[7] the stream's TTL from now on, seconds (the events window of an ended job)
-- ARGV[8] the record's fields left out of its fold (space-separated)

redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
hset_json(KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
emit(KEYS[3], ARGV[6], tonumber(ARGV[7]), 'state', ARGV[5])
fold(KEYS[2], set_of(ARGV[8]))
return 1
