"""DictStorageBackend proves itself: the whole conformance suite, through the plugin."""

from __future__ import annotations

import pytest
from dict_storage import DictStorageBackend

from file_storage.testing.suite import *  # noqa: F403


@pytest.fixture
def backend() -> DictStorageBackend:
    return DictStorageBackend()  # a fresh, empty backend for every test


@pytest.fixture
def backend_lacks() -> set[str]:
    # one version per key, no object-or-folder check, no conditional delete for
    # purge_expired or move nor conditional copy for move, no ETag answered by _save:
    # those tests skip
    return {
        "versions",
        "folder_checks",
        "exact_expiry",
        "exact_moves",
        "pinned_moves",
        "write_etags",
    }
