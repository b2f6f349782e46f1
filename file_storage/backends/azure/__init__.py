"""Azure Blob Storage: :class:`AzureStorageBackend` (extra ``file_storage[azure]``).

Built on obstore's ``AzureStore`` (the shared part is ``backends._obstore``); ``_sas``
signs presigned URLs (service SAS). obstore is imported only when a backend is built.
"""

from __future__ import annotations

from file_storage.backends.azure._backend import (
    EMULATOR_ACCOUNT,
    EMULATOR_ENDPOINT,
    EMULATOR_KEY,
    AzureStorageBackend,
)

__all__ = ["EMULATOR_ACCOUNT", "EMULATOR_ENDPOINT", "EMULATOR_KEY", "AzureStorageBackend"]
