"""Conditional writes of the local backend: create-only and replace-only-that-version.

Create-only never checks then writes: the finished temp file is hard-linked to the key's
name, which the kernel refuses with ``EEXIST`` when anything is there, so of racing
writers (threads or processes) exactly one lands; the temp name is then unlinked.
Replace-only-that-version compares the current file's ETag and renames while holding the
key's lock (``key_locks``: a thread stripe, then an ``flock`` on the key's sidecar shard
folder), which every write and delete takes: exact between the processes of one machine
that use this library, where the file system allows ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import os

from file_storage.backends.local._fs import Root, open_object, taken
from file_storage.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)


def etag_of(st: os.stat_result) -> str:
    # the inode too: every write makes a new file (temp + rename), so two versions of
    # one size written within one tick of a coarse file-system clock still differ
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def check_match(root: Root, key: str, etag: str) -> None:
    """Raise PreconditionFailedError unless the object at ``key`` has ``etag`` now."""
    try:
        found = open_object(root, key)
    except ObjectNotFoundError:
        raise PreconditionFailedError("no object at this key for if_match") from None
    try:
        current = etag_of(found.st)
    finally:
        found.close()
    if current != etag:
        raise PreconditionFailedError("the object is not the version if_match names")


def link_new(tmp: str, dir_fd: int, name: str) -> None:
    """Install the temp file ``tmp`` as ``name`` only if nothing is there (atomic), then
    drop the temp name. A folder, FIFO, socket or device there is a conflict (``taken``);
    an object a failed condition."""
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError as exc:
        conflict = None
        with contextlib.suppress(OSError):
            conflict = taken(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        if conflict is not None:
            raise conflict from exc
        raise PreconditionFailedError("an object exists at this key (overwrite=False)") from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # no hard links here (some FUSE and network file systems): no atomic create-only
        raise StorageError(
            "the storage folder's file system has no hard links: overwrite=False cannot be "
            "atomic there"
        ) from exc
    with contextlib.suppress(OSError):  # a leftover is swept like a crashed writer's
        os.unlink(tmp, dir_fd=dir_fd)
