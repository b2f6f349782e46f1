"""The Lua scripts of the Redis quota ledger: each ledger step is one atomic server-side call.

Keys, all under one namespace ``{ns}`` (the braces are a cluster hash tag: every key of
one ledger lands in one slot, so the scripts may touch keys they compute):

- ``{ns}:epoch``: the time limits were first pushed to this Redis; missing after it lost
  its data, then another: a process whose limits went into an older epoch pushes them again.
- ``{ns}:limits``: hash quota prefix -> limit in bytes.
- ``{ns}:q:<prefix>``: hash ``used`` (objects and prior versions), ``reserved``,
  ``seeded`` (``1`` once listed), ``seeding`` (the token of the process listing it now)
  and ``stale`` (``1``: marked to be listed again while a listing ran, which is then not
  trusted).
- ``{ns}:sz:<prefix>``: hash key -> size of every object under the quota.
- ``{ns}:kept:<prefix>``: hash key -> bytes of the key's prior versions (a versioned store
  keeps an overwritten or deleted object), counted in ``used`` like the objects.
- ``{ns}:pend:<prefix>``: commits and deletes seen while a listing runs (size, ``-1``).
- ``{ns}:pendk:<prefix>``: prior versions kept or purged while a listing runs:
  ``+<n>`` (n bytes kept on top of what the listing finds) or ``=<n>`` (a purge left n
  bytes, plus what was kept since); a ``?`` after the sign: a kept object whose size was
  not known yet, taken from the listing when it ends (see SEED_END).
- ``{ns}:stage:<prefix>``, ``{ns}:stagek:<prefix>``: the sizes and the prior versions'
  bytes a listing found (the scanner names a prior version ``<key>\\<version id>``),
  swapped in when it ends.
- ``{ns}:ver``: the store's versioning as last learned (``enabled``, ``suspended`` or
  ``off``): set by ``set_versioning`` and by each listing's probe. While it is not
  ``off``, an overwrite reserves its whole size and its commit, like a delete, moves the
  replaced object's size to ``kept`` instead of freeing it.
- ``{ns}:vchg``: a count bumped as each ``set_versioning`` begins and ends, in any
  process; ``{ns}:vsw``: a sorted set of the switches under way (token -> expiry in ms,
  a lease). A write or a delete that saw the count change, or ran while a switch was
  under way, may have been applied by the store under either state: its commit answers
  ``relisted`` and its process counts the key's versions as the store lists them.
  A listing's probe of the store's versioning is kept only if the count is what it was
  as the probe began and no switch is under way (see PROBED): else it may have read the
  store before a switch, and would undo it.
- ``{ns}:lk:<key>``: the per-key lock (a token with an expiry: the lease).
- ``{ns}:rsv:<id>``: one write's reservation: ``h:<prefix>`` bytes held, ``o:<prefix>``
  the old size it replaces; ``{ns}:leases`` is a sorted set of reservation id -> expiry
  in ms. RESERVE, RELEASE, FINISH and USAGE first free the reservations whose lease ran
  out, and mark their quotas to be listed again: whether such a write landed is unknown
  (its process died, or its commit was lost on the way).

Time is Redis's own clock (``TIME``), the same for every process on every machine.
"""

from __future__ import annotations

from file_storage._quota.redis.wire import Script

