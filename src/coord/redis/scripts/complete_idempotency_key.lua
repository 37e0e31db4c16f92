-- Binds a reserved key to its job, unless the reservation lapsed and
-- another request took the key meanwhile.
-- KEYS[1] idempotency key; ARGV[1] the reservation, ARGV[2] the done value, ARGV[3] TTL (ms)
local held = redis.call('GET', KEYS[1])
if (not held) or held == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 0
