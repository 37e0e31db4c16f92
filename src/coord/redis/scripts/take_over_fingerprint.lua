-- Moves a fingerprint from a live job too stale to share to a new admitting
-- claim, only while it still points at that job: a compare-and-set, so that
-- of the submissions that found the same stale job exactly one starts the
-- fresh one. Returns 1 when the caller holds the claim (also when it already
-- did: a repeat after a lost reply), 0 when another holder came first.
-- KEYS[1] fingerprint key
-- ARGV[1] 'live:' .. stale job id, ARGV[2] 'admitting:' .. new job id, ARGV[3] admitting TTL (ms)
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[2] then return 1 end
if holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
