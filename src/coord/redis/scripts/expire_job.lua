-- Marks one due job expired and takes it out of the expiry index in the
-- same step: whichever caller's script runs first gets the job, every other
-- caller finds it no longer indexed. Returns 1 when this caller expired it,
-- 2 when the record changed since it was read (retry), 0 otherwise.
-- KEYS[1] job, KEYS[2] expiry index, KEYS[3] the offset's public view
-- ARGV[1] record as read, ARGV[2] expired record, ARGV[3] job id, ARGV[4] now (µs), ARGV[5] channel
local score = redis.call('ZSCORE', KEYS[2], ARGV[3])
if not score or tonumber(score) > tonumber(ARGV[4]) then return 0 end
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
if current ~= ARGV[1] then return 2 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('HGET', KEYS[3], 'jobId') == ARGV[3] then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[3], 'status', 'expired', 'updatedAt', t[1] * 1000 + math.floor(t[2] / 1000))
end
redis.call('PUBLISH', ARGV[5], ARGV[3])
return 1
