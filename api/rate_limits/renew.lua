-- Extend the concurrency leases of requests still running (a web process does this for its own
-- requests; if it dies, its leases expire and the slots free themselves).
-- KEYS: the lease set of each request; ARGV: lease_ms, then one request id per key
local clock = redis.call('TIME')
local expiry = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[1])
local renewed = 0
for i, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, 'XX', expiry, ARGV[i + 1])
    redis.call('PEXPIREAT', key, expiry, 'GT')  -- never shortens the set's life for other leases
    renewed = renewed + 1
  end
end
return renewed
