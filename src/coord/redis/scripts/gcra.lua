-- GCRA, as governor computes it: a request is allowed when the theoretical
-- arrival time (TAT) is at most `burst - 1` intervals ahead of now. Uses the
-- server's clock so instances with skewed clocks agree. Returns -1 when
-- allowed, else the wait in microseconds.
-- KEYS[1] the user's TAT; ARGV[1] emission interval (µs), ARGV[2] burst
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
-- The key vanishes once the allowance is full again.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
return -1
