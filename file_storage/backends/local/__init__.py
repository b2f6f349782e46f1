"""The local file-system backend: :class:`LocalStorageBackend`.

The package holds its parts: ``_fs`` (directory descriptors, no-follow opens), ``_io``
(temp files and atomic publishes), ``_meta`` (sidecar metadata), ``_walk`` (listings and
sweeps), ``_versions``, ``_rules`` (expiration), ``_pages`` and ``_cond`` (conditional writes).
"""

from __future__ import annotations

from file_storage.backends.local._backend import LocalStorageBackend

__all__ = ["LocalStorageBackend"]
