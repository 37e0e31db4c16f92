-- Stores a new job and makes its fingerprint claim live, in one step so no
-- reader sees a live fingerprint without its record.
-- The offset's public view (`{prefix}:offset:{n}`, docs/REDIS.md) now names it.
-- With KEYS[6], the job queue's stream, the job is queued in the same step
-- (`JobIntake`): never stored without being queued. A job already stored
-- is then left as it is: a call repeated after one that landed queues it
-- no second time. Answers 1 when it stored the job, 0 when it found it
-- stored already.
-- KEYS[1] job, KEYS[2] fingerprint, KEYS[3] user index, KEYS[4] expiry index, KEYS[5] offset view, KEYS[6] queue (optional)
-- ARGV[1] record JSON, ARGV[2] job id, ARGV[3] expiry score or '', ARGV[4] changes channel, ARGV[5] status, ARGV[6] spec JSON (with KEYS[6])
if KEYS[6] and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
-- A plain SET also drops the admitting claim's TTL.
redis.call('SET', KEYS[2], 'live:' .. ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
local t = redis.call('TIME')
redis.call('DEL', KEYS[5])
redis.call('HSET', KEYS[5], 'jobId', ARGV[2], 'status', ARGV[5], 'rows', 0, 'chunks', 0,
  'updatedAt', t[1] * 1000 + math.floor(t[2] / 1000))
if KEYS[6] then redis.call('XADD', KEYS[6], '*', 'spec', ARGV[6]) end
redis.call('PUBLISH', ARGV[4], ARGV[2] .. ' ' .. ARGV[1])
return 1
