-- Admit one request under three limits at once, or refuse it without touching any budget.
-- KEYS: 1 requests log (zset: request id -> admission ms), 2 tokens log (zset: "id|tokens" ->
--       admission ms), 3 concurrency leases (zset: request id -> lease expiry ms)
-- ARGV: window_ms, rpm, tpm, concurrency, request_id, tokens, lease_ms
-- Time is Redis's own clock, so web processes on machines with skewed clocks agree.
-- Returns {verdict, remaining_requests, remaining_tokens, reset_requests_ms, reset_tokens_ms,
--          retry_after_ms, running}; verdict: ok | requests | tokens | concurrency | never
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm, tpm, concurrency = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local request_id, tokens, lease_expiry = ARGV[5], tonumber(ARGV[6]), now + tonumber(ARGV[7])
local since = now - window

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)

local requests = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local token_log = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local running = redis.call('ZCARD', KEYS[3])
local used_requests = #requests / 2
local used_tokens, entries = 0, {}
for i = 1, #token_log, 2 do
  local amount = tonumber(string.match(token_log[i], '|(%d+)$')) or 0
  used_tokens = used_tokens + amount
  entries[#entries + 1] = {amount, tonumber(token_log[i + 1])}
end

-- Time until the newest entry leaves the window: the budget is whole again then.
local function full_reset(log)
  if #log == 0 then return 0 end
  return math.max(0, tonumber(log[#log]) + window - now)
end
-- Time until at least `needed` tokens have left the window.
local function tokens_free_after(needed)
  local freed = 0
  for _, entry in ipairs(entries) do
    freed = freed + entry[1]
    if freed >= needed then return math.max(1, entry[2] + window - now) end
  end
  return window
end

local verdict, retry_after = 'ok', 0
if tokens > tpm then
  verdict = 'never'
elseif used_requests >= rpm then
  verdict, retry_after = 'requests', math.max(1, tonumber(requests[2]) + window - now)
elseif used_tokens + tokens > tpm then
  verdict, retry_after = 'tokens', tokens_free_after(used_tokens + tokens - tpm)
elseif running >= concurrency then
  verdict = 'concurrency'
end

if verdict == 'ok' then
  redis.call('ZADD', KEYS[1], now, request_id)
  redis.call('ZADD', KEYS[2], now, request_id .. '|' .. tokens)
  redis.call('ZADD', KEYS[3], lease_expiry, request_id)
  redis.call('PEXPIRE', KEYS[1], window)
  redis.call('PEXPIRE', KEYS[2], window)
  redis.call('PEXPIREAT', KEYS[3], redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2])
  used_requests, used_tokens, running = used_requests + 1, used_tokens + tokens, running + 1
  requests[#requests + 1], requests[#requests + 2] = request_id, now
  token_log[#token_log + 1], token_log[#token_log + 2] = request_id, now
end
return {verdict, math.max(0, rpm - used_requests), math.max(0, tpm - used_tokens), full_reset(requests),
        full_reset(token_log), retry_after, running}
