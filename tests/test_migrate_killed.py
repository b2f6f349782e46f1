"""migrate killed (SIGKILL, in a real process) at each step of one object's move, then run
again with delete_source: every object ends at the destination exactly (bytes, content
type, metadata) and the source is empty, also when the object in flight was replaced at
the source while no run was going."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, migrate

COUNT = 6
META = {"owner": "u1"}
# a step of one object's move (the third), and what is called there; the process is
# killed on that call, with nothing of the step's own done
HOOKS = {
    "last-byte-read": "file_storage._migrate._changed",  # the source is looked at again
    "copy-landed": "file_storage._migrate._check",  # the copy is verified
    "verified": "file_storage.backends.local.LocalStorageBackend._purge_one",  # delete_source
}

# run in a child process first: kill_on_call(target, nth) kills the process (SIGKILL) on
# the nth call of the function or method that the dotted name ``target`` names
KILL_ON_CALL = textwrap.dedent(
    """
    import importlib, os, signal

    def kill_on_call(target, nth):
        where, name = target.rsplit(".", 1)
        try:
            owner = importlib.import_module(where)
        except ImportError:
            module, cls = where.rsplit(".", 1)
            owner = getattr(importlib.import_module(module), cls)
        real, calls = getattr(owner, name), []

        def hook(*args, **kwargs):
            calls.append(args)
            if len(calls) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        setattr(owner, name, hook)
    """
)

RUN = KILL_ON_CALL + textwrap.dedent(
    """
    import asyncio, sys
    from file_storage import LocalStorageBackend, migrate

    kill_on_call(sys.argv[3], int(sys.argv[4]))
    source, dest = LocalStorageBackend(sys.argv[1]), LocalStorageBackend(sys.argv[2])
    asyncio.run(migrate(source, dest, concurrency=1, delete_source=True))
    """
)


def key(i: int) -> str:
    return f"data/{i}.csv"


@pytest.mark.parametrize("replaced", [False, True], ids=["unchanged", "replaced-meanwhile"])
@pytest.mark.parametrize("hook", list(HOOKS))
async def test_a_run_killed_at_any_step_then_run_again_ends_exact(
    tmp_path: Path, hook: str, replaced: bool
) -> None:
    source = LocalStorageBackend(tmp_path / "src")
    dest = LocalStorageBackend(tmp_path / "dst")
    objects = {key(i): f"version 1 of {i}\n".encode() * (i + 1) for i in range(COUNT)}
    for k, content in objects.items():
        await source.save(k, content, content_type="text/csv", metadata=META)
    # the delete hook is called once per object moved; the others twice (once before
    # the copy lands, once after it is verified) or once (verify)
    nth = {"last-byte-read": 5, "copy-landed": 3, "verified": 3}[hook]
    args = [sys.executable, "-c", RUN, tmp_path / "src", tmp_path / "dst", HOOKS[hook], str(nth)]
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert 2 <= len(await dest.list_files()) <= 3
    if replaced:  # the object in flight, replaced before the next run
        objects[key(2)] = b"version 2, written while no migration ran\n"
        await source.save(key(2), objects[key(2)], content_type="text/csv", metadata=META)

    report = await migrate(source, dest, delete_source=True)

    assert report.failed == {}
    assert await source.list_files() == []
    assert await dest.load_many(objects) == objects
    for k in objects:
        info = await dest.stat(k)
        assert (info.content_type, info.metadata) == ("text/csv", META)
