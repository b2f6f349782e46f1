"""What the Redis quota ledger's allowances need of local disk: key locks every process
of the machine takes, and the sizes at keys.

A delete, copy or move locks its keys here for the whole operation, then reads their
sizes; a save locks its key for the whole save too, and reads the size it replaces as it
lands (its rename, in its thread). No other process using this library changes a key
meanwhile, so the difference each operation makes is exact, whatever Redis's figures say
(see :mod:`file_storage._quota.redis.allowance`).

The locks are byte-range locks of 64 files, ``<root>/.file_storage\\quota-locks-<nn>``
(a backslash: never a key; several files, as the kernel walks a file's locks at each lock
and unlock), one byte per key hash (65,536 of them: two keys sharing one merely wait for
each other). They are open file description locks (Linux ``F_OFD_SETLK``): unlike
``lockf`` they are not dropped when this process closes another descriptor of a file,
and two descriptors conflict like two processes. This process opens each file once and
counts its own holders per byte (its own keys take turns in the ledger's own locks
first). A file system that refuses them (some network ones) leaves the ledger going
through Redis for every write, as on S3.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import stat as stat_mod
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import cast

from file_storage._loops import Backoff
from file_storage._quota.redis.allowance import DiskLocksUnavailable
from file_storage.backends import _forks
from file_storage.backends.local._fs import O_CLOEXEC, Root, open_object
from file_storage.errors import ObjectNotFoundError, StorageError

logger = logging.getLogger("file_storage")

LOCKS_NAME = ".file_storage\\quota-locks"
_SLOTS = 1 << 16
_FILES = 64  # lock files: the kernel walks one file's locks at each lock and unlock
_BUSY = (errno.EAGAIN, errno.EACCES)
_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_DISKS: weakref.WeakSet[LocalDisk] = weakref.WeakSet()


class _Unread:
    """Not read yet."""


_UNREAD = _Unread()


def _after_fork_in_child() -> None:
    for disk in list(_DISKS):
        disk._forked()


def _native_fcntl() -> Callable[[int, int, bytes], int] | None:
    """libc's ``fcntl``, called without giving up the interpreter's lock. A lock or unlock
    of these never blocks (``F_OFD_SETLK``), and on the event loop ``fcntl.fcntl``, which
    gives the lock up around the call, then waits to get it back behind the threads
    landing saves: a wait measured larger than the call itself."""
    try:
        call = ctypes.PyDLL(None, use_errno=True).fcntl
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    call.restype = ctypes.c_int
    return cast("Callable[[int, int, bytes], int]", call)


_FCNTL = _native_fcntl()


def _setlk(fd: int, kind: int, slot: int) -> None:
    """Lock or unlock ``slot`` of ``fd`` (``OSError`` as ``fcntl.fcntl`` raises it)."""
    assert _SETLK is not None
    if _FCNTL is None:
        fcntl.fcntl(fd, _SETLK, _range(kind, slot))
    elif _FCNTL(fd, _SETLK, _range(kind, slot)) == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _range(kind: int, slot: int) -> bytes:
    # struct flock (Linux): l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
    return struct.pack("hhqqii", kind, os.SEEK_SET, slot, 1, 0, 0)


class LocalDisk:
    """The key locks and key sizes of one local backend's root."""

    def __init__(self, root: Root) -> None:
        self._root = root
        # a slot's holders change under its stripe (one per 256 slots): the threads
        # landing saves do not queue behind one mutex across their lock calls
        self._stripes = [threading.Lock() for _ in range(256)]
        self._opening = threading.Lock()
        self._fds: dict[int, int] = {}
        self._opened: tuple[int, int] = (0, -1)  # (pid, root descriptor) it was opened for
        self._holders: dict[int, list[int]] = {}  # slot -> [holders here, descriptor]
        self.refused = False
        self._root_fd = -1
        self._checked = 0.0  # when the root's descriptor was last checked
        # keys whose save draws on an allowance without having read the key's size:
        # the landing reads it under the key's locks and leaves it here (see landing)
        self._expected: dict[str, int | _Unread | None] = {}
        _DISKS.add(self)

    def _forked(self) -> None:
        # a child holds none of its parent's locks (nor its descriptor's: it opens its own).
        # It closes its copies of the parent's descriptors: a lock belongs to the open
        # file, which lives on while any copy does, so a parent killed holding one would
        # leave it held for as long as the child lives (every save of the key waiting)
        inherited = {*self._fds.values(), *(held[1] for held in self._holders.values())}
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stripes = [threading.Lock() for _ in range(256)]
        self._opening = threading.Lock()
        self._holders = {}
        self._opened = (0, -1)
        self._fds = {}
        self._root_fd = -1
        self._expected = {}

    def _root_now(self) -> int:
        # (Root.fd() checks the folder was not removed with an fstat: once a second here)
        now = time.monotonic()
        if self._root_fd < 0 or self._opened[0] != os.getpid() or now - self._checked > 1.0:
            self._root_fd = self._root.fd()
            self._checked = now
        return self._root_fd

    def _file(self, slot: int) -> int:
        with self._opening:  # (one descriptor per file: a lock is undone through it)
            root_fd = self._root_now()
            if self._opened != (os.getpid(), root_fd):
                # (the root folder was made anew: the old files' descriptors stay open
                # while their locks are held, then are dropped with this process)
                self._fds = {}
                self._opened = (os.getpid(), root_fd)
            fd = self._fds.get(slot % _FILES)
            if fd is None:
                flags = os.O_RDWR | os.O_CREAT | O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
                name = f"{LOCKS_NAME}-{slot % _FILES:02x}"
                fd = self._fds[slot % _FILES] = os.open(name, flags, 0o600, dir_fd=root_fd)
            return fd

    def close(self) -> None:
        """The backend closes: the lock files' descriptors are closed (opened again on next
        use), but one a lock is held through (another loop's operation, ending later)."""
        with self._opening:
            held = {entry[1] for entry in list(self._holders.values())}
            fds = self._fds
            self._fds = {n: fd for n, fd in fds.items() if fd in held}
            self._root_fd = -1  # (the root's descriptor is closed with it: asked again)
            for fd in fds.values():
                if fd not in held:
                    os.close(fd)

    def lock(self, keys: list[str]) -> AbstractAsyncContextManager[None]:
        return _Locked(self, sorted({zlib.crc32(k.encode()) % _SLOTS for k in keys}))

    def _take(self, slot: int) -> bool:
        assert _SETLK is not None
        with self._stripes[slot % 256]:
            held = self._holders.get(slot)
            if held is not None:
                held[0] += 1
                return True
            fd = self._file(slot)
            try:
                _setlk(fd, fcntl.F_WRLCK, slot // _FILES)
            except OSError as exc:
                if exc.errno in _BUSY:
                    return False  # another process holds it: waited for
                self.refused = True
                logger.warning(
                    "the storage folder refuses byte-range locks (%s): the shared quota "
                    "ledger asks Redis at every write",
                    exc.strerror,
                )
                raise DiskLocksUnavailable() from exc
            self._holders[slot] = [1, fd]  # (unlocked through the descriptor it took)
            return True

    def _give(self, slot: int) -> None:
        assert _SETLK is not None
        with self._stripes[slot % 256]:
            held = self._holders[slot]
            held[0] -= 1
            if held[0] == 0:
                del self._holders[slot]
                with contextlib.suppress(OSError):
                    _setlk(held[1], fcntl.F_UNLCK, slot // _FILES)

    # -- a save's landing (in its thread) ------------------------------------------------

    # (each a single dict operation, atomic under the interpreter's lock: no lock taken,
    # which the landing thread would hold across its system calls)

    def expect(self, key: str) -> None:
        """The next landing of ``key`` reads the size it replaces (see :meth:`landing`)."""
        self._expected[key] = _UNREAD

    def replaced(self, key: str) -> tuple[bool, int | None]:
        """What the landing of ``key`` read (``False``: it did not land, or read none)."""
        found = self._expected.pop(key, _UNREAD)
        if found is _UNREAD or isinstance(found, _Unread):
            return False, None
        return True, found

    @contextlib.contextmanager
    def landing(self, key: str, dir_fd: int, name: str) -> Iterator[None]:
        """Around a save's rename into place (in its thread, before the key's metadata
        locks): the size the rename replaces, read under the key's disk lock, for a save
        that drew on an allowance without reading it. Its hold took that lock on the
        event loop before it drew (see ``allowance_hold``), so the take here only counts
        one more holder; it is waited for only by a save whose hold was given up."""
        if key not in self._expected or self.refused or _SETLK is None:
            yield
            return
        slot = zlib.crc32(key.encode()) % _SLOTS
        try:
            while not self._take(slot):  # (in a thread: its hold was cancelled)
                time.sleep(0.001)
        except DiskLocksUnavailable:  # refused now: unread, its quotas listed again
            yield
            return
        try:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                size = st.st_size if stat_mod.S_ISREG(st.st_mode) else None
            except OSError:
                size = None
            if key in self._expected:  # (its save was not given up meanwhile)
                self._expected[key] = size
            yield
        finally:
            self._give(slot)

    def sizes(self, keys: list[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        root = self._root_now()
        for key in keys:
            # one fstatat: the key's folders resolved by the kernel (a folder linked out
            # of the root is refused by every operation there, which then changes nothing)
            try:
                st = os.stat(key, dir_fd=root, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                out[key] = None
                continue
            except OSError:
                st = None
            if st is not None and stat_mod.S_ISREG(st.st_mode):
                out[key] = st.st_size
                continue
            if st is not None and not stat_mod.S_ISLNK(st.st_mode):
                out[key] = None  # a folder, a FIFO: no object
                continue
            try:  # a link: followed as the backend does (inside the root only)
                found = open_object(self._root, key)
            except (ObjectNotFoundError, StorageError, OSError):
                out[key] = None  # nothing, or a link leading out
                continue
            out[key] = found.st.st_size
            found.close()
        return out


class _Locked:
    """The disk locks of some keys' slots, taken in order (no two processes wait on each
    other): each at once when free, else waited for on the event loop."""

    __slots__ = ("_disk", "_slots", "_taken")

    def __init__(self, disk: LocalDisk, slots: list[int]) -> None:
        self._disk = disk
        self._slots = slots
        self._taken: list[int] = []

    async def __aenter__(self) -> None:
        disk = self._disk
        if disk.refused or _SETLK is None:
            raise DiskLocksUnavailable()
        try:
            for slot in self._slots:
                if not disk._take(slot):
                    backoff = Backoff(0.02)
                    while not disk._take(slot):
                        await backoff.wait()
                self._taken.append(slot)
        except BaseException:
            self._give_all()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._give_all()

    def _give_all(self) -> None:
        taken, self._taken = self._taken, []
        for slot in taken:
            self._disk._give(slot)


_forks.renew(_after_fork_in_child)
