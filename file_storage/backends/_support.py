"""Helpers of StorageBackend that are not part of the class: arguments, streams, errors, logs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import shutil
import stat as stat_mod
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedIOBase

from file_storage._metadata import normalize_metadata as normalize_metadata  # for base.py
from file_storage._quota.ledger import Reservation
from file_storage._settings_common import is_loopback_server
from file_storage._streams import CHUNK_SIZE, Progress, as_bytes
from file_storage.errors import (
    InvalidKeyError,
    ObjectConflictError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)

logger = logging.getLogger("file_storage")


def check_range(start: int | None, end: int | None, chunk_size: int | None) -> int:
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int or None")
    if chunk_size is None:
        return CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError("chunk_size must be a positive int")
    return chunk_size


def check_version_id(version_id: str | None) -> None:
    if version_id is not None and (not isinstance(version_id, str) or not version_id):
        raise TypeError("version_id must be a non-empty str (from list_versions) or None")


def check_version_sendable(version_id: str | None) -> None:
    """Raise "no such version" for a version id with a lone surrogate: no store issues
    one, and no request can carry it (no UTF-8 for it: the SDK raised)."""
    if version_id is not None and not is_utf8(version_id):
        raise ObjectNotFoundError("no such version")


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


async def metered(
    source: AsyncIterable[bytes],
    counter: Counter,
    reservation: Reservation | None,
    progress: Progress | None,
) -> AsyncIterator[bytes]:
    """Pass a caller's stream through, enforcing quota and reporting progress as bytes arrive.

    An error raised by the caller's own stream is theirs: it is marked so that it reaches
    them unchanged instead of being translated like a backend failure.
    """
    iterator = aiter(source)
    while True:
        try:
            raw = await anext(iterator)
        except StopAsyncIteration:
            if reservation is not None:
                await reservation.streamed(counter.value)
            return
        except Exception as exc:
            _mark_caller_error(exc)
            raise
        chunk = as_bytes(raw)
        if not chunk:
            continue
        counter.value += len(chunk)
        if reservation is not None:
            await reservation.grow_streamed(counter.value)
        if progress is not None:
            progress(counter.value, None)
        yield chunk


_LANDED = "_file_storage_landed"


def mark_landed(exc: BaseException, *, source_kept: bool = False) -> None:
    """Say that the write had already landed when ``exc`` reached it.

    A hook whose last step cannot be undone (a rename done in a thread) raises the
    cancellation on, marked, and the base class then counts the write instead of
    releasing its quota reservation. ``source_kept``: a move whose copy landed but whose
    source is still there (its delete failed), so the source stays counted too.
    """
    setattr(exc, _LANDED, "kept" if source_kept else True)


def has_landed(exc: BaseException) -> bool:
    return getattr(exc, _LANDED, False) in (True, "kept")


def source_kept(exc: BaseException) -> bool:
    return getattr(exc, _LANDED, False) == "kept"


_CALLER_ERROR = "_file_storage_caller_error"


def _mark_caller_error(exc: BaseException) -> None:
    setattr(exc, _CALLER_ERROR, True)


def is_caller_error(exc: BaseException) -> bool:
    return getattr(exc, _CALLER_ERROR, False) is True


async def file_chunks(
    local_path: Path, size: int, progress: Progress | None
) -> AsyncIterator[bytes]:
    done = 0
    async with opened(local_path, "rb") as src:
        if not stat_mod.S_ISREG(os.fstat(src.fileno()).st_mode):  # swapped since it was looked at
            raise ObjectNotFoundError(f"local file {local_path.name!r} is not a regular file")
        version = await asyncio.to_thread(file_version, src.fileno())
        while chunk := await src.read(CHUNK_SIZE):
            done += len(chunk)
            if progress is not None:
                progress(done, size)
            yield chunk
        if done != size:
            raise StorageUnavailableError(
                f"local file changed size while reading: {done} of {size}"
            )
        # written in place meanwhile: the chunks hold two versions of it; raised before
        # the stream ends, so the write it feeds stores nothing
        await asyncio.to_thread(check_unchanged, src.fileno(), version)


def file_version(fd: int) -> tuple[int, int, int]:
    """What a write to the open file ``fd`` changes: its size and mtime (ctime changes
    when another file is renamed over it too, which leaves its bytes as they were)."""
    found = os.fstat(fd)
    return (found.st_ino, found.st_size, found.st_mtime_ns)


def check_unchanged(fd: int, version: tuple[int, int, int]) -> None:
    """Raise when the file open at ``fd`` was written since ``version`` was taken of it:
    parts read before and after hold two versions of it (a tool rewriting it in place)."""
    if file_version(fd) != version:
        raise StorageUnavailableError("local file changed while reading")


def map_os_error(exc: OSError, operation: str, key: str | None) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFoundError(operation=operation, key=key)
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"permission denied: {exc.strerror}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageUnavailableError(f"no space left on device ({exc.strerror})")
    if isinstance(exc, NotADirectoryError | IsADirectoryError | FileExistsError):
        return ObjectConflictError()
    return StorageError(f"I/O error: {exc.strerror or type(exc).__name__}")


def log_failure(operation: str, key: str | None, exc: StorageError, started: float) -> None:
    level = (
        logging.DEBUG if isinstance(exc, ObjectNotFoundError | InvalidKeyError) else logging.WARNING
    )
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "%s failed: %s",
            operation,
            exc,
            extra={
                "operation": operation,
                "key": key,
                "duration": time.perf_counter() - started,
                "error": type(exc).__name__,
            },
        )


class _Making:
    """A temp folder being made in a thread, for a caller that may be cancelled meanwhile."""

    __slots__ = ("abandoned", "done", "lock", "path", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.started = False
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.path: str | None = None

    def make(self) -> None:
        with self.lock:
            if self.abandoned:
                return  # its caller is gone: never made, nothing to remove
            self.started = True
        try:
            self.path = tempfile.mkdtemp(prefix="file_storage-")
        finally:
            self.done.set_result(None)

    async def abandon(self) -> None:
        """The caller was cancelled: a thread that has not started never will; one that
        has is waited for (mkdtemp cannot be stopped) and its folder removed."""
        with self.lock:
            self.abandoned = True
            started = self.started
        if started:
            await thread_ended(self.done)
            if self.path is not None:
                shutil.rmtree(self.path, ignore_errors=True)


@contextlib.asynccontextmanager
async def temp_folder(operation: str = "", key: str | None = None) -> AsyncIterator[Path]:
    """A private temp folder, removed with its content on exit. Cancelled while the folder
    is being made, the caller leaves none behind (``asyncio.to_thread`` alone would drop
    the name of a folder its thread went on to make). A folder that cannot be made is a
    :class:`StorageError` of ``operation`` naming no path (the message may reach HTTP
    clients; the chained ``OSError`` keeps the path for the log)."""
    making = _Making()
    try:
        await asyncio.to_thread(making.make)
    except BaseException as exc:
        await making.abandon()
        if isinstance(exc, OSError):
            detail = f"cannot make a temp folder: {exc.strerror or type(exc).__name__}"
            raise StorageError(detail, operation=operation, key=key) from exc
        raise
    assert making.path is not None
    try:
        yield Path(making.path)
    finally:
        # to its end: a cancel scope cancelling the caller again must not skip it
        await run_to_end(asyncio.to_thread(shutil.rmtree, making.path, True))


def server_of(url: str) -> str:
    """An endpoint URL as one spelling of its server (to tell whether two backends reach
    one store): the host in lower case, without a trailing dot, every loopback name
    (``localhost``, ``127.0.0.1``, ``::1``) as one, but each ``*.localhost`` name on its
    own (a proxy routes it to a server of its own); no scheme or default port (HTTP
    and HTTPS of one host are one server); the path without a trailing ``/``."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    if is_loopback_server(host):  # not its sub-domains: see is_loopback_server
        host = "localhost"
    if port is not None and port not in (80, 443):
        host = f"{host}:{port}"
    return f"//{host}{parts.path.rstrip('/')}"


