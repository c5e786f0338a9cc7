-- The state of a key's request and token budgets, changing nothing (for responses that were not
-- admitted through the limiter, such as GET /v1/models or a refused body).
-- KEYS: 1 requests log, 2 tokens log; ARGV: window_ms
-- Returns {used_requests, used_tokens, reset_requests_ms, reset_tokens_ms}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[1])
local since = now - window
local requests = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. since, '+inf', 'WITHSCORES')
local token_log = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf', 'WITHSCORES')
local used_tokens = 0
for i = 1, #token_log, 2 do
  used_tokens = used_tokens + (tonumber(string.match(token_log[i], '|(%d+)$')) or 0)
end
local function full_reset(log)
  if #log == 0 then return 0 end
  return math.max(0, tonumber(log[#log]) + window - now)
end
return {#requests / 2, used_tokens, full_reset(requests), full_reset(token_log)}
