-- Releases every offset `job` holds (at most one): undoes a lease whose
-- answer was lost. One pass over the pool's hash (at most its size).
-- KEYS[1] leases hash; ARGV[1] job id
local leases = redis.call('HGETALL', KEYS[1])
for i = 1, #leases, 2 do
  if leases[i + 1] == ARGV[1] then redis.call('HDEL', KEYS[1], leases[i]) end
end
return 0
