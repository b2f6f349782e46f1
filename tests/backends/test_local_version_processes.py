"""Local only: versions of one key written, deleted and purged by two real processes on
one root (their key locks are flocks on the root's lock files, shared by every process),
with versioning switched between enabled and suspended as they go."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from file_storage import LocalStorageBackend

ROUNDS = 60

_WRITER = """
import asyncio, sys
from pathlib import Path
from file_storage import LocalStorageBackend

async def main() -> None:
    backend = LocalStorageBackend(Path(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        if i % 5 == 0:
            await backend.set_versioning(False)
        if i % 5 == 2:
            await backend.set_versioning(True)
        await backend.save("k.txt", b"w%03d" % i + b"." * (i % 4))
        if i % 7 == 3:
            await backend.delete("k.txt")
    await backend.set_versioning(True)
    await backend.save("k.txt", b"final")
    print("written", flush=True)

asyncio.run(main())
"""

_PURGER = """
import asyncio, sys
from pathlib import Path
from file_storage import LocalStorageBackend

async def main() -> None:
    backend = LocalStorageBackend(Path(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        await backend.purge_versions("k.txt", keep=1 + i % 2)
    print("purged", flush=True)

asyncio.run(main())
"""


def _run(script: str, root: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, str(root), str(ROUNDS)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


async def test_purges_in_one_process_never_lose_the_writes_of_another(tmp_path: Path) -> None:
    root = tmp_path / "root"
    backend = LocalStorageBackend(root)
    await backend.set_versioning(True)
    await backend.save("k.txt", b"first")
    outs = await asyncio.gather(
        asyncio.to_thread(_run, _WRITER, root), asyncio.to_thread(_run, _PURGER, root)
    )
    assert outs == ["written", "purged"]
    assert await backend.load("k.txt") == b"final"  # the last write, never purged
    written = {b"first", b"final"} | {b"w%03d" % i + b"." * (i % 4) for i in range(ROUNDS)}
    versions = await backend.list_versions("k.txt")
    assert versions[0].is_latest
    for version in versions:  # each listed version reads, as one of the writes
        assert await backend.load("k.txt", version_id=version.version_id) in written
    assert len({v.version_id for v in versions}) == len(versions)
    # a quota's scan counts exactly the versions listed
    backend.set_quota("", 10**6)
    await backend.refresh_usage()
    assert (await backend.get_usage()).used == sum(v.size for v in versions)
