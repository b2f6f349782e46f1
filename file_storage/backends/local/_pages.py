"""The local backend's listing after a cursor: a sorted walk that starts there.

Each folder level on the way to the cursor is listed once and bisected; folders wholly
before the cursor are never entered, so page 500 of a big tree costs about what page 1
does (``benchmarks/local.py`` measures it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable

from file_storage.backends._pages import Entry
from file_storage.backends.local._fs import Root
from file_storage.backends.local._io import in_pool
from file_storage.backends.local._walk import SCAN_BATCH, Walk
from file_storage.models import ObjectInfo

Describe = Callable[[str, os.stat_result], ObjectInfo]


async def local_entries(
    root: Root,
    describe: Describe,
    prefix: str,
    start_after: str | None,
    recursive: bool,
    page_size: int,
) -> AsyncIterator[Entry]:
    """``_iter_entries`` of the local backend; ``describe`` makes a listing's ObjectInfo."""
    opened = functools.partial(
        Walk, root, prefix, True, start_after=start_after, recursive=recursive
    )
    walk = await in_pool(opened, cleanup=Walk.close)
    batch_size = min(page_size, SCAN_BATCH) if page_size > 0 else SCAN_BATCH
    try:
        while batch := await in_pool(walk.batch, batch_size):
            for key, st in batch:
                if st is None:  # recursive=False: a folder, as "key/"
                    yield key[:-1]
                else:
                    yield describe(key, st)
    finally:
        walk.close()
