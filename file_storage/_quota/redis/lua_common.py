"""The Lua functions every script of the Redis quota ledger starts with, and its keys.

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
- ``{ns}:rsv:a.<member>``: a process's allowance (local disk): ``h:<prefix>`` bytes of
  the quota it holds and spends without asking (counted in ``reserved``), ``n:<prefix>``
  the part given for writes in flight (the rest, held ahead, is in the quota's
  ``allowed``, which ``get_usage`` leaves out); ``{ns}:mem``: its lease (a sorted set like
  ``leases``); ``{ns}:ack``: member -> the ``{ns}:agen`` it acknowledged. ``{ns}:agen`` is
  bumped by every change a member must see before it draws again (a limit set, a listing
  begun or ended, a quota marked to be listed again). See
  :mod:`file_storage._quota.redis.allowance_lua`.

Time is Redis's own clock (``TIME``), the same for every process on every machine.
"""

from __future__ import annotations

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
  if string.sub(id, 1, 2) == 'a.' then
    -- a process's allowance (see allowance_lua): what it held ahead was in allowed too
    local g = {}
    for j = 1, #held, 2 do g[held[j]] = tonumber(held[j + 1]) end
    for f, n in pairs(g) do
      local p = string.sub(f, 3)
      local ahead = n - (g['n:' .. p] or 0)
      if string.sub(f, 1, 2) == 'h:' and ahead ~= 0 then
        redis.call('HINCRBY', ns .. ':q:' .. p, 'allowed', 0 - ahead)
      end
    end
    redis.call('ZREM', ns .. ':mem', id)
    redis.call('HDEL', ns .. ':ack', id)
  end
end
local function stale(p)
  -- what the store holds under p is not known here any more: list it again on next use
  -- (a listing under way may have passed the key already: it is not trusted either)
  local q = ns .. ':q:' .. p
  if redis.call('EXISTS', q) == 1 then
    redis.call('HSET', q, 'seeded', '0', 'stale', '1')
    redis.call('INCR', ns .. ':agen')  -- (processes drawing on allowances stop: see there)
  end
end
local function switching()
  -- set_versioning under way in some process (the store may switch at any moment)
  return redis.call('ZCARD', ns .. ':vsw') > 0
end
local function purge(now)
  redis.call('ZREMRANGEBYSCORE', ns .. ':vsw', '-inf', now)  -- a switcher that died
  redis.call('ZREMRANGEBYSCORE', ns .. ':mem', '-inf', now)  -- (their allowances: below)
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
-- local disk with allowances (see allowance_lua): a change of key from the size its
-- writer found on disk under its key locks, by ``delta``. The counts move by the
-- difference, whatever Redis's size of key says: it lags by the sizes other processes
-- drawing on allowances have not sent yet, which move it by their own differences
local function shift(p, key, delta)
  if delta == 0 then return end
  local q = ns .. ':q:' .. p
  if redis.call('HGET', q, 'seeded') ~= '1' then return end
  redis.call('HINCRBY', q, 'used', delta)
  local sz = ns .. ':sz:' .. p
  if redis.call('HINCRBY', sz, key, delta) == 0 then redis.call('HDEL', sz, key) end
end
-- no listing of p began or ended since ``lists`` was read, nor runs now: a difference
-- found on disk is then the change of p's count (else the listing may have seen it)
local function steady(p, lists)
  local f = redis.call('HMGET', ns .. ':q:' .. p, 'seeding', 'lists')
  return not f[1] and lists ~= nil and (f[2] or '0') == lists
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