T = TypeVar("T")


async def thread_ended(future: concurrent.futures.Future[Any]) -> None:
    """Wait for a thread that cannot be stopped, for a cancelled caller: awaited, so the
    rest of the process runs meanwhile (``future.result()`` would block the event loop,
    every other request with it), and to its end however often the caller is cancelled
    again, so that nothing lands after the caller is told of its cancellation."""
    if not future.done():
        await wait_out(asyncio.wrap_future(future))


async def wait_out(step: asyncio.Future[Any]) -> None:
    """Wait for ``step`` to end, however often the caller is cancelled meanwhile (the
    caller raises the cancellation it already has), without spinning in a cancelled
    anyio scope."""
    while not step.done():
        with contextlib.suppress(asyncio.CancelledError), scope_shield(True):
            await asyncio.wait([step])


def scope_shield(cancelled: bool) -> contextlib.AbstractContextManager[object]:
    """Once the caller is cancelled: a shielded anyio cancel scope for the rest of its wait.
    A cancelled anyio scope (FastAPI, Starlette) cancels its task again at every turn of
    the event loop: a wait woken by each would spin, a core busy for as long as the step
    runs. Its cancellation comes again at the first await after the shield. anyio is asked
    for only when imported (no scope of it can exist otherwise)."""
    anyio = sys.modules.get("anyio")
    if not cancelled or anyio is None:
        return contextlib.nullcontext()
    scope: contextlib.AbstractContextManager[object] = anyio.CancelScope(shield=True)
    return scope


