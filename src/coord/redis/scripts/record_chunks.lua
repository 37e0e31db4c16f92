-- Records where chunks landed: a seq takes the new place when it has none,
-- or one written by an older attempt at the job (a worker frozen past its
-- lease may have landed its copy first); otherwise it keeps its place.
-- Entries are `{partition}:{position}:{attempt}`; one without an attempt
-- counts as attempt 0.
-- Answers {superseded, seq, attempt, seq, attempt, ...}: superseded is 1
-- when some seq holds a newer attempt's place (the caller's attempt is
-- superseded); each pair names a seq whose indexed copy (of `attempt`) lies
-- before an older attempt's copy in the partition, and wants writing again.
-- A batch is read with one HMGET and written with one HSET (its seqs are
-- distinct): Redis runs a script on its one thread, and a call per seq
-- (about 1,000 for a 512-chunk batch) would hold every other client.
-- KEYS[1] the job's chunk index
-- ARGV[1] TTL (s), then pairs: seq, entry
local function parse(entry)
  local partition, position, attempt = string.match(entry, '^([^:]*):([^:]*):?(%d*)$')
  if attempt == nil or attempt == '' then attempt = '0' end
  return partition, tonumber(position), tonumber(attempt)
end
-- Lua's `unpack` is bounded by its C stack (about 8,000 values).
local STEP = 1000
-- The index takes no gaps, so its length is the next seq: a batch whose
-- seqs are all at or past it (a running job's next batch, nearly every
-- call) holds none the index has, and is written as it is, unread. Only a
-- hash that lost writes (Redis back from an older snapshot) can hold a seq
-- past its length; a newer attempt's copy there could then give way to an
-- older one's, which has the same rows.
local lowest = math.huge
for i = 2, #ARGV, 2 do lowest = math.min(lowest, tonumber(ARGV[i])) end
if redis.call('HLEN', KEYS[1]) <= lowest then
  -- From ARGV[2] in steps of an even length: seq and entry stay together.
  for from = 2, #ARGV, STEP do
    redis.call('HSET', KEYS[1], unpack(ARGV, from, math.min(from + STEP - 1, #ARGV)))
  end
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  return {0}
end
local seqs = {}
for i = 2, #ARGV, 2 do seqs[#seqs + 1] = ARGV[i] end
local indexed = {}
for from = 1, #seqs, STEP do
  local got = redis.call('HMGET', KEYS[1], unpack(seqs, from, math.min(from + STEP - 1, #seqs)))
  for n, value in ipairs(got) do indexed[from + n - 1] = value end
end
local answer = {0}
local writes = {}
for n, seq in ipairs(seqs) do
  local entry = ARGV[2 * n + 1]
  local current = indexed[n]
  if not current then
    writes[#writes + 1] = seq
    writes[#writes + 1] = entry
  else
    local partition, position, attempt = parse(entry)
    local i_partition, i_position, i_attempt = parse(current)
    local newer_position, older_position, newer_attempt = nil, nil, nil
    if i_attempt < attempt then
      writes[#writes + 1] = seq
      writes[#writes + 1] = entry
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
for from = 1, #writes, STEP do
  redis.call('HSET', KEYS[1], unpack(writes, from, math.min(from + STEP - 1, #writes)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return answer
