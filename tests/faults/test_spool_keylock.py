"""The S3 fallback spool's key lock across processes (a POSIX record lock on a byte of the
folder's ``keys.lock``), attacked where POSIX record locks are fragile: a process holds
them through any descriptor of the file and drops them all when it closes any one; a
forked child inherits the parent's memory, not its locks nor its threads."""

from __future__ import annotations

import asyncio
from pathlib import Path

from file_storage import _spool as spool_module
from file_storage._spool import Spool
from tests.forks import forked, in_child


class _Held(Exception):
    """Raised in a child by the hook called when another process holds the key."""


async def _probe(root: Path, key: str) -> str:
    """In a forked child: "held" when another process holds ``key``, else "free"."""

    async def held(self: Spool) -> None:
        raise _Held

    Spool._waiting_for_key = held  # type: ignore[method-assign]  # the child's copy only
    try:
        async with Spool(root).locked(key):
            return "free"
    except _Held:
        return "held"


def _probed(root: Path, key: str) -> str:
    return str(forked(in_child(lambda: asyncio.run(_probe(root, key))))())


async def test_a_child_forked_while_a_thread_opens_the_keys_file_takes_keys(
    tmp_path: Path,
) -> None:
    # another thread of the parent was opening keys.lock at the fork (under the guard of
    # the process's descriptors): the child's copy of that guard is never released, and
    # the child hung on its first spooled write, delete or flush
    root = tmp_path / "spool"
    with spool_module._KEYS_GUARD:
        result = forked(in_child(lambda: asyncio.run(_probe(root, "k"))))
    assert await asyncio.to_thread(result) == "free"
