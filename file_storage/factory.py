"""Build a backend from settings, and keep the one process-wide instance.

:func:`create_storage_backend` finds the backend ``STORAGE_TYPE`` names in the entry-point
group ``file_storage.backends`` (:mod:`file_storage._registry`), where the built-in backends
are registered like anyone else's. Building a backend opens no connection and touches no
storage (clients connect lazily), so both builders are plain functions, and
:func:`get_storage_backend` is cheap enough to call per request. A backend's module, and
its SDK, is imported only when that backend is built.
"""

from __future__ import annotations

import logging
import os
import threading

from file_storage._registry import load_backend_factory
from file_storage.backends.base import StorageBackend
from file_storage.errors import StorageConfigError
from file_storage.settings import StorageSettings

__all__ = ["close_storage_backend", "create_storage_backend", "get_storage_backend"]

logger = logging.getLogger(__name__)

# guards check-and-create of the singleton: threads (sync routes run in a pool, workers
# started by a server) may ask for it at the same moment, and only one may build it
_lock = threading.Lock()
_backend: StorageBackend | None = None
if hasattr(os, "register_at_fork"):
    # a child forked while another thread built the singleton has none of that thread:
    # its copy of the lock would stay held for good (it builds a singleton of its own)
    os.register_at_fork(after_in_child=_lock._at_fork_reinit)  # type: ignore[attr-defined]


def create_storage_backend(settings: StorageSettings | None = None) -> StorageBackend:
    """Build a new backend of the type the settings name.

    Args:
        settings: what to build; ``None`` reads ``STORAGE_*`` variables and ``.env``.

    Returns:
        A new, unshared backend. Close it with ``await backend.aclose()``.

    Raises:
        StorageConfigError: the settings are missing or invalid (the message names the
            variable), no installed package registers ``STORAGE_TYPE`` (the message
            lists those that are), the backend's dependency is not installed, or the
            backend's factory raised anything but a ``StorageError`` (a plugin's
            ``TypeError``, ``KeyError``, ``ValidationError``: named by type, chained).
    """
    if settings is None:
        settings = StorageSettings()
    # the type was checked against the registry when the settings were made, unless
    # they were made with model_construct: the registry says then what is installed
    backend = load_backend_factory(settings.type)(settings)
    if not isinstance(backend, StorageBackend):
        raise StorageConfigError(
            f"STORAGE_TYPE: the {settings.type.upper()} backend's factory returned "
            f"{type(backend).__name__}, not a StorageBackend"
        )
    return backend


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
