"""What a cancelled caller waits for, and what it is told: its own cancellation, whatever
else ends in the same pass of the loop, and without stalling the rest of the process."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from file_storage import LocalStorageBackend
from file_storage.backends._obstore import _requests as obstore_requests
from file_storage.backends._support import run_whole, temp_folder
from file_storage.backends.local import _backend as local_backend
from file_storage.backends.local._io import IO_BATCH, Gate, gated, in_pool, to_the_end
from file_storage.backends.s3._obstore import _write


async def test_a_step_cancelled_by_another_in_the_callers_pass_keeps_the_callers_cancel() -> None:
    # an abort task that aclose() cancels in the same pass as its caller's cancellation
    step = asyncio.ensure_future(asyncio.Event().wait())
    caller = asyncio.ensure_future(run_whole(step))
    for _ in range(3):
        await asyncio.sleep(0)  # the caller waits on the step
    step.cancel()
    caller.cancel()
    finished, cancelled = await caller
    assert finished.cancelled()
    assert isinstance(cancelled, asyncio.CancelledError)


async def test_a_step_cancelled_by_another_alone_is_no_cancel_of_the_caller() -> None:
    step = asyncio.ensure_future(asyncio.Event().wait())
    caller = asyncio.ensure_future(run_whole(step))
    for _ in range(3):
        await asyncio.sleep(0)
    step.cancel()
    finished, cancelled = await caller
    assert finished.cancelled()
    assert cancelled is None


async def test_a_look_up_with_a_grace_in_a_cancelled_scope_is_given_up() -> None:
    # a look-up whose store does not answer (down, its client retrying) under a cancel
    # scope, as FastAPI cancels a request whose client went away
    with anyio.CancelScope() as scope:
        scope.cancel()
        look, cancelled = await run_whole(asyncio.Event().wait(), grace=0.05)
        assert look.cancelled()  # given up: an unknown outcome
        assert cancelled is not None
        raise cancelled
    assert scope.cancelled_caught


class _FailingAbort:
    """An obstore writer whose abort fails (the store went down mid-upload)."""

    def __init__(self) -> None:
        self.aborted = False

    async def __aenter__(self) -> _FailingAbort:
        return self

    async def write(self, chunk: bytes) -> None:
        await asyncio.Event().wait()  # the store stalls: the caller gives up

    async def __aexit__(self, *exc_info: Any) -> None:
        if exc_info[0] is not None:
            self.aborted = True
            raise OSError("abort failed: connection refused")


async def test_a_cancelled_upload_whose_abort_fails_raises_the_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> Any:
        yield b"x"

    writer = _FailingAbort()
    upload = asyncio.ensure_future(_write(writer, body()))
    for _ in range(5):
        await asyncio.sleep(0)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert writer.aborted
    assert "could not abort" in caplog.text


async def _cancel_while_in_thread(call: Any, entered: threading.Event) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(call)
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)  # the cancelled caller now waits for its thread
    return task


@pytest.mark.parametrize("helper", ["in_pool", "to_the_end", "gated"])
async def test_a_caller_cancelled_while_its_thread_runs_does_not_stall_the_loop(
    helper: str,
) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []
    cleaned: list[object] = []

    def work(*_: Any) -> str:
        entered.set()
        seen.append(release.wait(10))  # False: the loop was blocked until the timeout
        return "done"

    if helper == "in_pool":
        call: Any = in_pool(work, cleanup=cleaned.append)
    elif helper == "to_the_end":
        call = to_the_end(work)
    else:

        def write(gate: Gate) -> str:
            work()
            gate.check()  # stops here: cancelled before its rename
            return "renamed"

        call = gated(write)
    task = await _cancel_while_in_thread(call, entered)
    assert not task.done()  # nothing ends (or lands) before its thread has
    release.set()  # by the loop, while the cancelled caller waits
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True]
    if helper == "in_pool":
        assert cleaned == ["done"]


async def test_a_local_save_cancelled_while_a_batch_is_written_does_not_stall_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []
    write_all = local_backend.write_all

    def stalled(fd: int, chunks: list[bytes]) -> None:
        entered.set()
        seen.append(release.wait(10))  # a slow disk
        write_all(fd, chunks)

    monkeypatch.setattr(local_backend, "write_all", stalled)

    async def body() -> Any:
        yield b"b" * IO_BATCH  # handed to a thread while the next chunk comes
        await asyncio.Event().wait()
        yield b""

    backend = LocalStorageBackend(tmp_path / "s")
    task = await _cancel_while_in_thread(backend.save("big.bin", body()), entered)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True]
    assert [p.name for p in (tmp_path / "s").rglob("*") if p.is_file()] == []


async def test_a_temp_folder_cancelled_while_being_made_does_not_stall_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []
    mkdtemp = tempfile.mkdtemp

    def slow(*args: Any, **kwargs: Any) -> str:
        entered.set()
        seen.append(release.wait(10))
        return mkdtemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", slow)
    made: list[str] = []

    async def use() -> None:
        async with temp_folder() as folder:
            made.append(str(folder))

    task = await _cancel_while_in_thread(use(), entered)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True]
    assert made == []


async def test_a_cancelled_gcs_or_azure_upload_whose_abort_fails_raises_the_cancel() -> None:
    async def chunks() -> Any:
        yield b"x"
        await asyncio.Event().wait()  # the client stalls mid-body
        yield b""

    body = obstore_requests.Interruptible(chunks())

    async def upload() -> None:
        async for _ in body:  # obstore reads the body, and aborts when it fails
            pass

    async def aborted_badly() -> None:
        try:
            await upload()
        except BaseException:
            raise OSError("abort failed: connection refused") from None

    request = asyncio.ensure_future(obstore_requests.to_the_end(aborted_badly(), body))
    for _ in range(5):
        await asyncio.sleep(0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
