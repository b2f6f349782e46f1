"""The Lua scripts of the Redis quota ledger: each ledger step is one atomic server-side call.

The keys they use and the functions they share are in
:mod:`file_storage._quota.redis.lua_common`.
"""

from __future__ import annotations

from file_storage._quota.redis.lua_common import _COMMON
from file_storage._quota.redis.wire import Script

# ARGV: ns, id, key, total, frees ('' or a key), lease_ms, first (1: a new reservation),
# token ('' or the hold's token: take the lock of key for it first, as LOCK does),
# epoch ('' or the epoch this process pushed its limits into: another one is a reset),
# want ('' or a total past ``total`` to hold ahead of a stream, as far as each quota has
# half of its free space left after ``total``; '=': a stream that held ahead ends, its
# whole ``total`` checked against each quota as it is now, what it holds included),
# old, frees_old ('' or the sizes at key and at frees the caller found under its key
# locks: local disk, where processes drawing on allowances send sizes in batches),
# recall ('0': recalled long enough, the allowances still held count as used: 'over')
# -> {'ok', held} (the total now held for: ``total`` or more, at most ``want``) |
# {'none'} | {'reset'} | {'locked'} (another holder has key) | {'recall'} (it fits once
# the allowances processes hold are given back: they are asked to; try again) |
# {'unseeded', prefix} | {'over', prefix, used, limit}; with a token, every reply but
# none, reset and locked means the key is now locked by it
RESERVE = Script(
    _COMMON
    + """
local id, key, total, frees = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local lease, first, token = tonumber(ARGV[6]), ARGV[7] == '1', ARGV[8]
local recheck = ARGV[10] == '='
local now = now_ms()
purge(now)
local epoch = redis.call('GET', ns .. ':epoch')
if not epoch or (ARGV[9] ~= '' and ARGV[9] ~= epoch) then return {'reset'} end
local quotas = covering(key)
local vv = redis.call('MGET', ns .. ':ver', ns .. ':vchg')
-- the replaced object stays stored: nothing is credited
local versioned = vv[1] == 'enabled' or vv[1] == 'suspended'
if #quotas == 0 then return {'none'} end
if token ~= '' then
  local lk = ns .. ':lk:' .. key
  local owner = redis.call('GET', lk)
  if owner and owner ~= token then return {'locked'} end
  redis.call('SET', lk, token, 'PX', lease)
end
local rk = ns .. ':rsv:' .. id
local fresh = first or redis.call('EXISTS', rk) == 0
local extras, olds, lists, helds, counts = {}, {}, {}, {}, {}
for j, ql in ipairs(quotas) do
  local p, limit = ql[1], ql[2]
  local q = ns .. ':q:' .. p
  local f = redis.call('HMGET', q, 'seeded', 'used', 'reserved', 'lists', 'allowed')
  if f[1] ~= '1' then return {'unseeded', p} end
  counts[j] = f
  local old, held
  if fresh and versioned then
    old, held = 0, 0
  elseif fresh then
    -- the sizes the caller found on disk under its key locks (local disk with
    -- allowances: Redis's may lag by the sizes other processes have not sent yet)
    local sz = ns .. ':sz:' .. p
    old = tonumber(ARGV[11] or '') or num(redis.call('HGET', sz, key))
    if frees ~= '' and string.sub(frees, 1, #p) == p then
      old = old + (tonumber(ARGV[12] or '') or num(redis.call('HGET', sz, frees)))
    end
    held = 0
  else
    old = num(redis.call('HGET', rk, 'o:' .. p))
    held = num(redis.call('HGET', rk, 'h:' .. p))
  end
  local extra = math.max(0, total - old) - held
  -- (rechecked: a limit lowered since its bytes were held ahead may no longer take them)
  if extra > 0 or recheck then
    local over, bh, bl = exceeds(f[2], f[3], extra, limit)
    if over then
      local allowed = num(f[5])
      if allowed > 0 and ARGV[13] ~= '0' and not exceeds(f[2], f[3], extra - allowed, limit) then
        -- it fits once processes give back the allowances they hold: asked to, at once
        redis.call('HSET', q, 'recall', now)
        return {'recall'}
      end
      return {'over', p, text(bh, bl - held - allowed), limit}
    end
  end
  extras[j], olds[j], lists[j], helds[j] = extra, old, f[4] or '0', held
end
local grant = total
local want = tonumber(ARGV[10] or '')
if want and want > total then
  -- ahead of a stream: at most half of what each quota has free once ``total`` is held,
  -- so the others near the limit keep the other half (see docs/quota.md)
  grant = want
  for j, ql in ipairs(quotas) do
    local f = counts[j]
    local _, bh, bl = exceeds(f[2], f[3], 0, ql[2])
    local lh, ll = split(ql[2])
    local free = (lh - bh) * BIG + (ll - bl) - math.max(extras[j], 0)
    local room = math.max(0, math.floor(free / 2))
    grant = math.min(grant, olds[j] + helds[j] + math.max(extras[j], 0) + room)
  end
  grant = math.max(grant, total)
  -- checked again exactly (the free space above is a double): else only ``total``
  for j, ql in ipairs(quotas) do
    local extra = math.max(0, grant - olds[j]) - helds[j]
    if extra > extras[j] and exceeds(counts[j][2], counts[j][3], extra, ql[2]) then
      grant = total
      break
    end
  end
  if grant > total then
    for j = 1, #quotas do extras[j] = math.max(0, grant - olds[j]) - helds[j] end
  end
end
for j, ql in ipairs(quotas) do
  local p, extra = ql[1], math.max(extras[j], 0)
  if extra > 0 then redis.call('HINCRBY', ns .. ':q:' .. p, 'reserved', extra) end
  if fresh then
    redis.call('HSET', rk, 'h:' .. p, extra, 'o:' .. p, olds[j], 'g:' .. p, lists[j])
  elseif extra > 0 then
    redis.call('HINCRBY', rk, 'h:' .. p, extra)
  end
end
if fresh then redis.call('HSET', rk, 'v', vv[1] or 'off', 'c', vv[2] or '0') end
redis.call('ZADD', ns .. ':leases', now + lease, id)
return {'ok', string.format('%d', grant)}
"""
)

