"""The built-in backends' entry points (group ``file_storage.backends``, pyproject.toml).

Each takes the :class:`StorageSettings` and returns a new backend, importing its backend
module only when called, so that selecting LOCAL never imports a cloud SDK.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypedDict

from pydantic import SecretStr

from file_storage.errors import StorageConfigError

if TYPE_CHECKING:
    from file_storage.backends.base import StorageBackend
    from file_storage.settings import StorageSettings

__all__ = ["azure", "gcs", "local", "memory", "s3"]

logger = logging.getLogger("file_storage.factory")


class _QuotaArgs(TypedDict, total=False):
    """The ``STORAGE_QUOTA_*`` keyword arguments every built-in backend takes."""

    quota_refresh_seconds: float | None
    quota_redis_url: SecretStr | None
    quota_redis_namespace: str | None
    quota_lease_seconds: float
    quota_fail_open: bool


def memory(settings: StorageSettings) -> StorageBackend:
    """``STORAGE_TYPE=MEMORY``: a :class:`MemoryStorageBackend`."""
    from file_storage.backends import memory as module

    logger.debug("creating MEMORY storage backend")
    quota = _quota_args(settings)
    if settings.quota.redis_url is None:  # subclasses made for tests may not take the rest
        quota = _QuotaArgs(quota_refresh_seconds=quota["quota_refresh_seconds"])
    local = settings.local
    # the LOCAL URL settings: an app configured for signed local URLs runs on memory
    # unchanged (its tests), served by the same signed_url_router
    return module.MemoryStorageBackend(
        **quota,
        expire_interval_seconds=settings.expire.interval_seconds,
        base_url=local.base_url,
        signing_key=local.signing_key,
        public_base_url=local.public_base_url,
    )


def local(settings: StorageSettings) -> StorageBackend:
    """``STORAGE_TYPE=LOCAL``: a :class:`LocalStorageBackend`."""
    from file_storage.backends import local as module

    options = settings.local
    logger.debug("creating LOCAL storage backend at %s", options.path)
    return module.LocalStorageBackend(
        options.path,
        max_size_bytes=options.max_size_bytes,
        **_quota_args(settings),
        base_url=options.base_url,
        signing_key=options.signing_key,
        temp_max_age_seconds=options.temp_max_age_seconds,
        expire_interval_seconds=settings.expire.interval_seconds,
        public_base_url=options.public_base_url,
    )


def s3(settings: StorageSettings) -> StorageBackend:
    """``STORAGE_TYPE=S3``: an :class:`S3StorageBackend`."""
    # backends/s3/ imports the SDK only when its first client is built
    from file_storage.backends import s3 as module

    options = settings.s3
    bucket = _required(options.bucket, "STORAGE_S3_BUCKET", "S3")
    logger.debug("creating S3 storage backend for bucket %s, prefix %s", bucket, options.prefix)
    return module.S3StorageBackend(
        bucket,
        prefix=options.prefix,
        region=options.region,
        # the key id is no secret (every presigned URL shows it); the secret
        # access key and token stay wrapped until the client is built
        access_key_id=_reveal(options.access_key_id),
        secret_access_key=options.secret_access_key,
        session_token=options.session_token,
        endpoint_url=options.endpoint_url,
        public_endpoint_url=options.public_endpoint_url,
        addressing_style=options.addressing_style,
        max_size_bytes=options.max_size_bytes,
        **_quota_args(settings),
        multipart_threshold=options.multipart_threshold_bytes,
        multipart_chunk_size=options.multipart_chunk_bytes,
        max_concurrency=options.max_concurrency,
        sse=options.sse,
        sse_kms_key_id=options.sse_kms_key_id,
        checksum=options.checksum,
        max_attempts=options.max_attempts,
        retry_mode=options.retry_mode,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=options.max_pool_connections,
        fallback_path=options.fallback_path,
        flush_interval_seconds=options.flush_interval_seconds,
        client=options.client,
        public_base_url=options.public_base_url,
    )


def gcs(settings: StorageSettings) -> StorageBackend:
    """``STORAGE_TYPE=GCS``: a :class:`GCSStorageBackend`."""
    # backends/gcs imports obstore only when its store is first used
    from file_storage.backends import gcs as module

    options = settings.gcs
    bucket = _required(options.bucket, "STORAGE_GCS_BUCKET", "GCS")
    logger.debug("creating GCS storage backend for bucket %s, prefix %s", bucket, options.prefix)
    return module.GCSStorageBackend(
        bucket,
        prefix=options.prefix,
        service_account=options.service_account,
        endpoint_url=options.endpoint_url,
        max_size_bytes=options.max_size_bytes,
        **_quota_args(settings),
        expire_interval_seconds=settings.expire.interval_seconds,
        public_base_url=options.public_base_url,
    )


def azure(settings: StorageSettings) -> StorageBackend:
    """``STORAGE_TYPE=AZURE``: an :class:`AzureStorageBackend`."""
    from file_storage.backends import azure as module

    options = settings.azure
    container = _required(options.container, "STORAGE_AZURE_CONTAINER", "AZURE")
    logger.debug(
        "creating AZURE storage backend for container %s, prefix %s", container, options.prefix
    )
    return module.AzureStorageBackend(
        container,
        account=options.account,
        prefix=options.prefix,
        access_key=options.access_key,
        connection_string=options.connection_string,
        endpoint_url=options.endpoint_url,
        max_size_bytes=options.max_size_bytes,
        **_quota_args(settings),
        expire_interval_seconds=settings.expire.interval_seconds,
        public_base_url=options.public_base_url,
    )


def _quota_args(settings: StorageSettings) -> _QuotaArgs:
    quota = settings.quota
    return _QuotaArgs(
        quota_refresh_seconds=quota.refresh_seconds,
        quota_redis_url=quota.redis_url,
        quota_redis_namespace=quota.redis_namespace,
        quota_lease_seconds=quota.lease_seconds,
        quota_fail_open=quota.fail_open,
    )


def _required(value: str | None, variable: str, kind: str) -> str:
    if value is None:  # settings made with model_construct skip validation
        raise StorageConfigError(f"{variable}: required when STORAGE_TYPE is {kind}")
    return value


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
