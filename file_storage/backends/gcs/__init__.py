"""Google Cloud Storage: :class:`GCSStorageBackend` (extra ``file_storage[gcs]``).

Built on obstore's ``GCSStore`` (the shared part is ``backends._obstore``); ``_signing``
makes V4 presigned URLs with the service account's key. obstore is imported only when a
backend is built.
"""

from __future__ import annotations

from file_storage.backends.gcs._backend import GCSStorageBackend

__all__ = ["GCSStorageBackend"]