_COMMON = """
local ns = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function covering(key)
  local prefixes = {''}
  local i = 0
  while true do
    i = string.find(key, '/', i + 1, true)
    if not i then break end
    prefixes[#prefixes + 1] = string.sub(key, 1, i)
  end
  local limits = redis.call('HMGET', ns .. ':limits', unpack(prefixes))
  local out = {}
  for j, p in ipairs(prefixes) do
    if limits[j] then out[#out + 1] = {p, limits[j]} end  -- (text: see exceeds)
  end
  return out
end
-- Counts past 2^53 bytes are not exact as Lua numbers (doubles step by more than a byte
-- there: 2^53 + 101 rounds to 2^53 + 100, "within" a limit of 2^53 + 100), so a quota
-- check splits each count's text into hi * 1e9 + lo, both parts exact as doubles
local BIG = 1e9
local function norm(h, l)
  local c = math.floor(l / BIG)
  return h + c, l - c * BIG
end
local function split(s)
  s = s or '0'
  if #s <= 15 or string.sub(s, 1, 1) == '-' then return norm(0, tonumber(s) or 0) end
  return norm(tonumber(string.sub(s, 1, -10)), tonumber(string.sub(s, -9)))
end
local function text(h, l)
  h, l = norm(h, l)
  if h <= 0 then return string.format('%d', h * BIG + l) end
  return string.format('%d%09d', h, l)
end
-- used + reserved + extra > limit (texts, extra a number of bytes), exactly; and the
-- hi, lo of used + reserved
local function exceeds(used, reserved, extra, limit)
  local uh, ul = split(used)
  local rh, rl = split(reserved)
  local bh, bl = norm(uh + rh, ul + rl)
  local th, tl = norm(bh, bl + extra)
  local lh, ll = split(limit)
  return th > lh or (th == lh and tl > ll), bh, bl
end
local function release(id, held)
  local rk = ns .. ':rsv:' .. id
  held = held or redis.call('HGETALL', rk)
  for j = 1, #held, 2 do
    local n = tonumber(held[j + 1])
    -- (never "-0", the text of -n for a write that needed no more bytes: Redis refuses
    -- it as an increment, failing the step half-way)
    if string.sub(held[j], 1, 2) == 'h:' and n ~= 0 then
      redis.call('HINCRBY', ns .. ':q:' .. string.sub(held[j], 3), 'reserved', 0 - n)
    end
  end
  redis.call('DEL', rk)
  redis.call('ZREM', ns .. ':leases', id)
end
local function stale(p)
  -- what the store holds under p is not known here any more: list it again on next use
  -- (a listing under way may have passed the key already: it is not trusted either)
  local q = ns .. ':q:' .. p
  if redis.call('EXISTS', q) == 1 then redis.call('HSET', q, 'seeded', '0', 'stale', '1') end
end
local function switching()
  -- set_versioning under way in some process (the store may switch at any moment)
  return redis.call('ZCARD', ns .. ':vsw') > 0
end
local function purge(now)
  redis.call('ZREMRANGEBYSCORE', ns .. ':vsw', '-inf', now)  -- a switcher that died
  local expired = redis.call('ZRANGEBYSCORE', ns .. ':leases', '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    -- a lease that ran out: its process died or lost Redis mid-write, and whether the
    -- write landed is unknown (its commit may be what was lost): its quotas are listed
    -- again rather than trusted
    local held = redis.call('HGETALL', ns .. ':rsv:' .. id)
    for j = 1, #held, 2 do
      if string.sub(held[j], 1, 2) == 'h:' then stale(string.sub(held[j], 3)) end
    end
    release(id, held)
  end
end
local function num(v)
  return tonumber(v or '0') or 0
end
local function record(p, key, size)
  local q = ns .. ':q:' .. p
  local f = redis.call('HMGET', q, 'seeding', 'seeded')
  if f[1] then
    redis.call('HSET', ns .. ':pend:' .. p, key, size or -1)
  end
  if f[2] ~= '1' then return end
  local sz = ns .. ':sz:' .. p
  local old = num(redis.call('HGET', sz, key))
  if size then redis.call('HSET', sz, key, size) else redis.call('HDEL', sz, key) end
  redis.call('HINCRBY', q, 'used', (size or 0) - old)
end
local function keep(p, key)
  -- the object at key becomes a prior version: its bytes move to kept, still counted
  local q, sz = ns .. ':q:' .. p, ns .. ':sz:' .. p
  local f = redis.call('HMGET', q, 'seeding', 'seeded')
  if f[1] then
    local old = redis.call('HGET', ns .. ':pend:' .. p, key)
    if not old and f[2] == '1' then old = redis.call('HGET', sz, key) end
    if not old then old = redis.call('HGET', ns .. ':stage:' .. p, key) end
    local pk = ns .. ':pendk:' .. p
    local was = redis.call('HGET', pk, key) or '+0'
    local sign, unknown = string.sub(was, 1, 1), string.sub(was, 2, 2) == '?'
    local n = tonumber(string.sub(was, unknown and 3 or 2))
    if not old then unknown = true end
    n = n + math.max(num(old), 0)
    -- (%d: a number joined to a string is written with 14 digits, 1e14 bytes and more
    -- rounded: "1.0000000001234e+14")
    redis.call('HSET', pk, key, string.format('%s%s%d', sign, unknown and '?' or '', n))
  end
  if f[2] ~= '1' then return end
  local old = num(redis.call('HGET', sz, key))
  if old > 0 then
    redis.call('HDEL', sz, key)
    redis.call('HINCRBY', ns .. ':kept:' .. p, key, old)
  end
end
local function swap_in(staged, live)
  -- a listing's staged hash becomes the live one (none staged: nothing listed)
  if redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, live)
  else
    redis.call('DEL', live)
  end
end
local function unlock_seed(p, token)
  local lk = ns .. ':seedlk:' .. p
  if redis.call('GET', lk) == token then redis.call('DEL', lk) end
end
local function unlock(token, first, last)
  for j = first, last do
    local lk = ns .. ':lk:' .. ARGV[j]
    if redis.call('GET', lk) == token then redis.call('DEL', lk) end
  end
end
"""