# ARGV: ns, id, key, size, token, undoable ('1': the caller can delete the new object),
# old ('' or the size at key the caller found on disk under its key locks), lock keys...
# -> {'ok'} | {'over', prefix, used, limit} (lease lost, its key still locked by token, a
# new undoable object that no longer fits: nothing recorded) | {'overshoot', prefix}
# (lease lost: recorded anyway); the key's lock lost too: its quotas are listed again;
# 'relisted' appended to ok and overshoot (the lock keys then stay locked): see below
COMMIT = Script(
    _COMMON
    + """
local id, key, size, token = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local undoable = ARGV[6] == '1'
local given = tonumber(ARGV[7] or '')  -- the size at key found on disk (see shift)
-- no purge here: while this reservation exists its bytes are still counted as reserved
-- (only a release frees them), so no other write was given them even if its lease ran
-- out: trusting it is safe. A reservation that is gone is checked again below
local rk = ns .. ':rsv:' .. id
local quotas = covering(key)
local vv = redis.call('MGET', ns .. ':ver', ns .. ':vchg')
local ver = vv[1]
local versioned = ver == 'enabled' or ver == 'suspended'
local result = {'ok'}
local held = redis.call('HGETALL', rk)
-- the key's lock ran out too (a process frozen past its lease): another process may have
-- written or deleted the key since, landing before or after this write; which object the
-- store holds is not known here, so the quotas are listed again (below), and the object
-- at the key, maybe another's, is never taken back
local lost = token ~= '' and redis.call('GET', ns .. ':lk:' .. key) ~= token
if #held == 0 then
  -- the lease ran out (or Redis lost it): check again instead of trusting it
  local known = 0
  for _, ql in ipairs(quotas) do
    local p, limit = ql[1], ql[2]
    local q = ns .. ':q:' .. p
    if redis.call('HGET', q, 'seeded') == '1' then
      local old = given or num(redis.call('HGET', ns .. ':sz:' .. p, key))
      known = known + old
      if versioned then old = 0 end  -- kept as a prior version: still counted
      local f = redis.call('HMGET', q, 'used', 'reserved')
      if size - old > 0 and result[1] == 'ok' then
        local over, bh, bl = exceeds(f[1], f[2], size - old, limit)
        if over then result = {'over', p, text(bh, bl), limit} end
      end
    end
  end
  if result[1] == 'over' then
    -- the caller deletes it, key held (not when versioned: a delete would keep it stored)
    if known == 0 and undoable and not versioned and not lost then return result end
    result = {'overshoot', result[2]}
  end
end
-- set_versioning began or ended in some process since the reservation (or runs now):
-- the store may have applied either state, so the caller counts the key's versions as
-- the store lists them (a lease lost: whether one did is not known)
local g = {}
for j = 1, #held, 2 do g[held[j]] = held[j + 1] end
local relisted = (g['c'] or '') ~= (vv[2] or '0') or switching()
-- versioned: so does a write that a listing began or ended since the reservation (or
-- runs now) may have counted, or the one it replaces as a prior version, already; or
-- one under a versioning that changed since, or suspended (a "null" version is
-- replaced, one with an id kept: only the store knows)
if versioned then
  if ver == 'suspended' or (g['v'] and g['v'] ~= ver) then relisted = true end
  for _, ql in ipairs(quotas) do
    local f = redis.call('HMGET', ns .. ':q:' .. ql[1], 'seeding', 'lists')
    if f[1] or (f[2] or '0') ~= (g['g:' .. ql[1]] or '0') then relisted = true end
  end
end
release(id, held)
for _, ql in ipairs(quotas) do
  if versioned then keep(ql[1], key) end
  if given and not versioned and steady(ql[1], g['g:' .. ql[1]]) then
    shift(ql[1], key, size - given)
  else
    record(ql[1], key, size)
  end
  -- (a lease run out on local disk with allowances: Redis's size of key may lag)
  if lost or (given and #held == 0) then stale(ql[1]) end
end
-- relisted: the key stays locked until the caller has counted it (its hold unlocks it),
-- else a write of another process could land between this step and that count
if relisted then
  result[#result + 1] = 'relisted'
else
  unlock(token, 8, #ARGV)
end
return result
"""
)

