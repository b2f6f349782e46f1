"""The Lua scripts of a quota's listing in the Redis ledger: begin, stage, end, abort.

One process lists a quota's prefix at a time (``{ns}:seedlk:<prefix>``, a lock with a
lease); what it finds is staged and swapped in when it ends, with the commits, deletes
and prior versions recorded meanwhile winning over it. The keys are described in
:mod:`file_storage._quota.redis.scripts`, whose shared functions these scripts use.
"""

from __future__ import annotations

from file_storage._quota.redis.lua_common import _COMMON
from file_storage._quota.redis.wire import Script

# ARGV: ns, prefix, token, lease_ms, force -> 'seeded' | 'wait' (another process lists
# it) | 'barrier' (ours, waiting for the members' acknowledgements: ask again with the
# same token) | 'go'
SEED_BEGIN = Script(
    _COMMON
    + """
local p, token, lease, force = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local q = ns .. ':q:' .. p
-- no quota here (a refresh_usage of any folder): nothing to list. A count kept without
-- one would miss every write until a quota is set, then be trusted, too low
if redis.call('HEXISTS', ns .. ':limits', p) == 0 then return 'seeded' end
if not force and redis.call('HGET', q, 'seeded') == '1' then return 'seeded' end
local lk = ns .. ':seedlk:' .. p
local owner = redis.call('GET', lk)
if owner and owner ~= token then return 'wait' end
redis.call('SET', lk, token, 'PX', lease)
-- processes drawing on allowances (local disk) send what they spent and stop drawing
-- under p before it is listed: a barrier (a new agen), then the listing once every
-- live member acknowledged it (see allowance_lua)
local now = now_ms()
if redis.call('ZCOUNT', ns .. ':mem', now, '+inf') > 0 then
  if redis.call('HGET', q, 'btok') ~= token then
    redis.call('HSET', q, 'barrier', redis.call('INCR', ns .. ':agen'), 'btok', token)
    return 'barrier'
  end
  local b = tonumber(redis.call('HGET', q, 'barrier'))
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', ns .. ':mem', now, '+inf')) do
    if num(redis.call('HGET', ns .. ':ack', m)) < b then return 'barrier' end
  end
end
redis.call('HDEL', q, 'barrier', 'btok')
redis.call('INCR', ns .. ':agen')
redis.call('HSET', q, 'seeding', token)
redis.call('HINCRBY', q, 'lists', 1)  -- (a versioned commit then knows one overlapped it)
redis.call('HSET', q, 'gen', redis.call('INCR', ns .. ':gen'))  -- (and a delete: FINISH)
redis.call('HDEL', q, 'stale')
redis.call('DEL', ns .. ':pend:' .. p, ns .. ':stage:' .. p, ns .. ':pendk:' .. p,
  ns .. ':stagek:' .. p)
return 'go'
"""
)

# ARGV: ns, prefix, token, lease_ms, key, size pairs...: stage a batch of the listing
SEED_STAGE = Script(
    _COMMON
    + """
local p, token, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
-- still the listing of record (no other began since): its lock may have run out between
-- two batches with no one taking it; take it again rather than drop the batch, which
-- SEED_END would swap in without (sizes missing from the ledger for good)
if redis.call('HGET', ns .. ':q:' .. p, 'seeding') ~= token then return 0 end
redis.call('SET', ns .. ':seedlk:' .. p, token, 'PX', lease)
local stage, stagek = ns .. ':stage:' .. p, ns .. ':stagek:' .. p
for j = 5, #ARGV, 2 do
  -- '<key>\\<version id>': a prior version of key (a backslash is never in a key)
  local sep = string.find(ARGV[j], string.char(92), 1, true)
  if sep and sep > 1 then
    redis.call('HINCRBY', stagek, string.sub(ARGV[j], 1, sep - 1), ARGV[j + 1])
  else
    redis.call('HSET', stage, ARGV[j], ARGV[j + 1])
  end
end
return 1
"""
)