# ARGV: ns, id, key, total, frees ('' or a key), lease_ms, first (1: a new reservation),
# token ('' or the hold's token: take the lock of key for it first, as LOCK does),
# epoch ('' or the epoch this process pushed its limits into: another one is a reset),
# want ('' or a total past ``total`` to hold ahead of a stream, as far as each quota has
# half of its free space left after ``total``; '=': a stream that held ahead ends, its
# whole ``total`` checked against each quota as it is now, what it holds included)
# -> {'ok', held} (the total now held for: ``total`` or more, at most ``want``) |
# {'none'} | {'reset'} | {'locked'} (another holder has key) |
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
  local f = redis.call('HMGET', q, 'seeded', 'used', 'reserved', 'lists')
  if f[1] ~= '1' then return {'unseeded', p} end
  counts[j] = f
  local old, held
  if fresh and versioned then
    old, held = 0, 0
  elseif fresh then
    local sz = ns .. ':sz:' .. p
    old = num(redis.call('HGET', sz, key))
    if frees ~= '' and string.sub(frees, 1, #p) == p then
      old = old + num(redis.call('HGET', sz, frees))
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
    if over then return {'over', p, text(bh, bl - held), limit} end
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

# ARGV: ns, id, key, size, token, undoable ('1': the caller can delete the new object), lock keys...
# -> {'ok'} | {'over', prefix, used, limit} (lease lost, its key still locked by token, a
# new undoable object that no longer fits: nothing recorded) | {'overshoot', prefix}
# (lease lost: recorded anyway); the key's lock lost too: its quotas are listed again;
# 'relisted' appended to ok and overshoot (the lock keys then stay locked): see below
COMMIT = Script(
    _COMMON
    + """
local id, key, size, token = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local undoable = ARGV[6] == '1'
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
      local old = num(redis.call('HGET', ns .. ':sz:' .. p, key))
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
  record(ql[1], key, size)
  if lost then stale(ql[1]) end
end
-- relisted: the key stays locked until the caller has counted it (its hold unlocks it),
-- else a write of another process could land between this step and that count
if relisted then
  result[#result + 1] = 'relisted'
else
  unlock(token, 7, #ARGV)
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
# deleted keys..., lock keys...: record the deletes, unlock
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
local locked = {}
for j = 5 + n, #ARGV do locked[ARGV[j]] = true end
for j = 5, 4 + n do
  local key = ARGV[j]
  -- held, but its lock ran out (a process frozen past its lease): another process may
  -- have written the key since, landing before or after this delete (see COMMIT)
  local lost = locked[key] and redis.call('GET', ns .. ':lk:' .. key) ~= token
  for _, ql in ipairs(covering(key)) do
    if versioned then
      keep(ql[1], key)
      local f = redis.call('HMGET', ns .. ':q:' .. ql[1], 'seeding', 'gen')
      if f[1] or (since and num(f[2]) > since) then relisted = true end
    end
    record(ql[1], key, nil)
    if lost then stale(ql[1]) end
  end
end
unlock(token, 5 + n, #ARGV)
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
    redis.call('HDEL', ns .. ':rsv:' .. id, 'h:' .. p, 'o:' .. p)
  end
end
for j = 2, #ARGV, 2 do
  local p, limit = ARGV[j], ARGV[j + 1]
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

# ARGV: ns, prefix -> {limit or false, used, reserved, seeded, epoch or false}
USAGE = Script(
    _COMMON
    + """
local p = ARGV[2]
purge(now_ms())
local limit = redis.call('HGET', ns .. ':limits', p)
local f = redis.call('HMGET', ns .. ':q:' .. p, 'used', 'reserved', 'seeded')
-- (the counts as Redis keeps them, exact: as Lua numbers they are rounded past 2^53)
return {limit, f[1] or '0', f[2] or '0', f[3] == '1' and 1 or 0,
  redis.call('GET', ns .. ':epoch')}
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
else
  if state ~= '-' then redis.call('SET', ns .. ':ver', state) end
  redis.call('ZREM', ns .. ':vsw', token)
end
redis.call('INCR', ns .. ':vchg')
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
  redis.call('SET', ns .. ':ver', state)
  return state
end
return redis.call('GET', ns .. ':ver') or 'off'
"""
)
