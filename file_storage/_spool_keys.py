"""The spool folder's ``keys.lock``: this process's descriptor of it, shared by every lock.

A key's lock across processes is a POSIX record lock on one byte of ``keys.lock``
(:func:`byte`). Record locks belong to the process, not to a descriptor: two locks of one
process on one byte never exclude each other, and closing *any* descriptor of the file
drops *all* of the process's locks on it. So a process opens the file once, whatever path
leads to it (a link switched since another backend was made, a bind mount: the file is
known by its device and inode), every lock goes through that descriptor, and it is closed
only when no lock is held or awaited through it (:func:`let_go`).

A file system that refuses record locks (:func:`refused`) has its keys ordered in each
process only, for :data:`RETRY_SECONDS`; then they are tried again (:func:`refuses`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from file_storage.backends import _forks
from file_storage.errors import StorageConfigError, StorageUnavailableError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no keys.lock (see file_storage._spool)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RETRY_SECONDS",
    "KeysFile",
    "busy",
    "byte",
    "keys_file",
    "let_go",
    "lock_file",
    "refused",
    "refuses",
    "took",
    "unlock_key",
]


class KeysFile:
    """This process's descriptor of one ``keys.lock`` file and how many use it."""

    __slots__ = ("fd", "file", "spare", "users")

    def __init__(self, fd: int, file: tuple[int, int]) -> None:
        self.fd = fd
        self.file = file  # (device, inode): the file, whatever path led to it
        self.spare: list[int] = []  # other descriptors of it, closed with this one
        self.users = 0  # holders and waiters of its locks


logger = logging.getLogger("file_storage.spool")

#: a folder whose file system refused record locks is ordered per process only for this
#: long, then tried again: a refusal may pass (a lock table full for a moment, a lock
#: daemon restarting), and the ordering across processes must come back without a restart
RETRY_SECONDS = 60.0
_unlockable: dict[str, float] = {}  # folder -> when record locks were last refused there
_warned: set[str] = set()  # folders whose refusal was logged at WARNING (once a process)

_KEYS_FILES: dict[tuple[int, int], KeysFile] = {}
_KEYS_GUARD = threading.Lock()


def _forget_keys_files() -> None:
    # a forked child holds none of its parent's record locks: it opens its own descriptor
    # (closing the copy drops no lock of the parent's); a thread of the parent may have
    # held the guard at the fork, and none runs here to release it
    global _KEYS_GUARD
    _KEYS_GUARD = threading.Lock()
    for used in _KEYS_FILES.values():
        for fd in (used.fd, *used.spare):
            with contextlib.suppress(OSError):
                os.close(fd)
    _KEYS_FILES.clear()


_forks.renew(_forget_keys_files)


def byte(key: str) -> int:
    """The byte of ``keys.lock`` standing for ``key`` (62 bits of its hash: never two
    keys in practice, and far from overflowing an offset)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 2


def keys_file(root: Path) -> KeysFile:
    """This process's descriptor of the ``keys.lock`` now in the folder ``root``, one more
    user counted: give it back with :func:`let_go`. A folder removed and made again while
    a key is held: later keys are locked in the new file, as other processes do."""
    path = root / "keys.lock"
    with _KEYS_GUARD:
        try:
            found = os.stat(path, follow_symlinks=False)
            used = _KEYS_FILES.get((found.st_dev, found.st_ino))
        except FileNotFoundError:
            used = None
        if used is None:
            # never a link planted in its place (nor a file it points to)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(path, flags, 0o600)
            except FileNotFoundError:  # the folder was removed since it was claimed
                root.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, flags, 0o600)
            opened = os.fstat(fd)
            file = (opened.st_dev, opened.st_ino)
            used = _KEYS_FILES.get(file)
            if used is None:
                used = _KEYS_FILES[file] = KeysFile(fd, file)
            else:  # put back at the path since it was looked at: closing this descriptor
                used.spare.append(fd)  # would drop the locks held through the other one
        used.users += 1
    return used


def let_go(used: KeysFile) -> None:
    """One user fewer of ``used``; its descriptors closed when none is left (then none of
    its locks is held)."""
    with _KEYS_GUARD:
        used.users -= 1
        if not used.users:
            if _KEYS_FILES.get(used.file) is used:
                del _KEYS_FILES[used.file]
            for fd in (used.fd, *used.spare):
                os.close(fd)


def busy(wait: float | None) -> StorageUnavailableError:
    """What a write, delete or flush raises when its key stayed held past its wait."""
    return StorageUnavailableError(
        f"another write, delete or flush of this key held it for over {wait:g} s (a "
        "worker may hang): nothing was done, try again"
    )


def unlock_key(fd: int, key: str) -> None:
    """Unlock ``key`` against the other processes; a refusal is logged, not raised."""
    assert fcntl is not None
    try:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte(key))
    except OSError as exc:
        # what the lock ordered is done: the caller must not be told it failed, and the
        # other keys are still unlocked; this one stays locked against the other
        # processes until this process closes its descriptor (no key held or awaited)
        logger.error("fallback spool: cannot unlock %r against other processes: %s", key, exc)


def refuses(folder: str) -> bool:
    """Whether the file system of ``folder`` refused record locks in the last
    :data:`RETRY_SECONDS` (then its keys are ordered in this process only)."""
    since = _unlockable.get(folder)
    return since is not None and time.monotonic() - since < RETRY_SECONDS


def refused(folder: str, exc: OSError) -> None:
    """The file system of ``folder`` refused a record lock with ``exc``."""
    _unlockable[folder] = time.monotonic()
    if folder in _warned:
        logger.debug("fallback spool: record locks still refused (%s)", exc.strerror)
        return
    _warned.add(folder)
    logger.warning(
        "fallback spool: the folder's file system refuses record locks (%s): writes, "
        "deletes and flushes of one key are ordered per process only (tried again every "
        "%g s)",
        exc.strerror,
        RETRY_SECONDS,
    )


def took(folder: str) -> None:
    """A record lock was taken in ``folder``: its keys are ordered across processes."""
    if _unlockable.pop(folder, None) is not None:
        logger.warning("fallback spool: record locks work again; keys ordered across processes")


_NOT_A_FILE = (errno.ELOOP, errno.EISDIR)  # a link (O_NOFOLLOW) or a folder in its place


@contextlib.contextmanager
def lock_file(name: str) -> Iterator[None]:
    """Opening the folder's lock file ``name``: one replaced by a link or a folder is said
    so, not read as the key's conflict with a folder, nor as an I/O error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NOT_A_FILE:
            raise StorageConfigError(
                f"the fallback spool folder's {name} is a link or a folder, not a file: remove it"
            ) from exc
        raise
