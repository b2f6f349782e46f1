"""What a cancelled caller waits for, and what it is told: its own cancellation, whatever
else ends in the same pass of the loop, and without stalling the rest of the process."""

from __future__ import annotations

import asyncio

from file_storage.backends._support import run_whole


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
