-- The state of a key's request and token budgets, changing nothing (for responses that were not
-- admitted through the limiter, such as GET /v1/models or a refused body).
-- KEYS: as admit.lua; ARGV: window_ms
-- Returns {used_requests, used_tokens, reset_requests_ms, reset_tokens_ms}
local window = tonumber(ARGV[1])
local since = now - window
local used_requests = redis.call('ZCOUNT', KEYS[1], '(' .. since, '+inf')
return {used_requests, tokens_in_window(since, false), full_reset(KEYS[1], window), full_reset(KEYS[2], window)}
