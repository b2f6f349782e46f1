"""aclose and async with."""

from __future__ import annotations

from file_storage import StorageBackend


async def test_async_with_closes_and_backend_is_reusable(backend: StorageBackend) -> None:
    async with backend as opened:
        assert opened is backend
        await opened.save("a.txt", b"x")
    await backend.aclose()  # closing twice is fine
    assert await backend.load("a.txt") == b"x"  # used again after close: reopens lazily
