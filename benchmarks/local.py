"""Local disk: LocalStorageBackend against plain sync I/O, one thread hop, and aiofiles.

Small files: every contender does the same job, an atomic write (temp file, then
rename) and a whole-file read, one at a time, in its own folder:

* ``sync (no thread)``: the work inline, blocking the loop: the ceiling.
* ``to_thread (one hop per op)``: the whole write or read in one ``asyncio.to_thread``.
* ``aiofiles (hop per call)``: a thread hop for each open, write, close and rename.

Large files: write then read one file in chunks; ``dd`` (1 MiB blocks) to the same
folder is the machine's ceiling. Each write starts after ``os.sync()`` and writes into
the page cache (no fsync, like the backend's default); reads come from the page cache
for everyone, as the file was just written: this measures the software path, not the
disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiofiles
import aiofiles.os

from benchmarks._common import KIB, MIB, SMALL, Meter, Row, Scale, drive, log, rotations, split

SMALL_SECTION = "local small files"
LARGE_SECTION = "local large file"

LIBRARY = "file_storage"
SYNC = "sync (no thread)"
HOP = "to_thread (one hop per op)"
AIOFILES = "aiofiles (hop per call)"
LARGE_LIBRARY = "file_storage (save stream / stream)"
LARGE_BASE = "sync 1 MiB chunks"

Op = Callable[[int], Awaitable[object]]


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "xb") as out:
        out.write(data)
    os.replace(tmp, path)


def _read(path: str) -> bytes:
    with open(path, "rb") as src:
        return src.read()


def _small_ops(name: str, root: Path, data: bytes) -> tuple[Op, Op]:
    """(write op, read op) for one contender, writing under ``root``."""
    if name == LIBRARY:
        from file_storage import LocalStorageBackend

        backend = LocalStorageBackend(root)

        async def lib_write(i: int) -> object:
            return await backend.save(f"small/{i:06d}.bin", data)

        async def lib_read(i: int) -> object:
            return await backend.load(f"small/{i:06d}.bin")

        return lib_write, lib_read
    folder = root / "small"
    folder.mkdir(parents=True, exist_ok=True)

    def path(i: int) -> str:
        return str(folder / f"{i:06d}.bin")

    if name == SYNC:

        async def sync_write(i: int) -> None:
            _atomic_write(path(i), data)

        async def sync_read(i: int) -> bytes:
            return _read(path(i))

        return sync_write, sync_read
    if name == HOP:

        async def hop_write(i: int) -> None:
            await asyncio.to_thread(_atomic_write, path(i), data)

        async def hop_read(i: int) -> bytes:
            return await asyncio.to_thread(_read, path(i))

        return hop_write, hop_read

    async def aio_write(i: int) -> None:
        tmp = f"{path(i)}.{uuid.uuid4().hex}.tmp"
        async with aiofiles.open(tmp, "xb") as out:
            await out.write(data)
        await aiofiles.os.replace(tmp, path(i))

    async def aio_read(i: int) -> bytes:
        async with aiofiles.open(path(i), "rb") as src:
            return await src.read()

    return aio_write, aio_read


async def run_small(scale: Scale, workdir: Path) -> list[Row]:
    """Write then read ``local_files`` files of 4 KiB, one at a time, rounds rotating."""
    names = [LIBRARY, SYNC, HOP, AIOFILES]
    data = os.urandom(SMALL)
    roots = {n: workdir / f"small-{i}" for i, n in enumerate(names)}
    ops = {n: _small_ops(n, roots[n], data) for n in names}
    count = scale.local_files
    rows: list[Row] = []
    os.sync()  # earlier sections' dirty pages must not be written back during ours
    try:
        for phase, index in (("write", 0), ("read", 1)):
            label = f"{phase} {count:,} x 4 KiB, c=1"
            log(f"  {label}")
            phase_rows = {n: Row(SMALL_SECTION, label, n) for n in names}
            for name in names:  # warm-up: not counted (the writes create the read set)
                await drive(ops[name][index], 900_000, scale.warmup, 1)
            shares = split(count, scale.rounds)
            done = dict.fromkeys(names, 0)
            for r, order in enumerate(rotations(names, scale.rounds)):
                for name in order:
                    with Meter(phase_rows[name], None):
                        await drive(ops[name][index], done[name], shares[r], 1)
                    phase_rows[name].ops += shares[r]
                    done[name] += shares[r]
            rows.extend(phase_rows.values())
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    return rows


async def _chunks(block: bytes, size: int) -> AsyncIterator[bytes]:
    for _ in range(size // len(block)):
        yield block


def _sync_write(path: Path, block: bytes, size: int, chunk: int) -> None:
    view = memoryview(block)
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            for offset in range(0, len(view), chunk):
                out.write(view[offset : offset + chunk])


def _sync_read(path: Path, chunk: int) -> int:
    total = 0
    with path.open("rb", buffering=0) as src:
        while data := src.read(chunk):
            total += len(data)
    return total


async def _aio_write(path: Path, block: bytes, size: int, chunk: int) -> None:
    view = memoryview(block)
    async with aiofiles.open(path, "wb") as out:
        for _ in range(size // len(block)):
            for offset in range(0, len(view), chunk):
                await out.write(view[offset : offset + chunk])


async def _aio_read(path: Path, chunk: int) -> int:
    total = 0
    async with aiofiles.open(path, "rb") as src:
        while data := await src.read(chunk):
            total += len(data)
    return total


def _dd(args: list[str]) -> None:
    subprocess.run(["dd", *args, "bs=1M", "status=none"], check=True)


async def _large_one(name: str, root: Path, block: bytes, size: int, phase: str) -> None:
    path = root / "large.bin"
    if name == LIBRARY:
        from file_storage import LocalStorageBackend

        backend = LocalStorageBackend(root)
        if phase == "write":
            await backend.save("large.bin", _chunks(block, size))
        else:
            async for _ in backend.stream("large.bin"):
                pass
    elif name.startswith("sync"):
        chunk = MIB if "1 MiB" in name else 64 * KIB
        if phase == "write":
            _sync_write(path, block, size, chunk)
        else:
            _sync_read(path, chunk)
    elif name.startswith("aiofiles"):
        if phase == "write":
            await _aio_write(path, block, size, 64 * KIB)
        else:
            await _aio_read(path, 64 * KIB)
    elif phase == "write":
        # conv=notrunc: the file is new; dd's own truncate would make ext4 flush it on close
        _dd(["if=/dev/zero", f"of={path}", f"count={size // MIB}", "conv=notrunc"])
    else:
        _dd([f"if={path}", "of=/dev/null"])


async def run_large(scale: Scale, workdir: Path) -> list[Row]:
    """Write then read one ``local_large`` file per contender; the best of rotating rounds."""
    size = scale.local_large
    label = f"{size // MIB} MiB" if size < 1024 * MIB else f"{size // (1024 * MIB)} GiB"
    names = [
        LARGE_LIBRARY,
        LARGE_BASE,
        "sync 64 KiB chunks",
        "aiofiles 64 KiB chunks (naive)",
        "dd bs=1M (machine ceiling)",
    ]
    block = os.urandom(MIB)
    rows = {
        (n, phase): Row(LARGE_SECTION, f"{phase} {label}", n)
        for phase in ("write", "read")
        for n in names
    }
    warm = workdir / "warm-up.bin"  # the first big write of a process pays for fresh pages
    _sync_write(warm, block, size, MIB)
    warm.unlink()
    for r, order in enumerate(rotations(names, scale.local_rounds)):
        for name in order:
            log(f"  local {label} round {r + 1}: {name}")
            root = workdir / f"large-{uuid.uuid4().hex[:8]}"
            root.mkdir()
            try:
                for phase in ("write", "read"):
                    row = rows[(name, phase)]
                    # start each with no dirty pages: writeback throttling of an earlier
                    # contender's data must not slow this one down
                    os.sync()
                    span = Row(row.section, row.workload, row.contender)
                    with Meter(span, None):
                        await _large_one(
                            LIBRARY if name == LARGE_LIBRARY else name,
                            root,
                            block,
                            size,
                            phase,
                        )
                    # best round: the kernel's page allocation makes single spans jumpy
                    if not row.ops or span.seconds < row.seconds:
                        row.seconds, row.cpu_seconds = span.seconds, span.cpu_seconds
                    row.ops, row.nbytes = 1, size
            finally:
                shutil.rmtree(root, ignore_errors=True)
    return list(rows.values())
