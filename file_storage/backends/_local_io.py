"""Disk I/O helpers of the local backend: batched thread hops and a sorted folder walk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from file_storage._keys import is_valid_segment

TMP_MARK = "\\tmp-"  # a backslash is banned from keys: a temp name is never a key
_SCAN_BATCH = 1000  # directory entries handed back per thread hop while iterating

T = TypeVar("T")
IO_BATCH = 8 * 1024 * 1024  # bytes written per thread hop by streamed writes
# Bytes read per hop. Larger batches would cost fewer hops but are slower: glibc hands a
# freed run of more than 2 MiB at the top of the heap back to the kernel (M_TRIM_THRESHOLD
# tracks twice the 1 MiB mmap threshold), so every batch would fault its pages in anew.
# Measured on 1 MiB chunks: 2 MiB per hop 15.8 GB/s, 4 MiB 2.7 GB/s, 1 MiB 10.7 GB/s.
READ_BATCH = 2 * 1024 * 1024
# the streamed writer's own thread: a write can be awaited, or waited for synchronously
# during clean-up, before its descriptor is closed
io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="file_storage")


async def in_pool(
    fn: Callable[..., T], *args: Any, cleanup: Callable[[T], object] | None = None
) -> T:
    """Run ``fn`` in the I/O pool; if the caller is cancelled meanwhile, wait for the thread
    to finish (it cannot be stopped) so no descriptor is used after close or leaked."""
    future = io_pool.submit(fn, *args)
    try:
        return await asyncio.wrap_future(future)
    except BaseException:
        if not future.cancel():
            with contextlib.suppress(BaseException):
                result = future.result()
                if cleanup is not None:
                    cleanup(result)
        raise


def discard_tmp(opened: tuple[str, str, int]) -> None:
    _path, tmp, fd = opened
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def write_all(fd: int, chunks: list[bytes]) -> None:
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:1024])  # IOV_MAX is 1024 on Linux
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def read_batch(fd: int, offset: int, end: int | None, chunk_size: int, count: int) -> list[bytes]:
    chunks = []
    for _ in range(count):
        size = chunk_size if end is None else min(chunk_size, end - offset)
        if size <= 0:
            break
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        if len(chunk) < size:
            break
    return chunks


def tmp_name() -> str:
    return f".{TMP_MARK}{uuid.uuid4().hex}"


class Walk:
    """A sorted depth-first walk of a folder, handing back entries in batches.

    Symlinks are followed only where they stay inside ``root``.
    """

    def __init__(self, root: str, prefix: str, with_stat: bool):
        self.root = root
        self.with_stat = with_stat
        base = os.path.join(root, prefix) if prefix else root
        self.stack: list[Iterator[tuple[str, str, bool]]] = [self._listing(base, prefix)]

    def _inside(self, entry: os.DirEntry[str]) -> bool:
        if not entry.is_symlink():
            return True
        return os.path.realpath(entry.path).startswith(self.root + os.sep)

    def _listing(self, folder: str, key_prefix: str) -> Iterator[tuple[str, str, bool]]:
        try:
            with os.scandir(folder) as it:
                entries = [
                    (e.name, e.path, e.is_dir())
                    for e in it
                    if is_valid_segment(e.name) and (e.is_dir() or e.is_file()) and self._inside(e)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        # a folder sorts as "name/" so the walk yields keys in plain sorted() order
        entries.sort(key=lambda e: e[0] + "/" if e[2] else e[0])
        return ((key_prefix + name, path, is_dir) for name, path, is_dir in entries)

    def batch(self, limit: int = _SCAN_BATCH) -> list[tuple[str, os.stat_result | None]]:
        out: list[tuple[str, os.stat_result | None]] = []
        while self.stack and len(out) < limit:
            item = next(self.stack[-1], None)
            if item is None:
                self.stack.pop()
                continue
            key, path, is_dir = item
            if is_dir:
                self.stack.append(self._listing(path, key + "/"))
                continue
            if self.with_stat:
                try:
                    out.append((key, os.stat(path)))
                except FileNotFoundError:  # deleted while we walked
                    continue
            else:
                out.append((key, None))
        return out
