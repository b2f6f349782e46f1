"""Resources of one event loop, for backends used from one loop after another.

A script or task worker calling ``asyncio.run`` per job gives every job a new loop. An
aiohttp session (inside an aiobotocore client), an ``asyncio.Lock`` that ever had to wait
and a task all belong to the loop they started on, and fail or leak in the next one. So
a backend keeps such things per loop, and closes them while their loop can still run
code: ``asyncio.run`` (and ``asyncio.Runner``, and uvloop) finalize every live async
generator before closing the loop, and :class:`ShutdownHook` is one.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable

from file_storage.errors import StorageError

__all__ = ["InFlight", "LoopLock", "Periodic", "SharedLock", "ShutdownHook"]

logger = logging.getLogger("file_storage")

# seconds between two looks, while waiting for a SharedLock, at whether its holder's loop
# was closed under it
_OWNER_CHECK = 1.0


class Backoff:
    """The waits between two tries of something another process holds: from 1 ms,
    doubling, to ``most`` seconds (a wait is a plain sleep: cancelled, it takes nothing)."""

    __slots__ = ("_most", "_next")

    def __init__(self, most: float) -> None:
        self._next = 0.001
        self._most = most

    async def wait(self) -> None:
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, self._most)


class ShutdownHook:
    """Run ``callback`` once: when the loop it was armed in shuts down its async generators
    (before that loop closes), or on :meth:`run`, whichever comes first."""

    __slots__ = ("_agen", "_callback", "_done")

    def __init__(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._callback = callback
        self._agen: AsyncGenerator[None, None] | None = None
        self._done = False

    async def arm(self) -> None:
        """Watch the running loop (idempotent)."""
        if self._agen is None and not self._done:
            agen = self._wait()
            # the first iteration registers the generator with the running loop, which
            # finalizes it in shutdown_asyncgens(); the loop keeps only a weak reference
            await anext(agen)
            self._agen = agen

    async def run(self) -> None:
        """Run the callback now, if it has not run yet."""
        # the generator is left to the loop, whose finalizer finds the callback done:
        # closed here it could be closing already (shutdown_asyncgens closes every
        # generator at once), and aclose() would raise "already running"
        self._agen = None
        await self._call()

    def disown(self) -> None:
        """Never run the callback: in a forked child, the resources are the parent's."""
        self._done = True

    async def _wait(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._call()

    async def _call(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._callback()
        except Exception:  # at loop shutdown nobody could catch it: log, never lose it
            logger.exception("closing the resources of an event loop failed")


class InFlight:
    """Counts a backend's operations running in each event loop, so that closing the
    loop's clients can wait for the last one (a download being served, say) to end.

    A loop's count is touched only by the thread running that loop.
    """

    __slots__ = ("_counts", "_idle")

    def __init__(self) -> None:
        self._counts: dict[asyncio.AbstractEventLoop, int] = {}
        self._idle: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}

    def enter(self) -> Callable[[], None]:
        """Count one operation in the running loop; returns the call that ends it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing to close under it
            return _nothing
        self._counts[loop] = self._counts.get(loop, 0) + 1
        ended = False

        def end() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            left = self._counts[loop] - 1
            if left:
                self._counts[loop] = left
                return
            del self._counts[loop]
            for callback in self._idle.pop(loop, ()):
                callback()

        return end

    def busy_elsewhere(self) -> bool:
        """Whether operations run now in another (open) event loop: another thread's."""
        here = asyncio.get_running_loop()
        return any(loop is not here and not loop.is_closed() for loop in list(self._counts))

    def when_idle(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` once no operation runs in this loop; ``False``: none runs now
        (the callback was not kept)."""
        loop = asyncio.get_running_loop()
        if loop not in self._counts:
            return False
        self._idle.setdefault(loop, []).append(callback)
        return True


def _nothing() -> None:
    return None


class LoopLock:
    """An ``asyncio.Lock`` usable from one event loop after another: one lock per loop.

    A plain ``asyncio.Lock`` binds to the loop of its first wait and then refuses every
    other. This one serializes the tasks of each loop, as a lock kept by a loop-bound
    object would; loops in other threads get locks of their own. A loop's lock is dropped
    once no task of it holds or waits for it: a lock that waited refers to its loop, which
    would else never be freed (one per ``asyncio.run`` of a script).
    """

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        # each entry is touched by the thread running its loop alone
        self._locks: dict[asyncio.AbstractEventLoop, _LoopLockEntry] = {}

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        entry = self._locks.get(loop)
        if entry is None:
            entry = self._locks[loop] = _LoopLockEntry()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._leave(loop, entry)
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        entry = self._locks[loop]
        entry.lock.release()
        self._leave(loop, entry)

    def _leave(self, loop: asyncio.AbstractEventLoop, entry: _LoopLockEntry) -> None:
        entry.users -= 1
        if not entry.users:
            del self._locks[loop]


class _LoopLockEntry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # tasks holding or waiting for it


class _Waiter:
    __slots__ = ("future", "grant", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.grant = 0  # set when the lock is handed over to it

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class SharedLock:
    """A lock for coroutines of any event loop in any thread, granted first come first served.

    One backend may serve several threads, each running its own loop (the process-wide
    backend in a threaded worker). An ``asyncio.Lock`` binds to the loop of its first
    wait and wakes waiters without ``call_soon_threadsafe``, so there it raises or loses
    a wake-up; this one hands the lock over to the next waiter's own loop.

    A holder whose loop was closed under it (a sync worker closing its loop with a task
    of its job still running) never runs again: the next acquirer takes the lock over.
    Each grant is numbered, so a release by a holder that lost its lock (the coroutine
    of that task, closed as it is collected) leaves the lock to its new holder.
    """

    __slots__ = ("_grant", "_held", "_mutex", "_owner", "_waiters")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._owner: asyncio.AbstractEventLoop | None = None  # the loop of the holder
        self._grant = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()

    def locked(self) -> bool:
        return self._held

    async def acquire(self) -> int:
        """Take the lock; returns the grant that :meth:`release` gives back."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            if not self._held or (self._owner is not None and self._owner.is_closed()):
                return self._take(loop)
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
        try:
            while not (await asyncio.wait([waiter.future], timeout=_OWNER_CHECK))[0]:
                with self._mutex:
                    if not waiter.grant and self._owner is not None and self._owner.is_closed():
                        # its holder's loop was closed under it: nobody will release it
                        self._waiters.remove(waiter)
                        return self._take(loop)
            waiter.future.result()
        except BaseException:
            with self._mutex:
                grant = waiter.grant
                if not grant:
                    self._waiters.remove(waiter)
            if grant:  # handed over as the caller was cancelled: pass it on
                self.release(grant)
            raise
        return waiter.grant

    def _take(self, loop: asyncio.AbstractEventLoop) -> int:
        self._held = True
        self._owner = loop
        self._grant += 1
        return self._grant

    def holds(self, grant: int) -> bool:
        """True while ``grant`` is the lock's holder (not released, nor taken over)."""
        with self._mutex:
            return self._held and grant == self._grant

    def release(self, grant: int) -> None:
        with self._mutex:
            if grant != self._grant or not self._held:
                return  # taken over since (its holder's loop was closed): not its own any more
            while self._waiters:
                waiter = self._waiters.popleft()
                # it owns the lock from here, woken or not
                waiter.grant = self._take(waiter.loop)
                try:
                    waiter.loop.call_soon_threadsafe(waiter.wake)
                except RuntimeError:  # its loop is closed: nobody waits there any more
                    continue
                return
            self._held = False
            self._owner = None


class Periodic:
    """A job run every ``interval`` seconds by a task of the running loop, until stopped.

    A task of a loop that stopped never runs again, so the next loop gets its own. The job
    logs its own StorageErrors (it is tried again next time); anything else it raises is
    logged here as ``failure``.
    """

    def __init__(self, failure: str, log: logging.Logger) -> None:
        self._failure = failure
        self._log = log
        self.task: asyncio.Task[None] | None = None

    def start(self, interval: float, job: Callable[[], Awaitable[object]]) -> None:
        """Start in the running loop, unless it already runs there (none running: no-op)."""
        task = self.task
        if task is not None and not task.done() and task.get_loop().is_running():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a plain method called outside any loop
            return

        async def every() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await job()
                except StorageError:
                    pass  # logged by the job; tried again next time
                except Exception:
                    self._log.exception(self._failure)

        # a context of its own: its requests are not counted against the call starting it
        self.task = loop.create_task(every(), context=contextvars.Context())

    def forked(self) -> None:
        """In a child forked from this process: the task is the parent's, in a loop that
        never runs here (yet seems to, if it ran at the fork); forget it, never cancel it,
        so the child's first use starts one of its own."""
        self.task = None

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is None or task.done():
            return
        loop = task.get_loop()
        if loop is asyncio.get_running_loop():
            task.cancel()
            await asyncio.wait([task])
        elif not loop.is_closed():  # another thread's loop, or one that may run again
            loop.call_soon_threadsafe(task.cancel)
