-- Writes an updated record only if nobody changed it since it was read (the
-- optimistic half of `update_job`); indexes its expiry and announces it.
-- The record as read is named by its SHA-1, so the call carries the record
-- once. Answers `{1, ''}` when written, `{-1, ''}` when the job is gone, and
-- on a lost race `{0, current}`, the record to apply the update to instead
-- (saving the caller a `GET`). The change is announced with the record, so
-- long-polls woken by it need no `GET` either.
-- The offset's public view (`{prefix}:offset:{n}`, docs/REDIS.md) follows in
-- the same step, while the offset is this job's.
-- KEYS[1] job, KEYS[2] expiry index, KEYS[3] offset view
-- ARGV[1] SHA-1 (hex) of the record as read, ARGV[2] new record, ARGV[3] job id, ARGV[4] expiry score or '', ARGV[5] channel,
-- ARGV[6] status, ARGV[7] rows, ARGV[8] chunks
local current = redis.call('GET', KEYS[1])
if not current then return {-1, ''} end
if redis.sha1hex(current) ~= ARGV[1] then return {0, current} end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
if redis.call('HGET', KEYS[3], 'jobId') == ARGV[3] then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[3], 'status', ARGV[6], 'rows', ARGV[7], 'chunks', ARGV[8],
    'updatedAt', t[1] * 1000 + math.floor(t[2] / 1000))
end
redis.call('PUBLISH', ARGV[5], ARGV[3] .. ' ' .. ARGV[2])
return {1, ''}
