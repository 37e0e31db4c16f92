-- Finds the next free offset from the cursor and moves the cursor past it.
-- Atomic so two instances never lease the same offset.
-- KEYS[1] leases hash, KEYS[2] cursor, KEYS[3] pool epoch;
-- ARGV[1] pool size, ARGV[2] job id, ARGV[3] quarantine (ms).
-- Returns the offset, -1 when the pool is full, or -2 while the pool is
-- quarantined: every instance writes the epoch when it connects, so a
-- missing epoch means Redis lost its data, leases of running jobs included.
-- Leasing waits until those jobs have seen their records gone and stopped.
local size = tonumber(ARGV[1])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = tonumber(redis.call('GET', KEYS[3]) or '')
if not epoch then
  epoch = now_ms
  redis.call('SET', KEYS[3], epoch)
end
if now_ms < epoch + tonumber(ARGV[3]) then return -2 end
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
