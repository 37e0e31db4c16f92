-- Resets a delivery's idle time only while this consumer still owns it, so
-- a slow worker cannot steal back a job another worker has taken over.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #pending == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