# ARGV: ns, prefix, token, listed_total (exact integer text)
# -> 1 (swapped in) | 0 (the lock was lost)
SEED_END = Script(
    _COMMON
    + """
-- the listed total stays text, counted on by HINCRBY: a Lua number is a double, inexact
-- past 2^53 bytes, and Redis writes one of 1e17 or more as "1e+17", which every later
-- HINCRBY of used refuses (failing the step half-way); only the deltas are numbers here
local p, token, used = ARGV[2], ARGV[3], 0
local q, stage, pend = ns .. ':q:' .. p, ns .. ':stage:' .. p, ns .. ':pend:' .. p
local stagek, pendk = ns .. ':stagek:' .. p, ns .. ':pendk:' .. p
if redis.call('HGET', q, 'seeding') ~= token then return 0 end
-- prior versions kept or purged while we listed win over the listing: a purge (=) sets
-- the total; a keep (+) adds to what was listed (a version the listing saw too is then
-- counted twice until the next listing: too much, never too little). A kept object of
-- unknown size (?) adds the listed latest size (after a purge, at least what was listed)
local kchanges = redis.call('HGETALL', pendk)
for j = 1, #kchanges, 2 do
  local key, v = kchanges[j], kchanges[j + 1]
  local sign, unknown = string.sub(v, 1, 1), string.sub(v, 2, 2) == '?'
  local n = tonumber(string.sub(v, unknown and 3 or 2))
  local listed = num(redis.call('HGET', stagek, key))
  local total = sign == '=' and n or listed + n
  if unknown then
    local latest = num(redis.call('HGET', stage, key))
    total = total + (sign == '=' and math.max(latest, listed) or latest)
  end
  used = used + total - listed
  if total > 0 then redis.call('HSET', stagek, key, total) else redis.call('HDEL', stagek, key) end
end
-- commits and deletes that landed while we listed win over the listing
local changes = redis.call('HGETALL', pend)
for j = 1, #changes, 2 do
  local key, size = changes[j], tonumber(changes[j + 1])
  used = used - num(redis.call('HGET', stage, key))
  if size < 0 then
    redis.call('HDEL', stage, key)
  else
    redis.call('HSET', stage, key, size)
    used = used + size
  end
end
swap_in(stage, ns .. ':sz:' .. p)
swap_in(stagek, ns .. ':kept:' .. p)
-- marked stale while it listed: swapped in, and listed again on next use
local seeded = redis.call('HGET', q, 'stale') == '1' and '0' or '1'
redis.call('HSET', q, 'used', ARGV[4], 'seeded', seeded)
if used ~= 0 then redis.call('HINCRBY', q, 'used', used) end
redis.call('HDEL', q, 'seeding')
redis.call('HINCRBY', q, 'lists', 1)
redis.call('HSET', q, 'gen', redis.call('INCR', ns .. ':gen'))
redis.call('DEL', pend, pendk)
unlock_seed(p, token)
redis.call('INCR', ns .. ':agen')
return 1
"""
)

# ARGV: ns, prefix, token: a listing that will not end (cancelled, or its scan failed)
# gives its lock back, so the next user lists at once instead of waiting out the lease
SEED_ABORT = Script(
    _COMMON
    + """
local p, token = ARGV[2], ARGV[3]
local q = ns .. ':q:' .. p
if redis.call('HGET', q, 'btok') == token then redis.call('HDEL', q, 'barrier', 'btok') end
redis.call('INCR', ns .. ':agen')
if redis.call('HGET', q, 'seeding') == token then
  redis.call('HDEL', q, 'seeding')
  redis.call('DEL', ns .. ':pend:' .. p, ns .. ':stage:' .. p, ns .. ':pendk:' .. p,
    ns .. ':stagek:' .. p)
end
unlock_seed(p, token)
return 1
"""
)
