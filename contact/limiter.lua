-- Token buckets, all or nothing, in one round trip.
-- KEYS[i]: one hash per bucket {t = tokens, ts = microseconds of the last write}.
-- ARGV[1]: the take mask: bit i-1 set for each bucket a passing call takes a token from.
-- ARGV[2i], ARGV[2i+1]: bucket i's capacity and refill period in seconds (capacity tokens per period).
-- Every bucket must hold a token for the call to pass (a bucket outside the mask is only checked).
-- Returns {1, 0, 0} when every bucket had a token (one is taken from each bucket in the mask), else
-- {0, refused_mask, wait_ms, wait_ms_1, ..., wait_ms_n}: bit i-1 set for each bucket that
-- refused, wait_ms the time until all refusing buckets hold a token again, wait_ms_i
-- bucket i's own (0 for a bucket that had a token); a refused call takes nothing. Time is the
-- server's (TIME), so clients on different hosts with skewed clocks agree.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local take = tonumber(ARGV[1])
local tokens, caps, per_token, waits = {}, {}, {}, {}
local mask, wait = 0, 0
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i])
  local interval = tonumber(ARGV[2 * i + 1]) * 1000000 / capacity  -- microseconds per token
  local state = redis.call('HMGET', KEYS[i], 't', 'ts')
  local t = tonumber(state[1])
  local ts = tonumber(state[2])
  if t == nil or ts == nil then
    t = capacity
  elseif now > ts then
    t = math.min(capacity, t + (now - ts) / interval)
  end
  tokens[i], caps[i], per_token[i], waits[i] = t, capacity, interval, 0
  if t < 1 then
    mask = mask + 2 ^ (i - 1)
    waits[i] = math.ceil((1 - t) * interval / 1000)
    wait = math.max(wait, waits[i])
  end
end
if mask > 0 then
  return {0, mask, wait, unpack(waits)}
end
for i = 1, #KEYS do
  if math.floor(take / 2 ^ (i - 1)) % 2 == 1 then
    local t = tokens[i] - 1
    redis.call('HSET', KEYS[i], 't', string.format('%.6f', t), 'ts', string.format('%d', now))
    -- Gone once it would be full again: an absent key reads as a full bucket.
    redis.call('PEXPIRE', KEYS[i], math.ceil((caps[i] - t) * per_token[i] / 1000) + 1000)
  end
end
return {1, 0, 0}
