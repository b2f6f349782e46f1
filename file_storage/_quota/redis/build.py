"""Building the Redis quota ledger: its options checked, the client loaded on first use."""

from __future__ import annotations

import hashlib
from types import ModuleType

from pydantic import SecretStr

from file_storage._quota.ledger import Probe, Scanner
from file_storage._quota.redis.ledger import RedisQuotaManager
from file_storage._quota.redis.wire import url_problem
from file_storage._settings_common import check_ledger_options, has_password, warn_in_clear
from file_storage.errors import StorageConfigError


def load_redis() -> ModuleType:
    """Import the Redis client (extra ``file_storage[redis]``), imported only when used."""
    try:
        import redis.asyncio
    except ImportError as exc:
        raise StorageConfigError(
            "STORAGE_QUOTA_REDIS_URL needs the redis client: pip install 'file_storage[redis]'"
        ) from exc
    return redis


def default_namespace(identity: str) -> str:
    """A namespace derived from what the backend stores into (root, or bucket and prefix)."""
    return "file_storage:" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def redis_ledger(
    scan: Scanner,
    refresh_seconds: float | None,
    *,
    url: str | SecretStr,
    namespace: str | None,
    identity: str,
    lease_seconds: float,
    fail_open: bool,
    probe: Probe | None = None,
    allowances: bool = False,
) -> RedisQuotaManager:
    """Check the options and build the ledger (no connection is opened here);
    ``allowances``: one that can draw on allowances (local disk: see ``attach``)."""
    secret = SecretStr(url) if isinstance(url, str) else url
    scheme = secret.get_secret_value().partition("://")[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        # never echo the URL: it may carry a password
        raise StorageConfigError(
            "quota_redis_url (STORAGE_QUOTA_REDIS_URL) must be a redis://, rediss:// or unix:// URL"
        )
    check_ledger_options(lease_seconds, namespace)
    # a missing extra, or a URL the client cannot use, fails when the backend is built,
    # not on the first write
    problem = url_problem(secret.get_secret_value(), load_redis())
    if problem is not None:
        raise StorageConfigError(f"quota_redis_url (STORAGE_QUOTA_REDIS_URL): {problem}")
    if has_password(secret.get_secret_value()):
        warn_in_clear(
            secret.get_secret_value(),
            "quota_redis_url (STORAGE_QUOTA_REDIS_URL)",
            "its password and the ledger's commands",
        )
    if allowances:
        from file_storage._quota.redis.allowance_ledger import AllowanceQuotaManager

        make: type[RedisQuotaManager] = AllowanceQuotaManager
    else:
        make = RedisQuotaManager
    return make(
        scan,
        refresh_seconds,
        url=secret,
        namespace=namespace or default_namespace(identity),
        lease_seconds=float(lease_seconds),
        fail_open=bool(fail_open),
        probe=probe,
    )
