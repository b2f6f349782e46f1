"""save_many's failed items: their errors keep no content, and touch no running code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from file_storage.backends.memory import MemoryStorageBackend


class _SourceDown(Exception):
    """What the caller's own content stream raises."""


async def test_an_error_shared_with_a_running_task_leaves_that_task_running() -> None:
    # the caller's stream raises an error its own producer task caught and still holds
    # (that task's suspended frame is in the error's traceback): dropping the failed
    # item's content from the traceback must not finalize that task
    backend = MemoryStorageBackend()
    caught: asyncio.Future[_SourceDown] = asyncio.get_running_loop().create_future()
    resume = asyncio.Event()

    async def producer() -> str:
        try:
            raise _SourceDown("the source went away")
        except _SourceDown as exc:
            caught.set_result(exc)
        await resume.wait()  # suspended here, its frame in the error's traceback
        return "went on"

    task = asyncio.create_task(producer())
    error = await caught

    async def content() -> AsyncIterator[bytes]:
        yield b"partial"
        raise error

    def items() -> Iterator[tuple[str, bytes | AsyncIterator[bytes]]]:
        yield "a", b"1"
        yield "b", content()

    results = await backend.save_many(items())
    assert results["a"] == "a"
    assert results["b"] is error
    resume.set()
    for _ in range(100):  # loop passes, not time: the task needs one to end
        if task.done():
            break
        await asyncio.sleep(0)
    assert task.done()
    assert task.result() == "went on"
    assert await backend.list_files() == ["a"]
