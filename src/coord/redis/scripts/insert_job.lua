-- Stores a new job and makes its fingerprint claim live, in one step so no
-- reader sees a live fingerprint without its record.
-- The offset's public view (`{prefix}:offset:{n}`, docs/REDIS.md) now names it.
-- KEYS[1] job, KEYS[2] fingerprint, KEYS[3] user index, KEYS[4] expiry index, KEYS[5] offset view
-- ARGV[1] record JSON, ARGV[2] job id, ARGV[3] expiry score or '', ARGV[4] changes channel, ARGV[5] status
redis.call('SET', KEYS[1], ARGV[1])
-- A plain SET also drops the admitting claim's TTL.
redis.call('SET', KEYS[2], 'live:' .. ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
local t = redis.call('TIME')
redis.call('DEL', KEYS[5])
redis.call('HSET', KEYS[5], 'jobId', ARGV[2], 'status', ARGV[5], 'rows', 0, 'chunks', 0,
  'updatedAt', t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('PUBLISH', ARGV[4], ARGV[2] .. ' ' .. ARGV[1])
return 0
