-- Admit one request under three limits at once, or refuse it without touching any budget.
-- KEYS: 1 requests log, 2 tokens log, 3 concurrency leases (zset: request id -> lease expiry ms),
--       4 tokens total (see window.lua)
-- ARGV: window_ms, rpm, tpm, concurrency, request_id, tokens, lease_ms, dry_run ('1': judge only, take nothing)
-- Returns {verdict, remaining_requests, remaining_tokens, reset_requests_ms, reset_tokens_ms,
--          retry_after_ms, running}; verdict: ok | requests | tokens | concurrency | never
local window = tonumber(ARGV[1])
local rpm, tpm, concurrency = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local request_id, tokens, lease_expiry = ARGV[5], tonumber(ARGV[6]), now + tonumber(ARGV[7])
local since = now - window

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local used_requests = redis.call('ZCARD', KEYS[1])
local used_tokens = tokens_in_window(since, true)
local running = redis.call('ZCARD', KEYS[3])

-- Time until at least `needed` tokens have left the window (oldest entries first).
local function tokens_free_after(needed)
  local freed, offset = 0, 0
  while true do
    local batch = redis.call('ZRANGE', KEYS[2], offset, offset + 99, 'WITHSCORES')
    if #batch == 0 then return window end
    for i = 1, #batch, 2 do
      freed = freed + amount(batch[i])
      if freed >= needed then return math.max(1, tonumber(batch[i + 1]) + window - now) end
    end
    offset = offset + 100
  end
end

local verdict, retry_after = 'ok', 0
if tokens > tpm then
  verdict = 'never'
elseif used_requests >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  verdict, retry_after = 'requests', math.max(1, tonumber(oldest[2]) + window - now)
elseif used_tokens + tokens > tpm then
  verdict, retry_after = 'tokens', tokens_free_after(used_tokens + tokens - tpm)
elseif running >= concurrency then
  verdict = 'concurrency'
end

if verdict == 'ok' and ARGV[8] ~= '1' then
  redis.call('ZADD', KEYS[1], now, request_id)
  redis.call('ZADD', KEYS[2], now, request_id .. '|' .. tokens)
  redis.call('ZADD', KEYS[3], lease_expiry, request_id)
  used_requests, used_tokens, running = used_requests + 1, used_tokens + tokens, running + 1
  redis.call('SET', KEYS[4], used_tokens, 'PX', window)
  redis.call('PEXPIRE', KEYS[1], window)
  redis.call('PEXPIRE', KEYS[2], window)
  redis.call('PEXPIREAT', KEYS[3], redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2])
end
return {verdict, math.max(0, rpm - used_requests), math.max(0, tpm - used_tokens), full_reset(KEYS[1], window),
        full_reset(KEYS[2], window), retry_after, running}
