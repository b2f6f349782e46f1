"""The fallback spool's own records (a manifest, the ``store`` marker) as another process
may leave them: a huge file or a FIFO in their place is read no further than a record
can be long, never waited on, and reads as damaged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from file_storage import StorageConfigError
from file_storage._spool import Spool

WAIT = 10.0  # seconds: bounds a read that would otherwise block for ever; never a sleep


@contextlib.contextmanager
def _fifo(path: Path) -> Iterator[None]:
    """A FIFO at ``path``; a reader still blocked on it at the end is let go."""
    os.mkfifo(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_huge_manifest_is_skipped_in_little_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.entries_dir.mkdir(parents=True)
    with (spool.entries_dir / "huge.json").open("w") as out:
        out.write('{"key": "')
        for _ in range(64):
            out.write("a" * (1 << 20))
        out.write('"}')
    tracemalloc.start()
    try:
        with caplog.at_level(logging.ERROR, logger="file_storage"):
            assert await spool.entries() == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert "unreadable manifest" in caplog.text


async def test_a_fifo_in_place_of_a_manifest_is_skipped_not_waited_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.entries_dir.mkdir(parents=True)
    with _fifo(spool.entries_dir / "fifo.json"), caplog.at_level(logging.ERROR):
        assert await asyncio.wait_for(spool.entries(), WAIT) == []
    assert "unreadable manifest" in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "huge"])
async def test_a_store_marker_that_is_no_record_is_a_config_error(
    tmp_path: Path, kind: str
) -> None:
    spool = Spool(tmp_path / "spool", "bucket/prefix")
    spool.root.mkdir(parents=True)
    marker = spool.root / "store"
    with contextlib.ExitStack() as stack:
        if kind == "fifo":
            stack.enter_context(_fifo(marker))
        else:
            marker.write_bytes(b"x" * (64 << 20))
        with pytest.raises(StorageConfigError, match="store"):
            await asyncio.wait_for(spool.entries(), WAIT)