# ARGV: ns, id
RELEASE = Script(
    _COMMON
    + """
purge(now_ms())
release(ARGV[2])
return 1
"""
)

# ARGV: ns, token, lease_ms, keys... -> 0 when another holder has one of the keys, else
# every key is now locked by token and the reply is ``<gen>/<vchg>``: the texts of
# ``{ns}:gen`` (the count of listings begun or ended) and ``{ns}:vchg`` now, for FINISH
LOCK = Script(
    _COMMON
    + """
local token, lease = ARGV[2], tonumber(ARGV[3])
for j = 4, #ARGV do
  local owner = redis.call('GET', ns .. ':lk:' .. ARGV[j])
  if owner and owner ~= token then return 0 end
end
for j = 4, #ARGV do
  redis.call('SET', ns .. ':lk:' .. ARGV[j], token, 'PX', lease)
end
local m = redis.call('MGET', ns .. ':gen', ns .. ':vchg')
return (m[1] or '0') .. '/' .. (m[2] or '0')
"""
)

# ARGV: ns, token, since ('' or what LOCK answered as the keys were locked), n_deleted,
# deleted keys..., their sizes found on disk under their key locks ('' or one text of
# sizes joined by ',': see shift), lock keys...: record the deletes, unlock
# -> 1, or 2: the caller counts the deleted keys' versions as the store lists them (a
# set_versioning under way, or begun or ended since the keys were locked: the store may
# have applied either state; a versioned store: suspended, where only the store knows
# whether the object was kept, or a quota being listed now, or since the keys were
# locked, which may have seen the object kept already, or both as the latest and kept: a
# listing is no snapshot of the store)
FINISH = Script(
    _COMMON
    + """
local token, n = ARGV[2], tonumber(ARGV[4])
local since, since_v
local cut = string.find(ARGV[3], '/', 1, true)
if cut then
  since, since_v = tonumber(string.sub(ARGV[3], 1, cut - 1)), string.sub(ARGV[3], cut + 1)
end
purge(now_ms())
local vv = redis.call('MGET', ns .. ':ver', ns .. ':vchg')
-- a delete keeps the object as a prior version
local versioned = vv[1] == 'enabled' or vv[1] == 'suspended'
local relisted = (versioned and vv[1] == 'suspended') or (n > 0 and (switching()
  or (since_v and since_v ~= (vv[2] or '0'))))
-- the sizes the deleted keys had on disk, found under their key locks (see shift)
local olds = {}
for v in string.gmatch(ARGV[5 + n] or '', '[^,]+') do olds[#olds + 1] = tonumber(v) end
local locked = {}
for j = 6 + n, #ARGV do locked[ARGV[j]] = true end
for j = 5, 4 + n do
  local key, given = ARGV[j], olds[j - 4]
  -- held, but its lock ran out (a process frozen past its lease): another process may
  -- have written the key since, landing before or after this delete (see COMMIT)
  local lost = locked[key] and redis.call('GET', ns .. ':lk:' .. key) ~= token
  for _, ql in ipairs(covering(key)) do
    if versioned then
      keep(ql[1], key)
      local f = redis.call('HMGET', ns .. ':q:' .. ql[1], 'seeding', 'gen')
      if f[1] or (since and num(f[2]) > since) then relisted = true end
    end
    local f = redis.call('HMGET', ns .. ':q:' .. ql[1], 'seeding', 'gen')
    if given and not versioned and since and not f[1] and num(f[2]) <= since then
      shift(ql[1], key, 0 - given)
    else
      record(ql[1], key, nil)
    end
    if lost then stale(ql[1]) end
  end
end
unlock(token, 6 + n, #ARGV)
return relisted and 2 or 1
"""
)

