"""Hostile sizes: a huge value is refused quickly, in little memory, with a typed error.

Keys and metadata often come from an app's users. Whatever their size, each is refused
as :class:`InvalidKeyError` or :class:`InvalidMetadataError` before any I/O, without
the work or memory growing with it (measured with :mod:`tracemalloc`, never a clock).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Awaitable

import pytest

from file_storage import InvalidKeyError, InvalidMetadataError, StorageBackend, StorageError

HUGE = 1 << 22  # characters: 4 Mi


async def _peak(call: Awaitable[object], error: type[StorageError]) -> tuple[int, StorageError]:
    """The peak of traced memory while ``call`` fails with ``error``, and the error."""
    tracemalloc.start()
    try:
        with pytest.raises(error) as caught:
            await call
        return tracemalloc.get_traced_memory()[1], caught.value
    finally:
        tracemalloc.stop()


async def test_huge_non_ascii_metadata_value_is_refused_in_little_memory(
    backend: StorageBackend,
) -> None:
    value = "é" * HUGE  # RFC 2047 would make it several times larger still
    peak, _ = await _peak(
        backend.save("b/a.txt", b"x", metadata={"name": value}), InvalidMetadataError
    )
    assert peak < 1 << 20
    assert not await backend.exists("b/a.txt")


async def test_huge_metadata_name_is_not_repeated_in_the_error(backend: StorageBackend) -> None:
    name = "not a token " * (HUGE // 12)
    saving = backend.save("b/a.txt", b"x", metadata={name: "v"})
    _, error = await _peak(saving, InvalidMetadataError)
    assert len(str(error)) < 1000


async def test_huge_key_is_not_repeated_in_the_error(backend: StorageBackend) -> None:
    key = "a/" * (HUGE // 2)
    _, error = await _peak(backend.load(key), InvalidKeyError)
    assert len(str(error)) < 1000
    assert len(repr(error)) < 1000
    assert error.key == key  # the attribute keeps it whole


async def test_huge_listing_cursor_is_not_repeated_in_the_error(backend: StorageBackend) -> None:
    cursor = "b" * HUGE + "/"
    _, error = await _peak(backend.list_page("", start_after=cursor), InvalidKeyError)
    assert len(str(error)) < 1000
