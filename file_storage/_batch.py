"""Bounded concurrency for the bulk operations: ``save_many``, ``load_many`` and ``migrate``."""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
)
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
# the result of an item whose save has not ended yet: never returned (run_all waits for all)
_NOT_YET: Exception = Exception("not saved yet")


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


async def _outcome(job: Awaitable[T]) -> T | Exception:
    """What ``job`` returned, or the error that is its item's result.

    A StorageError (an invalid key included), or what the caller's own content stream of
    that item raised, becomes that item's result; anything else is a bug and stops
    everything.
    """
    try:
        return await job
    except StorageError as exc:
        error: Exception = exc
    except Exception as exc:
        if not is_caller_error(exc):
            raise
        # the item's own source broke (a user's upload cut): that item failed alone
        error = exc
    return error


async def for_each(
    names: list[str],
    job: Callable[[str], Awaitable[T]],
    concurrency: int,
) -> dict[str, T | Exception]:
    """``job(name)`` for every name, at most ``concurrency`` at once; results in input order
    (an error that is an item's result as :func:`_outcome` says)."""
    results: dict[str, T | Exception] = {}
    pending = iter(names)

    async def worker() -> None:
        for name in pending:  # one shared iterator: each name is taken by exactly one worker
            results[name] = await _outcome(job(name))

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


def _save_pair(pair: object, seen: set[str]) -> tuple[str, Content]:
    """One item of ``save_many``: its result's name and content, checked."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise TypeError("items must be a mapping or an iterable of (path, content) pairs")
    name, content = _path_name(pair[0], "save_many"), pair[1]
    if not isinstance(content, bytes | bytearray | memoryview | AsyncIterable):
        raise TypeError(f"content of {name!r} must be bytes-like or an async iterable")
    if name in seen:
        # two concurrent writes to one key: which one wins would be a race
        raise ValueError(f"save_many: {name!r} is given twice")
    seen.add(name)
    return name, content


async def save_many(
    backend: Writes,
    items: SaveItems,
    concurrency: int,
) -> dict[str, str | Exception]:
    """Save the items, pulling the next one only when one of ``concurrency`` slots is free.

    A collection (a mapping, a list) is checked whole before the first write, so a bad
    item or a path given twice writes nothing. Any other iterable (a generator) is pulled
    item by item, so at most ``concurrency`` of its contents are held at once: an item
    found bad there stops the pulling, the saves already started end, and its error is
    raised.
    """
    check_concurrency(concurrency)
    if not isinstance(items, Iterable):
        # iter() would say only "'async_generator' object is not iterable"
        kind = "an async iterable" if isinstance(items, AsyncIterable) else type(items).__name__
        raise TypeError(
            f"items must be a mapping or an iterable of (path, content) pairs, not {kind}"
        )
    pairs: Iterable[object] = items.items() if isinstance(items, Mapping) else items
    if isinstance(pairs, Collection):
        checked: set[str] = set()
        for pair in pairs:
            _save_pair(pair, checked)
    source = iter(pairs)
    seen: set[str] = set()
    results: dict[str, str | Exception] = {}
    ended = False
    stopped: list[Exception] = []  # a bad item, or the caller's iterable raising

    def pull() -> tuple[str, Content] | None:
        nonlocal ended
        if ended:
            return None
        try:
            name, content = _save_pair(next(source), seen)
        except StopIteration:
            ended = True
            return None
        except Exception as exc:
            ended = True
            stopped.append(exc)
            return None
        results[name] = _NOT_YET  # its place in input order
        return name, content

    async def worker(item: tuple[str, Content] | None) -> None:
        while item is not None:
            name, content = item
            del item  # no reference to this content is left once its save has ended
            results[name] = await _outcome(backend.save(name, content))
            del content
            item = pull()

    # one worker per item of the first `concurrency` (no idle tasks for a short input)
    first: list[tuple[str, Content] | None] = []
    while len(first) < concurrency and (item := pull()) is not None:
        first.append(item)
    del item
    workers = [worker(item) for item in first]
    first.clear()
    await run_all(workers)
    if stopped:
        raise stopped[0]
    return results


async def load_many(
    backend: Reads, paths: Iterable[KeyLike], concurrency: int
) -> dict[str, bytes | Exception]:
    check_concurrency(concurrency)
    if isinstance(paths, str | PurePosixPath):
        raise TypeError("paths must be an iterable of paths, not one path")
    names = list(dict.fromkeys(_path_name(path, "load_many") for path in paths))
    return await for_each(names, backend.load, concurrency)
