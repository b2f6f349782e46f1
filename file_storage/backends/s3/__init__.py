"""The S3 backend: :class:`S3StorageBackend`, for AWS S3 and S3-compatible servers.

The package holds its parts: ``_config`` (client settings), ``_errors`` (botocore errors to
:mod:`file_storage.errors`), ``_multipart`` (requests and parts, checksums), ``_parts`` (one
multipart upload: create, complete, abort), ``_fallback`` (spooled uploads), ``_obstore``
(the transport on the Rust ``object_store``), ``_versions``, ``_lifecycle`` and ``_pages``.
The SDKs are imported only when a client is first built.
"""

from __future__ import annotations

from file_storage.backends.s3._backend import S3StorageBackend

__all__ = ["S3StorageBackend"]
