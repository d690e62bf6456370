"""Lua scripts of the Redis store: the same semantics as ``_logic.py``, executed atomically.

Numbers cross the boundary as strings: Python sends ``repr(float)`` and the scripts store and
return ``%.17g``, both of which round-trip an IEEE double exactly, so the arithmetic matches
the in-memory store bit for bit (Lua's default ``%.14g`` would not). Every key written gets a
TTL in the same script, formatted with ``%d`` (the callers bound it well below 2^53 ms).
"""

from __future__ import annotations

from typing import Final

__all__ = ["IS_REVOKED", "RATE_LIMIT", "REPLAY", "REVOKE"]

# KEYS[1] record.  ARGV: now, until, cutoff ('' for a token revocation).
# Merges with a live record (later until, later cutoff); returns nothing.
REVOKE: Final = """
local now = tonumber(ARGV[1])
local new_until = tonumber(ARGV[2])
local cutoff = ARGV[3]
local cur = redis.call('HMGET', KEYS[1], 'until', 'cutoff')
if cur[1] and tonumber(cur[1]) > now then
  new_until = math.max(new_until, tonumber(cur[1]))
  if cutoff ~= '' and cur[2] then
    cutoff = string.format('%.17g', math.max(tonumber(cutoff), tonumber(cur[2])))
  end
end
redis.call('DEL', KEYS[1])
if cutoff == '' then
  redis.call('HSET', KEYS[1], 'until', string.format('%.17g', new_until))
else
  redis.call('HSET', KEYS[1], 'until', string.format('%.17g', new_until), 'cutoff', cutoff)
end
local ttl = math.max(1, math.ceil((new_until - now) * 1000))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return 0
"""

# KEYS: token record, subject record, issuer record.
# ARGV: now, issued_at ('' when the token has none), check token ('1'/'0'), check subject.
# Returns 1 when any live revocation applies; a missing iat under a cut-off fails closed.
IS_REVOKED: Final = """
local now = tonumber(ARGV[1])
local iat = ARGV[2]
local function live(key)
  local rec = redis.call('HMGET', key, 'until', 'cutoff')
  if rec[1] and tonumber(rec[1]) > now then return rec end
  return nil
end
if ARGV[3] == '1' and live(KEYS[1]) then return 1 end
local function applies(rec, inclusive)
  if not rec or not rec[2] then return false end
  if iat == '' then return true end
  local issued, cut = tonumber(iat), tonumber(rec[2])
  if inclusive then return issued <= cut end
  return issued < cut
end
if applies(live(KEYS[3]), false) then return 1 end
if ARGV[4] == '1' and applies(live(KEYS[2]), true) then return 1 end
return 0
"""

# KEYS[1] replay entry.  ARGV: ttl in ms, the call's nonce.
# Returns 1 the first time the key is seen, 0 after. The entry holds the nonce of the call that
# stored it, so the same call sent again (a reply lost with its connection, retried by the
# client) is still its first time, not a replay.
REPLAY: Final = """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[2] then return 1 end
return 0
"""

# KEYS[1] bucket.  ARGV: rate, burst, cost, now ('' = the server's clock, the normal case),
# the call's nonce. Returns {allowed (1/0), remaining, retry_after as a string}. The bucket keeps
# the nonce and result of its last call: the same call sent again (a reply lost with its
# connection, retried by the client) gets that result instead of paying a second time.
RATE_LIMIT: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local nonce = ARGV[5]
local last = redis.call('HMGET', KEYS[1], 'nonce', 'allowed', 'remaining', 'retry')
if last[1] == nonce and last[2] then
  return {tonumber(last[2]), tonumber(last[3]), last[4]}
end
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local tokens, ts = burst, now
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'full')
if state[1] and state[3] and now < tonumber(state[3]) then
  tokens, ts = tonumber(state[1]), tonumber(state[2])
end
local elapsed = now - ts
if elapsed > 0 then
  tokens = math.min(burst, tokens + elapsed * rate)
  ts = now
end
local allowed, retry = 0, 0
if tokens + 1e-9 >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
local remaining = math.floor(tokens + 1e-9)
if remaining < 0 then remaining = 0 end
local full = ts + (burst - tokens) / rate
local retry_text = string.format('%.17g', retry)
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.17g', ts), 'full', string.format('%.17g', full),
  'nonce', nonce, 'allowed', allowed, 'remaining', remaining, 'retry', retry_text)
local ttl = math.max(1, math.ceil((full - now) * 1000))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {allowed, remaining, retry_text}
"""
