-- Shared by the scripts (prepended to each): Redis's clock, and the tokens log's running total.
-- KEYS[1] requests log (zset: request id -> admission ms); KEYS[2] tokens log (zset:
-- "id|tokens" -> admission ms); KEYS[4] the tokens log's total (kept in step, so no call has to
-- sum the whole log).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function amount(member)
  return tonumber(string.match(member, '|(%d+)$')) or 0
end

-- The tokens still in the window, after dropping (if `drop`) or just discounting the expired.
local function tokens_in_window(since, drop)
  local total = redis.call('GET', KEYS[4])
  if not total then
    total = 0
    for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do total = total + amount(member) end
  else
    total = tonumber(total)
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', since)) do
    total = total - amount(member)
  end
  if drop then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
    redis.call('SET', KEYS[4], total, 'KEEPTTL')
  end
  return math.max(0, total)
end

-- Time until the newest entry of a log leaves the window: its budget is whole again then.
local function full_reset(key, window)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #newest == 0 then return 0 end
  return math.max(0, tonumber(newest[2]) + window - now)
end
