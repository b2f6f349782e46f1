"""The fallback spool's small records (a manifest, the ``store`` marker), read bounded.

Another process, or a person, may leave anything in their place: a FIFO is neither waited
on nor read, and a huge file is not read into memory; either reads as no record.
"""

from __future__ import annotations

import os
from pathlib import Path

from file_storage._small_files import read_regular
from file_storage.errors import StorageConfigError

__all__ = ["MAX_RECORD", "owner_of", "read_record"]

# a manifest holds a key (1 KiB), a content type and 2 KiB of metadata, JSON-escaped (up
# to 6 bytes a character): far below this; the store marker a bucket and a prefix
MAX_RECORD = 1 << 20


def read_record(path: Path) -> str:
    """The text of a record the spool wrote (a manifest, the store marker).

    Raises:
        FileNotFoundError: there is none.
        ValueError: what is there is no such record: not a regular file (a FIFO is
            neither waited on nor read), over ``MAX_RECORD`` bytes (not read into
            memory), or not UTF-8.
    """
    # O_NONBLOCK: opening a FIFO for reading would wait for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        data = read_regular(fd, MAX_RECORD)
    finally:
        os.close(fd)
    if data is None:
        raise ValueError(f"{path.name} is not a spool record")
    return data.decode("utf-8")


def owner_of(marker: Path) -> str:
    """The store named by the spool folder's ``store`` marker."""
    try:
        return read_record(marker)
    except ValueError:
        raise StorageConfigError(
            "fallback_path holds a 'store' marker the spool did not write (not a small "
            "UTF-8 file): remove it, or give this backend another folder"
        ) from None
