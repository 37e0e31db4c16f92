-- Presents an idempotency key: a live key answers for itself (mismatch,
-- pending, or replay of its job while the job is not expired); a free one,
-- or one whose job is gone, is reserved for this request. Atomic so that of
-- concurrent claims exactly one wins.
-- KEYS[1] idempotency key
-- ARGV[1] request hash, ARGV[2] job key prefix, ARGV[3] reservation TTL (ms)
local held = redis.call('GET', KEYS[1])
if held then
  local kind, request, rest = string.match(held, '^(%a+):(%x+):?(.*)$')
  local live = kind == 'reserved'
  local dedup, id
  if kind == 'done' then
    dedup, id = string.match(rest, '^(%d):(.+)$')
    local record = id and redis.call('GET', ARGV[2] .. id)
    if record then
      local ok, decoded = pcall(cjson.decode, record)
      live = ok and decoded['status'] ~= 'expired'
    end
  end
  if live then
    if request ~= ARGV[1] then return {'mismatch'} end
    if kind == 'reserved' then return {'pending'} end
    return {'replay', id, dedup}
  end
end
redis.call('SET', KEYS[1], 'reserved:' .. ARGV[1], 'PX', ARGV[3])
return {'won'}
