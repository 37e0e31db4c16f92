-- Records where chunks landed: a seq takes the new place when it has none,
-- or one written by an older attempt at the job (a worker frozen past its
-- lease may have landed its copy first); otherwise it keeps its place.
-- Entries are `{partition}:{position}:{attempt}`; one without an attempt
-- counts as attempt 0.
-- Answers {superseded, seq, attempt, seq, attempt, ...}: superseded is 1
-- when some seq holds a newer attempt's place (the caller's attempt is
-- superseded); each pair names a seq whose indexed copy (of `attempt`) lies
-- before an older attempt's copy in the partition, and wants writing again.
-- KEYS[1] the job's chunk index
-- ARGV[1] TTL (s), then pairs: seq, entry
local function parse(entry)
  local partition, position, attempt = string.match(entry, '^([^:]*):([^:]*):?(%d*)$')
  if attempt == nil or attempt == '' then attempt = '0' end
  return partition, tonumber(position), tonumber(attempt)
end
local answer = {0}
for i = 2, #ARGV, 2 do
  local seq, entry = ARGV[i], ARGV[i + 1]
  local partition, position, attempt = parse(entry)
  local indexed = redis.call('HGET', KEYS[1], seq)
  if not indexed then
    redis.call('HSET', KEYS[1], seq, entry)
  else
    local i_partition, i_position, i_attempt = parse(indexed)
    local newer_position, older_position, newer_attempt = nil, nil, nil
    if i_attempt < attempt then
      redis.call('HSET', KEYS[1], seq, entry)
      newer_position, older_position, newer_attempt = position, i_position, attempt
    elseif i_attempt > attempt then
      answer[1] = 1
      newer_position, older_position, newer_attempt = i_position, position, i_attempt
    end
    if newer_position and i_partition == partition and older_position > newer_position then
      table.insert(answer, tonumber(seq))
      table.insert(answer, newer_attempt)
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return answer
