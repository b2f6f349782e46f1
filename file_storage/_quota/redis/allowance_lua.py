"""The Lua script of the allowances: one call sends a process's sizes and tops up its share.

On local disk a save costs a few hundred microseconds, and two Redis round trips per
save would double it; there the ledger lets each process (a *member*) hold an
*allowance* of each quota's free space, spend it without asking, and send what it spent
in batches. The member finds each change on disk under the key's lock every process of
the machine takes (an ``flock``), so what it sends is the exact difference a write or a
delete made, whatever Redis's size of that key says then (see ``shift``).

- An allowance is a reservation (``{ns}:rsv:a.<member>``, fields ``h:<prefix>``): its
  bytes are in the quota's ``reserved``, so no other write is given them, and in its
  ``allowed``, so ``get_usage`` leaves them out. Its lease is the member's
  (``{ns}:leases`` and ``{ns}:mem``), renewed by each call; a member that stops calling
  (killed) loses it, and its quotas are listed again, as for any reservation whose
  lease ran out: what it spent and had not sent is then counted by that listing.
- A listing must not race sizes still to be sent: SEED_BEGIN raises a barrier (bumps
  ``{ns}:agen``) and lists only once every live member has acknowledged it (``{ns}:ack``),
  which a member does once its draws in flight are over and their sizes sent. Until
  the listing ends the member writes there through the ledger's other steps, which
  record each size as it lands (the listing's pending changes).
- Near a limit the free space is not handed out: an allowance takes at most a quarter
  of what is free, nothing under ``_MIN_GRANT``; a write that needs more asks for its
  exact bytes (``need``) and, refused only because other members hold allowances, has
  them recalled (``recall``: they give back what they do not use with their next call).
"""

from __future__ import annotations

from file_storage._quota.redis.lua_common import _COMMON
from file_storage._quota.redis.wire import Script

MIN_GRANT = 64 * 1024  # an allowance smaller than this is not worth a member's holding
RECALL_MS = 1000  # after a recall, no allowance under that quota for this long

