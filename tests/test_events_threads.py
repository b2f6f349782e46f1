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
from tests.forks import forked, in_child


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


def test_a_child_forked_while_another_thread_tracks_deliveries_does_not_hang() -> None:
    # at the fork, a thread of the parent was adding or removing a delivery (here held
    # for the whole fork: the widest window); the child's own deliveries must not wait
    # for a lock no thread of the child will ever release
    backend = MemoryStorageBackend()
    seen: list[str] = []

    async def handler(event: ObjectEvent) -> None:
        seen.append(event.key)

    backend.subscribe(handler)

    def job() -> list[str]:
        async def main() -> None:
            await backend.save("child.txt", b"x")
            await backend.aclose()

        asyncio.run(main())
        return seen

    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with backend._events._pending_lock:
            held.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(timeout=60)
        result = forked(in_child(job))
        assert result() == ["child.txt"]
    finally:
        release.set()
        thread.join(timeout=60)
