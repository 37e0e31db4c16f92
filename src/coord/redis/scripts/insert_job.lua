-- Stores a new job and makes its fingerprint claim live, in one step so no
-- reader sees a live fingerprint without its record.
-- KEYS[1] job, KEYS[2] fingerprint, KEYS[3] user index, KEYS[4] expiry index
-- ARGV[1] record JSON, ARGV[2] job id, ARGV[3] expiry score or '', ARGV[4] changes channel
redis.call('SET', KEYS[1], ARGV[1])
-- A plain SET also drops the admitting claim's TTL.
redis.call('SET', KEYS[2], 'live:' .. ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 0
