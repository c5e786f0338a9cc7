-- Replace a request's token estimate by its real usage, keeping its place in the window.
-- KEYS: 1 requests log (unused), 2 tokens log, 3 (unused), 4 tokens total
-- ARGV: request_id, estimated tokens, actual tokens
local old = ARGV[1] .. '|' .. ARGV[2]
local at = redis.call('ZSCORE', KEYS[2], old)
if not at then return 0 end  -- already out of the window: nothing to correct
redis.call('ZREM', KEYS[2], old)
redis.call('ZADD', KEYS[2], at, ARGV[1] .. '|' .. ARGV[3])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('INCRBY', KEYS[4], tonumber(ARGV[3]) - tonumber(ARGV[2]))
end
return 1
