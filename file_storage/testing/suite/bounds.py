"""Hostile sizes: a huge value is refused quickly, in little memory, with a typed error.

Keys and metadata often come from an app's users. Whatever their size, each is refused
as :class:`InvalidKeyError` or :class:`InvalidMetadataError` before any I/O, without
the work or memory growing with it (measured with :mod:`tracemalloc`, never a clock).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable

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


async def _tiny_chunks(count: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield bytes((97 + i % 26, 10))  # two bytes, each chunk its own object


async def test_stream_of_tiny_chunks_is_saved_in_memory_bounded_by_its_bytes(
    backend: StorageBackend,
) -> None:
    # a client sending its upload a byte or two per packet: 2 MiB in a million chunks
    count = 1 << 20
    tracemalloc.start()
    try:
        await backend.save("b/tiny.bin", _tiny_chunks(count))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (await backend.stat("b/tiny.bin")).size == 2 * count
    assert peak < 48 << 20  # kept as a million bytes objects it was ~350 MiB


async def _cpu_to_save(backend: StorageBackend, count: int) -> float:
    start = time.process_time()
    await backend.save(f"b/{count}.bin", _tiny_chunks(count))
    return time.process_time() - start


async def test_cpu_to_save_tiny_chunks_grows_linearly_with_their_count(
    backend: StorageBackend,
) -> None:
    await _cpu_to_save(backend, 1 << 10)  # warm up (clients, imports)
    small = await _cpu_to_save(backend, 1 << 14)
    large = await _cpu_to_save(backend, 1 << 17)  # 8 times as many: about 8 times the CPU
    assert large < 24 * max(small, 0.01)
