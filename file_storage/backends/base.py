"""The abstract :class:`StorageBackend`: one contract, many backends.

Public methods are final and run the same steps in order: validate the key, reserve
quota, call the backend's ``_hook``, translate errors, return a normalized key or
:class:`ObjectInfo`. Backends implement only the hooks; hooks get valid keys and never
re-validate or count quota.
"""

from __future__ import annotations

from file_storage._keys import KeyLike
from file_storage._streams import Progress
from file_storage.backends._core import (
    Content,
)
from file_storage.backends._lifecycle import Lifecycle
from file_storage.backends._listing import Listings
from file_storage.backends._posts import Posts
from file_storage.backends._quotas import Quotas
from file_storage.backends._transfers import Transfers
from file_storage.backends._versions import Versions
from file_storage.errors import (
    InvalidKeyError,
    InvalidMetadataError,
    ObjectConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from file_storage.models import ObjectInfo, ObjectVersion, Usage

__all__ = [
    "Content",
    "InvalidKeyError",
    "InvalidMetadataError",
    "KeyLike",
    "ObjectConflictError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectVersion",
    "PreconditionFailedError",
    "Progress",
    "StorageBackend",
    "StorageConfigError",
    "StorageError",
    "StoragePermissionError",
    "StorageQuotaExceededError",
    "StorageUnavailableError",
    "Usage",
]


class StorageBackend(Transfers, Quotas, Versions, Lifecycle, Listings, Posts):
    """Where an application keeps its files: the same API on local disk, S3 and memory.

    Args:
        max_size_bytes: cap on the total bytes stored under the backend's root or
            prefix (``None``: no cap). A write that would cross it raises
            :class:`StorageQuotaExceededError` and writes nothing.
        quota_refresh_seconds: re-scan quota usage at most this often, to see writes
            made by other processes (``None``: only on :meth:`refresh_usage`).
        expire_interval_seconds: run :meth:`purge_expired` this often in the background
            while the backend is in use (``None``: only when called).
    """
