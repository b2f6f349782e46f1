"""Reading a small file the library wrote itself (a sidecar, a spool record, a rules or
state file), from a descriptor already opened without waiting (``O_NONBLOCK``): another
process, or a person, may have left anything in its place."""

from __future__ import annotations

import os
import stat

__all__ = ["read_regular"]


def read_regular(fd: int, limit: int) -> bytes | None:
    """The bytes of the file open at ``fd``; ``None`` when it is no regular file (a FIFO,
    a folder, a device: neither waited on nor read) or holds more than ``limit`` bytes
    (not read into memory, also when it grew since it was looked at)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        return None
    with open(fd, "rb", closefd=False) as f:
        data = f.read(limit + 1)
    return None if len(data) > limit else data
