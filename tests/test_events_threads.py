"""Events when one backend serves several threads, each running its own event loop (the
process-wide backend in a threaded worker): the subscribers and the deliveries still
running are shared."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator

import pytest

from file_storage import MemoryStorageBackend, ObjectEvent


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can: widens the window in which one
    thread's change lands inside another thread's step."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_aclose_in_one_thread_while_another_delivers_events(busy_switching: None) -> None:
    # a worker thread's writes schedule async deliveries while the main thread's loop
    # closes the backend: its wait for the deliveries of its own loop must not fail
    backend = MemoryStorageBackend()
    stop = threading.Event()

    async def handler(event: ObjectEvent) -> None:
        for _ in range(50):  # a handler's awaits: its delivery stays pending a while
            await asyncio.sleep(0)

    backend.subscribe(handler)

    async def writes() -> None:
        n = 0
        while not stop.is_set():  # deliveries join and leave the shared set all along
            await backend.save(f"w/{n % 50}.txt", b"x")
            n += 1

    worker = threading.Thread(target=asyncio.run, args=(writes(),))
    worker.start()
    failures: list[BaseException] = []
    try:

        async def closes() -> None:
            await backend.save("main.txt", b"x")  # a delivery of this loop to wait for
            await backend.aclose()

        for _ in range(100):
            try:
                asyncio.run(closes())
            except RuntimeError as exc:  # "Set changed size during iteration"
                failures.append(exc)
                break
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert failures == []
