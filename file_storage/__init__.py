"""file_storage: async-native, pluggable file storage for Python web services.

One :class:`StorageBackend` API over local disk (:class:`LocalStorageBackend`), S3 and
S3-compatible stores (:class:`S3StorageBackend`), Google Cloud Storage
(:class:`GCSStorageBackend`), Azure Blob (:class:`AzureStorageBackend`) and memory
(:class:`MemoryStorageBackend`), picked by ``STORAGE_TYPE`` through
:func:`get_storage_backend`; other packages add backends through the
``file_storage.backends`` entry points.
"""

from file_storage._events import parse_s3_event
from file_storage._migrate import MigrationReport, migrate
from file_storage.backends.azure import AzureStorageBackend
from file_storage.backends.base import StorageBackend
from file_storage.backends.gcs import GCSStorageBackend
from file_storage.backends.local import LocalStorageBackend
from file_storage.backends.memory import MemoryStorageBackend
from file_storage.backends.s3 import S3StorageBackend
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
from file_storage.factory import close_storage_backend, create_storage_backend, get_storage_backend
from file_storage.models import (
    ListPage,
    ObjectEvent,
    ObjectInfo,
    ObjectVersion,
    PresignedPost,
    Usage,
)
from file_storage.path_builder import StoragePathBuilder
from file_storage.settings import StorageSettings

__all__ = [
    "AzureStorageBackend",
    "GCSStorageBackend",
    "InvalidKeyError",
    "InvalidMetadataError",
    "ListPage",
    "LocalStorageBackend",
    "MemoryStorageBackend",
    "MigrationReport",
    "ObjectConflictError",
    "ObjectEvent",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectVersion",
    "PreconditionFailedError",
    "PresignedPost",
    "S3StorageBackend",
    "StorageBackend",
    "StorageConfigError",
    "StorageError",
    "StoragePathBuilder",
    "StoragePermissionError",
    "StorageQuotaExceededError",
    "StorageSettings",
    "StorageUnavailableError",
    "Usage",
    "close_storage_backend",
    "create_storage_backend",
    "get_storage_backend",
    "migrate",
    "parse_s3_event",
]

import logging as _logging

# a library never prints: applications configure handlers for "file_storage"
_logging.getLogger("file_storage").addHandler(_logging.NullHandler())

__version__ = "0.1.0"
