"""The default ``_iter_entries`` (a filtered full listing, for backends without a native
way to start after a key) lists exactly what the memory backend's bisecting one does."""

from __future__ import annotations

import pytest

from file_storage import LocalStorageBackend, MemoryStorageBackend
from file_storage.backends._pages import Entry, entries
from file_storage.testing.suite.fixtures import LAYOUT

CURSORS = [
    None,
    "a",
    "top.txt",
    "users",
    "users/",
    "users/u1",
    "users/u1/",
    "users/u1-x/",
    "users/u1.txt",
    "users/u1/a.txt",
    "users/u1/s1/",
    "users/u1/s1/step1/shot.png",
    "users/u10/",
    "zzz",
]


@pytest.mark.parametrize("recursive", [True, False])
@pytest.mark.parametrize("prefix", ["", "users/", "users/u1/", "users/u1/s1/", "none/"])
async def test_default_entries_match_the_native_ones(prefix: str, recursive: bool) -> None:
    backend = MemoryStorageBackend()
    for key, data in LAYOUT.items():
        await backend.save(key, data)
    for cursor in CURSORS:
        native: list[Entry] = [e async for e in backend._iter_entries(prefix, cursor, recursive, 0)]
        default = [e async for e in entries(backend._iter_files(prefix), prefix, cursor, recursive)]
        assert default == native, cursor


@pytest.mark.parametrize("recursive", [True, False])
@pytest.mark.parametrize("prefix", ["", "users/", "users/u1/", "none/"])
async def test_local_walk_after_a_cursor_matches_memory(
    local_backend: LocalStorageBackend, prefix: str, recursive: bool
) -> None:
    memory = MemoryStorageBackend()
    for key, data in LAYOUT.items():
        await memory.save(key, data)
        await local_backend.save(key, data)
    for cursor in CURSORS:
        expected = [_key(e) async for e in memory._iter_entries(prefix, cursor, recursive, 0)]
        got = [_key(e) async for e in local_backend._iter_entries(prefix, cursor, recursive, 3)]
        assert got == expected, cursor


def _key(entry: Entry) -> str:
    return entry if isinstance(entry, str) else entry.key
