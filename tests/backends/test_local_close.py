"""The local backend closed (``aclose``) while an operation's thread is inside the root:
the root's descriptors stay open until it ends, so a descriptor number closed under it
and reused by another open can never send its write outside the root."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend, StorageError

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="POSIX descriptors")


@pytest.mark.parametrize("where", ["same-loop", "another-threads-loop"])
async def test_aclose_while_a_write_walks_the_root_never_writes_outside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    backend = LocalStorageBackend(tmp_path / "root")
    await backend.save("warm.txt", b"w")  # the root's descriptor is open
    root_fd = backend._dir.fd()
    decoy = tmp_path / "decoy"
    (decoy / "d").mkdir(parents=True)
    loop = asyncio.get_running_loop()
    real_open = os.open
    grabbed: list[int] = []

    def hooked_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if path == "d" and kwargs.get("dir_fd") == root_fd and not grabbed:
            # the app shuts down (another task of the loop) while this thread walks
            asyncio.run_coroutine_threadsafe(backend.aclose(), loop).result(10)
            # another thread opens a folder: it gets the lowest free descriptor number
            for _ in range(64):
                grabbed.append(real_open(decoy, os.O_RDONLY | os.O_DIRECTORY))
                if grabbed[-1] == root_fd:
                    break
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", hooked_open)
    try:
        if where == "same-loop":
            await backend.save("d/x.bin", b"secret")
        else:  # a worker thread running a loop of its own on the same backend
            await asyncio.to_thread(asyncio.run, backend.save("d/x.bin", b"secret"))
    except StorageError:
        pass  # failing is fine; landing elsewhere is not
    finally:
        monkeypatch.undo()
        for fd in grabbed:
            os.close(fd)
    assert grabbed
    assert sorted(p.name for p in (decoy / "d").iterdir()) == []
    assert await backend.load("d/x.bin") == b"secret"
    await backend.aclose()
