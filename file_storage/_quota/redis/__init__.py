"""The shared quota ledger in Redis (extra ``file_storage[redis]``).

- :mod:`~file_storage._quota.redis.ledger`: the ledger (limits, usage, reservations).
- :mod:`~file_storage._quota.redis.hold`: what one operation holds there (key locks and
  a write's reservation).
- :mod:`~file_storage._quota.redis.lease`: lease ids and their renewal.
- :mod:`~file_storage._quota.redis.scripts`: the Lua scripts, one per ledger step.
- :mod:`~file_storage._quota.redis.wire`: the connection the scripts are called on.
"""
