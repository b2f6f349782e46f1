"""Quotas: the ledgers that count what each quota prefix stores.

- :mod:`file_storage._quota.ledger`: the interface every backend calls (reserve before a
  write, commit or release after it, per-key locks) and the in-process ledger, exact
  inside one process.
- :mod:`file_storage._quota.redis`: the shared ledger (``STORAGE_QUOTA_REDIS_URL``),
  the same interface kept in Redis for many processes on many machines; imported only
  when configured.
"""