# How long a look-up that follows a cancelled remote write or delete (what the key holds
# now) may go on once its caller is cancelled: a healthy store answers one HEAD in far
# less; one that is down would hold a shutdown or an asyncio.timeout for as long as
# botocore retries. Cut, the look-up counts as unknown (see Settles._settle).
LOOK_UP_GRACE = 2.0


async def run_whole(
    step: Awaitable[T], *, grace: float | None = None, cancelled_before: bool = False
) -> tuple[asyncio.Future[T], asyncio.CancelledError | None]:
    """Run a step to its end even when the caller is cancelled meanwhile (a look-up whose
    answer decides what the quota counts, a clean-up): the finished step, and the caller's
    cancellation, which the caller raises once it has used the step's outcome.

    A step cancelled by someone else (an abort task that ``aclose()`` cancels) is no
    cancellation of the caller, unless the caller was cancelled too, in the same pass of
    the loop: the caller's own count of cancel requests tells them apart.

    ``grace``: once the caller is cancelled (``cancelled_before``: it was before the step
    began), the step has that many seconds more, and is then cancelled: a look-up whose
    store does not answer must not hold the caller's cancellation for as long as its
    client retries. The caller reads a step cut so as cancelled (an unknown outcome)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(step)
    caller = asyncio.current_task()
    requests = caller.cancelling() if caller is not None else 0
    cancelled: asyncio.CancelledError | None = None
    deadline = loop.time() + grace if grace is not None and cancelled_before else None
    while not task.done():
        try:
            with scope_shield(cancelled is not None):
                if deadline is None:
                    await asyncio.shield(task)
                else:
                    await asyncio.wait([task], timeout=max(0.0, deadline - loop.time()))
                    if not task.done() and loop.time() >= deadline:
                        task.cancel()  # given up on: waited for as it ends, at once
                        deadline = grace = None
        except asyncio.CancelledError as exc:
            asked = caller.cancelling() if caller is not None else requests
            if not task.done() or asked > requests or not task.cancelled():
                # the caller's (wait on, a second one too), or it ended in the same pass
                cancelled = cancelled or exc
                if grace is not None and deadline is None:
                    deadline = loop.time() + grace
            requests = asked
        except BaseException:
            pass  # the step's own error: read from it by the caller
    return task, cancelled


async def run_to_end(step: Awaitable[T]) -> T:
    """:func:`run_whole` for a caller with no use for the step's outcome once cancelled:
    the step runs to its end, then the caller's cancellation is raised (the step's own
    error retrieved, not raised), else the step's result or error."""
    done, cancelled = await run_whole(step)
    if cancelled is not None:
        if not done.cancelled():
            done.exception()  # retrieved: the caller is told of the cancellation
        raise cancelled
    return done.result()


async def stop_then_wait(step: Coroutine[Any, Any, T]) -> T:
    """Await ``step`` in a task of its own; when the caller is cancelled, cancel it once
    and wait for it to end before raising the cancellation. Its clean-up then runs whole,
    however often the caller is cancelled meanwhile (an anyio cancel scope, as in FastAPI
    and Starlette, cancels every await made inside it, a clean-up's too)."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()  # a no-op once it ended (in the same pass as the cancellation)
        await wait_out(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller is told of the cancellation instead
        raise


def _no_wait(path: str, flags: int) -> int:
    """Open for reading without waiting: a FIFO (swapped in for the file) never hangs."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _new_file(path: str, flags: int) -> int:
    """Create the file, never open one there: a link or file another user planted at a
    temp file's name is no place to write an object's bytes (FileExistsError). Private
    (0600): a download's temp file holds its bytes before download_file gives it its
    final mode, and other users who opened it meanwhile could read them."""
    return os.open(path, NEW_FILE, 0o600)


_OPENERS = {"rb": _no_wait, "wb": _new_file}


@contextlib.asynccontextmanager
async def opened(path: Path, mode: Literal["rb", "wb"]) -> AsyncIterator[AsyncBufferedIOBase]:
    """``aiofiles.open``, whose open and close run whole: an anyio cancel scope, which
    cancels every await made inside it, would otherwise leave the file open (its
    descriptor leaked), or opened by a thread after its caller gave up on it.

    ``"wb"`` creates a new private (0600) file (a download's temp file), never opening
    one that is there: written once opened, never opened again by its name."""

    async def opening() -> AsyncBufferedIOBase:
        # the modes here are all binary and buffered (typeshed types their union loosely)
        return cast(AsyncBufferedIOBase, await aiofiles.open(path, mode, opener=_OPENERS[mode]))

    made, cancelled = await run_whole(opening())
    if made.exception() is not None and cancelled is not None:
        raise cancelled from made.exception()  # cancelled: not told of the OSError
    file = made.result()  # an OSError is the caller's
    try:
        if cancelled is not None:
            raise cancelled
        yield file
    finally:
        # a flush of the last bytes failing (a full disk) is the caller's error
        await run_to_end(file.close())