# ARGV: ns, token, lease_ms, n_ids, ids..., lock keys... -> how many locks are still ours
RENEW = Script(
    _COMMON
    + """
local token, lease, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
for j = 5, 4 + n do
  if redis.call('EXISTS', ns .. ':rsv:' .. ARGV[j]) == 1 then
    redis.call('ZADD', ns .. ':leases', now + lease, ARGV[j])
  end
end
local kept = 0
for j = 5 + n, #ARGV do
  local lk = ns .. ':lk:' .. ARGV[j]
  if redis.call('GET', lk) == token then
    redis.call('PEXPIRE', lk, lease)
    kept = kept + 1
  end
end
return kept
"""
)

# ARGV: ns, prefix, limit-or-'' pairs...: set (or with '' remove) limits -> the epoch
# (begun now when Redis has none)
SET_LIMITS = Script(
    _COMMON
    + """
local function drop(p)
  -- the quota's count goes (listed again if it is set again), and the writes in flight
  -- forget the bytes they hold under it: given back later, they came off the count of
  -- the quota set again meanwhile (reserved below 0 for good: writes past its limit)
  redis.call('DEL', ns .. ':q:' .. p, ns .. ':sz:' .. p, ns .. ':pend:' .. p,
    ns .. ':stage:' .. p, ns .. ':kept:' .. p, ns .. ':pendk:' .. p, ns .. ':stagek:' .. p,
    ns .. ':seedlk:' .. p)
  for _, id in ipairs(redis.call('ZRANGE', ns .. ':leases', 0, -1)) do
    redis.call('HDEL', ns .. ':rsv:' .. id, 'h:' .. p, 'o:' .. p, 'n:' .. p)
  end
end
for j = 2, #ARGV, 2 do
  local p, limit = ARGV[j], ARGV[j + 1]
  if redis.call('HGET', ns .. ':limits', p) ~= (limit ~= '' and limit or nil) then
    redis.call('INCR', ns .. ':agen')  -- (processes drawing on allowances see it first)
  end
  if limit == '' then
    redis.call('HDEL', ns .. ':limits', p)
    drop(p)
  elseif redis.call('HSET', ns .. ':limits', p, limit) == 1 then
    -- a new quota: no write was recorded under p before it, so a count found here (left
    -- by an older version's listing of a folder without a quota) is not trusted
    drop(p)
  end
end
local t = redis.call('TIME')
redis.call('SET', ns .. ':epoch', t[1] .. '.' .. t[2], 'NX')
return redis.call('GET', ns .. ':epoch')
"""
)

