-- Records where chunks landed: a seq takes the new place when it has none,
-- or one written by an older attempt at the job (a worker frozen past its
-- lease may have landed its copy first); otherwise it keeps its place.
-- Answers 1, or 0 when some seq holds a newer attempt's place (the caller's
-- attempt is superseded). Entries are `{partition}:{position}:{attempt}`;
-- one without an attempt counts as attempt 0.
-- KEYS[1] the job's chunk index
-- ARGV[1] TTL (s), then pairs: seq, entry
local function attempt_of(entry)
  return tonumber(string.match(entry, '^[^:]*:[^:]*:(%d+)$') or '0')
end
local superseded = 0
for i = 2, #ARGV, 2 do
  local attempt = attempt_of(ARGV[i + 1])
  local indexed = redis.call('HGET', KEYS[1], ARGV[i])
  local by = -1
  if indexed then by = attempt_of(indexed) end
  if by < attempt then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  elseif by > attempt then
    superseded = 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1 - superseded
