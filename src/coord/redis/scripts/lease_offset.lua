-- Finds the next free offset from the cursor and moves the cursor past it.
-- Atomic so two instances never lease the same offset.
-- KEYS[1] leases hash, KEYS[2] cursor; ARGV[1] pool size, ARGV[2] job id
local size = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[1]) >= size then return -1 end
local start = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if start >= size then start = 0 end
for step = 0, size - 1 do
  local n = (start + step) % size
  if redis.call('HSETNX', KEYS[1], n, ARGV[2]) == 1 then
    redis.call('SET', KEYS[2], (n + 1) % size)
    return n
  end
end
return -1