# ARGV: ns, prefix -> {limit or false, used, reserved, seeded, epoch or false, allowed}
USAGE = Script(
    _COMMON
    + """
local p = ARGV[2]
purge(now_ms())
local limit = redis.call('HGET', ns .. ':limits', p)
local f = redis.call('HMGET', ns .. ':q:' .. p, 'used', 'reserved', 'seeded', 'allowed')
-- (the counts as Redis keeps them, exact: as Lua numbers they are rounded past 2^53);
-- the allowances processes hold are not in use: what they spent is sent within moments
return {limit, f[1] or '0', f[2] or '0', f[3] == '1' and 1 or 0,
  redis.call('GET', ns .. ':epoch'), f[4] or '0'}
"""
)

# ARGV: ns, key, total ('' or the bytes its prior versions hold now), gone ('1': the key's
# latest object was purged too): after a purge_versions, which held the key
PURGED = Script(
    _COMMON
    + """
local key, total, gone = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
for _, ql in ipairs(covering(key)) do
  local p = ql[1]
  local q = ns .. ':q:' .. p
  local f = redis.call('HMGET', q, 'seeding', 'seeded')
  if total then
    -- a purge wins over a listing running now: the key's kept bytes are known
    if f[1] then redis.call('HSET', ns .. ':pendk:' .. p, key, '=' .. ARGV[3]) end
    if f[2] == '1' then
      local kk = ns .. ':kept:' .. p
      local old = num(redis.call('HGET', kk, key))
      if total > 0 then redis.call('HSET', kk, key, total) else redis.call('HDEL', kk, key) end
      redis.call('HINCRBY', q, 'used', total - old)
    end
  end
  if gone then record(p, key, nil) end
end
return 1
"""
)

# ARGV: ns, keys...: the quotas covering these keys are listed again on next use (this
# process wrote or deleted them while Redis was unreachable)
INVALIDATE = Script(
    _COMMON
    + """
for j = 2, #ARGV do
  for _, ql in ipairs(covering(ARGV[j])) do stale(ql[1]) end
end
return 1
"""
)

# ARGV: ns, token, lease_ms, state: set_versioning begins ('') or ends (the state it set,
# ``enabled`` or ``suspended``; ``-``: it failed, the state unknown) in this process
SWITCH = Script(
    _COMMON
    + """
local token, lease, state = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', ns .. ':vsw', '-inf', now)
if state == '' then
  redis.call('ZADD', ns .. ':vsw', now + lease, token)
  -- processes drawing on allowances send their sizes in batches; the versioned steps
  -- read the sizes Redis keeps, so every quota is listed again (after they sent them)
  if redis.call('ZCARD', ns .. ':mem') > 0 then
    for _, p in ipairs(redis.call('HKEYS', ns .. ':limits')) do stale(p) end
  end
else
  if state ~= '-' then redis.call('SET', ns .. ':ver', state) end
  redis.call('ZREM', ns .. ':vsw', token)
end
redis.call('INCR', ns .. ':vchg')
redis.call('INCR', ns .. ':agen')
return 1
"""
)

# ARGV: ns, state, since (the text of ``{ns}:vchg`` as the probe began): a listing's probe
# of the store's versioning -> the state kept in ``{ns}:ver``: ``state``, unless a
# set_versioning began or ended since (or runs now): the probe may have read the store
# before that switch, and what Redis holds stays
PROBED = Script(
    _COMMON
    + """
local state, since = ARGV[2], ARGV[3]
redis.call('ZREMRANGEBYSCORE', ns .. ':vsw', '-inf', now_ms())
if (redis.call('GET', ns .. ':vchg') or '0') == since and not switching() then
  if (redis.call('GET', ns .. ':ver') or 'off') ~= state then redis.call('INCR', ns .. ':agen') end
  redis.call('SET', ns .. ':ver', state)
  return state
end
return redis.call('GET', ns .. ':ver') or 'off'
"""
)
