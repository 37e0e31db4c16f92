-- Takes a fingerprint for `job` unless another submission is admitting it or
-- a live (not expired) job holds it. Atomic so that of any number of
-- concurrent claimants exactly one wins.
-- KEYS[1] fingerprint key
-- ARGV[1] job id, ARGV[2] job key prefix, ARGV[3] admitting TTL (ms)
local holder = redis.call('GET', KEYS[1])
if holder then
  local kind, id = string.match(holder, '^(%a+):(.*)$')
  if kind == 'admitting' then
    if id == ARGV[1] then return {'won'} end
    return {'pending'}
  end
  if kind == 'live' then
    local record = redis.call('GET', ARGV[2] .. id)
    if record then
      local ok, decoded = pcall(cjson.decode, record)
      -- An expiring job's result is going away: start afresh.
      if ok and decoded['status'] ~= 'expired' then return {'existing', record} end
    end
  end
end
redis.call('SET', KEYS[1], 'admitting:' .. ARGV[1], 'PX', ARGV[3])
return {'won'}
