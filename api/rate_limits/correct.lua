-- Replace a request's token estimate by its real usage, keeping its place in the window.
-- KEYS: 1 tokens log; ARGV: request_id, estimated tokens, actual tokens
local old = ARGV[1] .. '|' .. ARGV[2]
local at = redis.call('ZSCORE', KEYS[1], old)
if not at then return 0 end
redis.call('ZREM', KEYS[1], old)
redis.call('ZADD', KEYS[1], at, ARGV[1] .. '|' .. ARGV[3])
return 1
