"""Build a backend from settings, and keep the one process-wide instance.

The ``match`` in :func:`create_storage_backend` is the registry of backends. Building a
backend opens no connection and touches no storage (clients connect lazily), so both
builders are plain functions, and :func:`get_storage_backend` is cheap enough to call
per request. The SDK of a backend is imported only when that backend is built.
"""

from __future__ import annotations

import logging
import threading

from pydantic import SecretStr

from file_storage.backends.base import StorageBackend
from file_storage.errors import StorageConfigError
from file_storage.settings import StorageSettings

__all__ = ["close_storage_backend", "create_storage_backend", "get_storage_backend"]

logger = logging.getLogger(__name__)

# guards check-and-create of the singleton: threads (sync routes run in a pool, workers
# started by a server) may ask for it at the same moment, and only one may build it
_lock = threading.Lock()
_backend: StorageBackend | None = None


def create_storage_backend(settings: StorageSettings | None = None) -> StorageBackend:
    """Build a new backend of the type the settings name.

    Args:
        settings: what to build; ``None`` reads ``STORAGE_*`` variables and ``.env``.

    Returns:
        A new, unshared backend. Close it with ``await backend.aclose()``.

    Raises:
        StorageConfigError: the settings are missing or invalid (the message names the
            variable), or the backend's dependency is not installed.
    """
    if settings is None:
        settings = StorageSettings()
    refresh = settings.quota.refresh_seconds
    quota = settings.quota
    expire = settings.expire.interval_seconds
    match settings.type:
        case "MEMORY":
            from file_storage.backends.memory import MemoryStorageBackend

            logger.debug("creating MEMORY storage backend")
            local = settings.local
            # the LOCAL URL settings: an app configured for signed local URLs runs on
            # memory unchanged (its tests), served by the same signed_url_router
            if quota.redis_url is None:  # subclasses made for tests may not take the rest
                return MemoryStorageBackend(
                    quota_refresh_seconds=refresh,
                    expire_interval_seconds=expire,
                    base_url=local.base_url,
                    signing_key=local.signing_key,
                    public_base_url=local.public_base_url,
                )
            return MemoryStorageBackend(
                quota_refresh_seconds=refresh,
                expire_interval_seconds=expire,
                quota_redis_url=quota.redis_url,
                quota_redis_namespace=quota.redis_namespace,
                quota_lease_seconds=quota.lease_seconds,
                quota_fail_open=quota.fail_open,
                base_url=local.base_url,
                signing_key=local.signing_key,
                public_base_url=local.public_base_url,
            )
        case "LOCAL":
            from file_storage.backends.local import LocalStorageBackend

            local = settings.local
            logger.debug("creating LOCAL storage backend at %s", local.path)
            return LocalStorageBackend(
                local.path,
                max_size_bytes=local.max_size_bytes,
                quota_refresh_seconds=refresh,
                base_url=local.base_url,
                signing_key=local.signing_key,
                temp_max_age_seconds=local.temp_max_age_seconds,
                quota_redis_url=quota.redis_url,
                quota_redis_namespace=quota.redis_namespace,
                quota_lease_seconds=quota.lease_seconds,
                quota_fail_open=quota.fail_open,
                expire_interval_seconds=expire,
                public_base_url=local.public_base_url,
            )
        case "S3":
            # backends/s3.py imports the SDK only when its first client is built
            from file_storage.backends.s3 import S3StorageBackend

            s3 = settings.s3
            if s3.bucket is None:  # settings made with model_construct skip validation
                raise StorageConfigError("STORAGE_S3_BUCKET: required when STORAGE_TYPE is S3")
            logger.debug(
                "creating S3 storage backend for bucket %s, prefix %s", s3.bucket, s3.prefix
            )
            return S3StorageBackend(
                s3.bucket,
                prefix=s3.prefix,
                region=s3.region,
                # the key id is no secret (every presigned URL shows it); the secret
                # access key and token stay wrapped until the client is built
                access_key_id=_reveal(s3.access_key_id),
                secret_access_key=s3.secret_access_key,
                session_token=s3.session_token,
                endpoint_url=s3.endpoint_url,
                public_endpoint_url=s3.public_endpoint_url,
                addressing_style=s3.addressing_style,
                max_size_bytes=s3.max_size_bytes,
                quota_refresh_seconds=refresh,
                multipart_threshold=s3.multipart_threshold_bytes,
                multipart_chunk_size=s3.multipart_chunk_bytes,
                max_concurrency=s3.max_concurrency,
                sse=s3.sse,
                sse_kms_key_id=s3.sse_kms_key_id,
                checksum=s3.checksum,
                max_attempts=s3.max_attempts,
                retry_mode=s3.retry_mode,
                connect_timeout=s3.connect_timeout,
                read_timeout=s3.read_timeout,
                max_pool_connections=s3.max_pool_connections,
                fallback_path=s3.fallback_path,
                flush_interval_seconds=s3.flush_interval_seconds,
                client=s3.client,
                quota_redis_url=quota.redis_url,
                quota_redis_namespace=quota.redis_namespace,
                quota_lease_seconds=quota.lease_seconds,
                quota_fail_open=quota.fail_open,
                public_base_url=s3.public_base_url,
            )
    raise StorageConfigError("STORAGE_TYPE: must be one of LOCAL, S3 or MEMORY")


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def get_storage_backend() -> StorageBackend:
    """Return the process-wide backend, building it from the environment on first use.

    Safe to call from many threads and coroutines at once: the backend is built exactly
    once. :func:`close_storage_backend` closes and forgets it.

    Returns:
        The shared backend.

    Raises:
        StorageConfigError: the settings in the environment are missing or invalid.
    """
    global _backend
    with _lock:
        if _backend is None:
            _backend = create_storage_backend()
        return _backend


async def close_storage_backend() -> None:
    """Close the process-wide backend and forget it (for application shutdown and tests).

    Does nothing when none exists. The next :func:`get_storage_backend` builds a new one.
    """
    global _backend
    with _lock:
        # forget first, so that a caller arriving while it closes gets a fresh backend
        backend, _backend = _backend, None
    if backend is not None:
        await backend.aclose()
