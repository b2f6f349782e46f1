"""Bounded concurrency for the bulk operations: ``save_many``, ``load_many`` and ``migrate``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from file_storage.backends._support import is_caller_error
from file_storage.errors import InvalidKeyError, StorageError

if TYPE_CHECKING:
    from file_storage._keys import KeyLike
    from file_storage.backends._core import Content, SaveItems
    from file_storage.backends._reads import Reads
    from file_storage.backends._writes import Writes

T = TypeVar("T")


def check_concurrency(concurrency: int) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be an int >= 1")
    return concurrency


async def run_all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the coroutines as tasks until all end; the first to raise cancels the others.

    Unlike a TaskGroup, the exception comes out as itself (not in an ExceptionGroup), so a
    bug (TypeError) or a cancellation passes through unchanged.
    """
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        # cancelled ourselves, or one task failed: stop the rest and wait for their cleanup
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def for_each(
    names: list[str],
    job: Callable[[str], Awaitable[T]],
    concurrency: int,
) -> dict[str, T | Exception]:
    """``job(name)`` for every name, at most ``concurrency`` at once; results in input order.

    A StorageError (an invalid key included), or what the caller's own content stream of
    that item raised, becomes that name's result; anything else is a bug and stops
    everything.
    """
    results: dict[str, T | Exception] = {}
    pending = iter(names)

    async def worker() -> None:
        for name in pending:  # one shared iterator: each name is taken by exactly one worker
            try:
                results[name] = await job(name)
            except StorageError as exc:
                results[name] = exc
            except Exception as exc:
                if not is_caller_error(exc):
                    raise
                # the item's own source broke (a user's upload cut): that item failed alone
                results[name] = exc

    await run_all(worker() for _ in range(min(concurrency, len(names))))
    return {name: results[name] for name in names}


def _path_name(path: object, operation: str) -> str:
    """The result's key for ``path``: its text. Another type is refused for the whole
    call (``InvalidKeyError``, as a single call refuses it): no result could name it."""
    if isinstance(path, PurePosixPath):
        return str(path)
    if not isinstance(path, str):
        raise InvalidKeyError(
            f"a key must be a str or PurePosixPath, not {type(path).__name__}",
            operation=operation,
        )
    # a str subclass (a str Enum member) is its text, as save() takes it, not its str()
    return str.__str__(path)


async def save_many(
    backend: Writes,
    items: SaveItems,
    concurrency: int,
) -> dict[str, str | Exception]:
    check_concurrency(concurrency)
    pairs = list(items.items() if isinstance(items, Mapping) else items)
    contents: dict[str, Content] = {}
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError("items must be a mapping or an iterable of (path, content) pairs")
        name, content = _path_name(pair[0], "save_many"), pair[1]
        if not isinstance(content, bytes | bytearray | memoryview | AsyncIterable):
            raise TypeError(f"content of {name!r} must be bytes-like or an async iterable")
        if name in contents:
            # two concurrent writes to one key: which one wins would be a race
            raise ValueError(f"save_many: {name!r} is given twice")
        contents[name] = content

    async def save(name: str) -> str:
        return await backend.save(name, contents[name])

    return await for_each(list(contents), save, concurrency)


async def load_many(
    backend: Reads, paths: Iterable[KeyLike], concurrency: int
) -> dict[str, bytes | Exception]:
    check_concurrency(concurrency)
    if isinstance(paths, str | PurePosixPath):
        raise TypeError("paths must be an iterable of paths, not one path")
    names = list(dict.fromkeys(_path_name(path, "load_many") for path in paths))
    return await for_each(names, backend.load, concurrency)
