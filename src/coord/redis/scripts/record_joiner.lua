-- Lists a live job among the jobs of a user who joined it by dedup. Only
-- while the job's record exists, so a join racing the job's expiry cannot
-- leave an entry that finish_expiry would not remove.
-- KEYS[1] job, KEYS[2] the job's joiners set, KEYS[3] the joiner's user index
-- ARGV[1] job id
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], KEYS[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 1