# ARGV: ns, member, lease_ms, fresh ('1': the member's first call), ack ('' or the agen it
# acknowledges: nothing drawn before it is in flight, all sent), leave ('1': give every
# allowance back and end the lease), n, n groups (the prefix of a quota the member knows,
# k, k pairs (key under it, the difference its changes made)), m, m quintuples (prefix,
# give, want, need, drawn): give back ``give`` bytes, hold up to ``want`` (best effort),
# ``need`` bytes more now (or a refusal); ``drawn``: what its writes in flight drew (in
# use, not ahead), then prefixes to describe...
# -> {agen, 'reset'} (Redis lost its data) | {agen, 'expired'} (its lease ran out: the
# quotas of the sizes sent are listed again, nothing else done) |
# {agen, 'ok', plain (1: no versioning and no switch of it under way),
#  {prefix, held, flag ('ok', 'busy', 'recall', 'recalled', 'over', 'gone'), used (stored
#  and held for writes in flight, not ahead), limit, held for this member's writes}...,
#  {prefix, limit or '', ready (1: seeded, no listing nor barrier there)}...}
ALLOW = Script(
    _COMMON
    + f"""
local member, lease, fresh = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local ack, leave = ARGV[5], ARGV[6] == '1'
local id = 'a.' .. member
local rk = ns .. ':rsv:' .. id
local now = now_ms()
purge(now)
-- (grouped by quota: one check and one count per quota, not per key; a quota the member
-- does not know of is not listed yet: nothing is counted there before its listing,
-- which waits for what the member drew, see SEED_BEGIN)
local groups = {{}}
local at = 8
for _ = 1, tonumber(ARGV[7]) do
  local k = tonumber(ARGV[at + 1])
  groups[#groups + 1] = {{ARGV[at], at + 2, at + 1 + 2 * k}}
  at = at + 2 + 2 * k
end
local np = tonumber(ARGV[at])
local dat = at + 1 + 5 * np
if not redis.call('GET', ns .. ':epoch') then
  return {{redis.call('GET', ns .. ':agen') or '0', 'reset'}}
end
if not fresh and redis.call('EXISTS', rk) == 0 then
  -- its lease ran out (a process frozen past it): a listing may have begun since, and
  -- whether it saw these changes is not known; it is not trusted
  for _, g in ipairs(groups) do stale(g[1]) end
  return {{redis.call('GET', ns .. ':agen') or '0', 'expired'}}
end
redis.call('HSET', rk, 'a', '1')
local spent = {{}}
for _, g in ipairs(groups) do
  local p = g[1]
  if redis.call('HEXISTS', ns .. ':limits', p) == 1 then
    local q = ns .. ':q:' .. p
    local total = 0
    for j = g[2], g[3], 2 do total = total + tonumber(ARGV[j + 1]) end
    local f = redis.call('HMGET', q, 'seeding', 'seeded')
    if f[1] then
      stale(p)  -- (a live member sent its sizes before the listing began: never here)
    elseif f[2] == '1' then
      local sz = ns .. ':sz:' .. p
      for j = g[2], g[3], 2 do
        local d = tonumber(ARGV[j + 1])
        if d ~= 0 and redis.call('HINCRBY', sz, ARGV[j], d) == 0 then
          redis.call('HDEL', sz, ARGV[j])
        end
      end
      if total ~= 0 then redis.call('HINCRBY', q, 'used', total) end
    end
    spent[p] = (spent[p] or 0) + total
  end
end
local function move(p, n, ahead)
  -- n bytes more (or fewer) held by the member under p, ``ahead`` of them held ahead
  local q = ns .. ':q:' .. p
  if n ~= 0 then redis.call('HINCRBY', q, 'reserved', n) end
  if ahead ~= 0 then redis.call('HINCRBY', q, 'allowed', ahead) end
end
for p, d in pairs(spent) do
  local h = tonumber(redis.call('HGET', rk, 'h:' .. p) or '')
  if h then
    -- what it spent comes off what it holds (first what it was given for writes in
    -- flight); what it freed (d < 0) it holds now, ahead
    local n = num(redis.call('HGET', rk, 'n:' .. p))
    local take = math.min(h, d)
    local tn = math.max(0, math.min(n, take))
    move(p, 0 - take, 0 - (take - tn))
    redis.call('HSET', rk, 'h:' .. p, h - take, 'n:' .. p, n - tn)
  end
end
local function barred(p)
  -- a listing of p under way, or its barrier up. One whose lister died (its lock ran
  -- out) is taken down, else no member would draw there again until a refresh_usage:
  -- a barrier simply; a listing begun, with p to be listed again (it may have missed
  -- writes, and what it staged is dropped by the next one)
  local q = ns .. ':q:' .. p
  local f = redis.call('HMGET', q, 'barrier', 'btok', 'seeding')
  if not f[1] and not f[3] then return false end
  local owner = redis.call('GET', ns .. ':seedlk:' .. p)
  if f[3] then
    if owner == f[3] then return true end
    redis.call('HDEL', q, 'seeding')
    stale(p)
    return true
  end
  if owner == f[2] then return true end
  redis.call('HDEL', q, 'barrier', 'btok')
  return false
end
local out = {{}}
for j = at + 1, dat - 1, 5 do
  local p, give = ARGV[j], tonumber(ARGV[j + 1])
  local want, need, drawn = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4])
  local limit = redis.call('HGET', ns .. ':limits', p)
  local h = tonumber(redis.call('HGET', rk, 'h:' .. p) or '')
  local q = ns .. ':q:' .. p
  if not limit or not h then
    out[#out + 1] = {{p, '0', 'gone', '0', '', '0'}}
  else
    -- in use: what its writes in flight drew (the rest is held ahead)
    local n = num(redis.call('HGET', rk, 'n:' .. p))
    local now_n = math.max(0, math.min(h, drawn))
    move(p, 0, n - now_n)
    n = now_n
    give = math.max(0, math.min(give, h - n))
    local c = redis.call('HMGET', q, 'used', 'reserved')
    -- over its limit (one lowered under what is held): what it holds ahead is given back
    if exceeds(c[1], c[2], 0, limit) then give = h - n end
    if leave then give = h end
    move(p, 0 - give, 0 - math.min(give, h - n))
    h = h - give
    local f = redis.call('HMGET', q, 'seeded', 'used', 'reserved', 'seeding', 'barrier',
      'recall', 'allowed')
    local ready = not barred(p) and f[1] == '1'
    local recalled = f[6] and now - tonumber(f[6]) < {RECALL_MS}
    local flag = 'ok'
    if need > 0 then
      if not ready then
        flag = 'busy'
      elseif exceeds(f[2], f[3], need, limit) then
        local others = num(f[7]) - (h - n)
        if others > 0 and not exceeds(f[2], f[3], need - others, limit) then
          redis.call('HSET', q, 'recall', now)
          flag = 'recall'
        else
          flag = 'over'
        end
      else
        move(p, need, 0)
        h, n = h + need, n + need
      end
    end
    if flag == 'ok' and recalled then flag = 'recalled' end
    if flag == 'ok' and ready and want > h and not leave then
      local used, reserved = redis.call('HGET', q, 'used'), redis.call('HGET', q, 'reserved')
      local _, bh, bl = exceeds(used, reserved, 0, limit)
      local lh, ll = split(limit)
      local free = (lh - bh) * BIG + (ll - bl)
      local g = math.min(want - h, math.floor(free / 4))
      if g >= {MIN_GRANT} and not exceeds(used, reserved, g, limit) then
        move(p, g, g)
        h = h + g
      end
    end
    if leave then n = 0 end
    redis.call('HSET', rk, 'h:' .. p, h, 'n:' .. p, n)
    local g = redis.call('HMGET', q, 'used', 'reserved', 'allowed')
    local _, bh, bl = exceeds(g[1], g[2], 0, limit)
    out[#out + 1] = {{p, string.format('%d', h), flag, text(bh, bl - num(g[3])), limit,
      string.format('%d', n)}}
  end
end
local described = {{}}
for j = dat, #ARGV do
  local p = ARGV[j]
  local limit = redis.call('HGET', ns .. ':limits', p)
  if limit then
    local f = redis.call('HMGET', ns .. ':q:' .. p, 'seeded', 'seeding', 'barrier')
    local ready = not barred(p) and f[1] == '1'
    -- held (even at 0): if the member dies, its quotas are listed again (see purge)
    if ready and not leave then redis.call('HSETNX', rk, 'h:' .. p, 0) end
    described[#described + 1] = {{p, limit, ready and 1 or 0}}
  else
    described[#described + 1] = {{p, '', 1}}
  end
end
if leave then
  release(id)
else
  redis.call('ZADD', ns .. ':leases', now + lease, id)
  redis.call('ZADD', ns .. ':mem', now + lease, id)
  if ack ~= '' then
    redis.call('HSET', ns .. ':ack', id, ack)
  elseif fresh then
    -- a new member has drawn nothing: it acknowledges every barrier up to now (else one
    -- raised before it joined waits for it until the next change of agen: for ever, as
    -- long as it renews its lease)
    redis.call('HSET', ns .. ':ack', id, redis.call('GET', ns .. ':agen') or '0')
  end
end
local vv = redis.call('MGET', ns .. ':ver', ns .. ':vchg')
local plain = (not vv[1] or vv[1] == 'off') and not switching()
return {{redis.call('GET', ns .. ':agen') or '0', 'ok', plain and 1 or 0, out, described}}
"""
)
