"""Helpers around async byte streams shared by the backends."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

CHUNK_SIZE = 1024 * 1024  # 1 MiB: big enough that per-chunk overhead vanishes (see benchmarks)

Progress = Callable[[int, int | None], object]
"""``progress(bytes_done, bytes_total)``; ``bytes_total`` is ``None`` when unknown."""

BytesLike = bytes | bytearray | memoryview


def as_bytes(chunk: object) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a stream must yield bytes, got {type(chunk).__name__}")


async def prepend(head: Iterable[bytes], rest: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``head`` (chunks already read from a stream), then the rest of that stream."""
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


async def rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-slice ``source`` into chunks of exactly ``size`` bytes (the last may be shorter)."""
    buf = bytearray()
    async for chunk in source:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


async def limit_chunks(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Pass chunks through, splitting any longer than ``size`` (never joining)."""
    async for chunk in source:
        if len(chunk) <= size:
            yield chunk
        else:
            view = memoryview(chunk)
            for i in range(0, len(view), size):
                yield bytes(view[i : i + size])


class closing(Generic[T]):
    """Close an async generator when the block ends, even if abandoned half-way."""

    def __init__(self, iterator: AsyncIterator[T]) -> None:
        self._iterator = iterator

    async def __aenter__(self) -> AsyncIterator[T]:
        return self._iterator

    async def __aexit__(self, *exc_info: object) -> None:
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()
