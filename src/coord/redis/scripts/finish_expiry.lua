-- Forgets an expired job; the fingerprint and the offset only if they still
-- belong to it (a new job may already hold the fingerprint).
-- KEYS[1] job, KEYS[2] fingerprint, KEYS[3] leases, KEYS[4] user index, KEYS[5] expiry index,
-- KEYS[6] the offset's public view (dropped while it names this job),
-- KEYS[7] the job's joiners set (the user indexes of those who joined it,
-- which the script removes the job from: key names read from data)
-- ARGV[1] job id, ARGV[2] offset, ARGV[3] channel
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == 'live:' .. ARGV[1] then redis.call('DEL', KEYS[2]) end
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[3], ARGV[2]) end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if redis.call('HGET', KEYS[6], 'jobId') == ARGV[1] then redis.call('DEL', KEYS[6]) end
for _, index in ipairs(redis.call('SMEMBERS', KEYS[7])) do redis.call('ZREM', index, ARGV[1]) end
redis.call('DEL', KEYS[7])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 0
