"""Path resolution of the local backend through directory descriptors.

Every operation starts from one descriptor of the root and walks the key one segment at a
time with ``O_NOFOLLOW`` and ``dir_fd=``: the kernel never follows a symlink by itself, so
a folder or file swapped for a symlink between two steps makes that step fail instead of
leading out of the root. A symlink met on the way is followed explicitly: its target is
read (``readlink``), resolved lexically against the real folder holding it, refused when
it leaves the root, and walked again segment by segment, at most :data:`MAX_HOPS` links
per operation (a loop is refused like the kernel's ``ELOOP``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from file_storage._small_files import read_regular
from file_storage.backends import _forks
from file_storage.backends.local._io import tmp_name
from file_storage.backends.local._place import open_folder
from file_storage.errors import (
    ObjectConflictError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
)

# POSIX only (Linux, macOS); getattr keeps `import file_storage` working elsewhere
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone put under the root must not hang the thread
O_READ = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | O_CLOEXEC
# a caller's own file (upload_file): its links are the caller's, but a FIFO must not hang
O_LOCAL = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | O_CLOEXEC
MAX_HOPS = 40  # symlinks followed per operation, as Linux's own limit
# errnos open(O_NOFOLLOW) gives for a symlink: Linux/macOS ELOOP, FreeBSD EMLINK; with
# O_DIRECTORY some kernels answer ENOTDIR first
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)


def outside() -> StoragePermissionError:
    return StoragePermissionError("the key resolves outside the storage root (symlink)")


def _deleted(fd: int) -> bool:
    """The folder held open by ``fd`` was removed (its last name gone)."""
    return os.fstat(fd).st_nlink == 0


# every root of this process: a child forked from it gets a lock of its own for each (a
# parent's thread caught holding one, opening the root, never releases it in the child)
_ROOTS: weakref.WeakSet[Root] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for root in list(_ROOTS):
        root._lock = threading.Lock()
        root._forked()


_forks.renew(_after_fork_in_child)


class Root:
    """The root folder's descriptor, opened on first use and again after a fork or close."""

    def __init__(
        self, path: Path, on_open: Callable[[], object] | None = None, *, durable: bool = False
    ) -> None:
        self.path = path
        self.durable = durable  # the backend's own small files are synced too
        self._fd = -1
        self._pid = 0
        self._lock = threading.Lock()
        self._opened_in = 0  # the process that last ran on_open
        self._on_open = on_open  # run once per process, after the first open
        self.prefixes: tuple[str, ...] = ()  # absolute spellings of the root
        self.kept_fds: dict[str, int] = {}  # folders held open while the root is (lock files)
        self._retired: list[int] = []  # of a root folder removed meanwhile
        _ROOTS.add(self)

    def _forked(self) -> None:
        """In a child, at once: its copies of the parent's descriptors are closed. A key's
        ``flock`` belongs to the open folder, which lives on while any copy does: a parent
        killed holding one would leave that key locked for every process as long as a
        child it forked lives, even one that never uses this folder."""
        if self._fd < 0 or self._pid == os.getpid():
            return
        for fd in [self._fd, *self.kept_fds.values(), *self._retired]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fd, self.kept_fds, self._retired = -1, {}, []

    def fd(self) -> int:
        fd = self._fd  # once: another thread may replace it (never closing the old one)
        if fd >= 0 and self._pid == os.getpid() and not _deleted(fd):
            return fd
        with self._lock:
            if self._fd >= 0 and self._pid == os.getpid():
                if not _deleted(self._fd):
                    return self._fd
                # removed under us (rm -rf, made anew at its path): that path again. The
                # old descriptors stay open until close(): another thread may hold them
                self._retired += [self._fd, *self.kept_fds.values()]
                self._fd, self.kept_fds = -1, {}
            if self._fd >= 0:  # inherited across fork: the child's own copy, closed here
                os.close(self._fd)
                self._fd = -1
                self._close_kept()
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | O_CLOEXEC)
            self.prefixes = tuple(dict.fromkeys((os.path.realpath(self.path), str(self.path))))
            self._fd, self._pid = fd, os.getpid()
            first = self._opened_in != self._pid
            self._opened_in = self._pid
        if first and self._on_open is not None:
            self._on_open()
        return fd

    def real(self) -> str:
        self.fd()
        return self.prefixes[0]

    def current(self) -> str:
        """The folder's resolved path now: renamed while held open, its new one."""
        with self._lock:
            held = self._fd >= 0 and self._pid == os.getpid()
            found = open_folder(self._fd) if held else None
        return found or os.path.realpath(self.path)

    def held_path(self) -> str | None:
        """:meth:`current` when it needs no file system call and no wait (the folder held
        open in this process, its lock free): a readlink of ``/proc/self/fd``, which the
        kernel answers from memory. ``None``: ask :meth:`current` in a thread."""
        if not self._lock.acquire(blocking=False):  # another thread is opening it
            return None
        try:
            held = self._fd >= 0 and self._pid == os.getpid()
            return open_folder(self._fd) if held else None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
                self._close_kept()
            self._fd = -1

    def _close_kept(self) -> None:
        kept, self.kept_fds = self.kept_fds, {}
        retired, self._retired = self._retired, []
        for fd in [*kept.values(), *retired]:
            os.close(fd)

    def kept_dir(self, parts: Sequence[str]) -> int:
        """A descriptor of the folder ``parts`` (made when missing, links refused), opened
        once and kept until the root closes: for the key locks' ``flock``."""
        self.fd()  # after a fork: the parent's descriptors are dropped first
        name = "/".join(parts)
        fd = self.kept_fds.get(name)
        if fd is None:
            fd, _ = open_dir(self, parts, create=True, follow=False)
            with self._lock:
                if name in self.kept_fds:  # another thread opened it meanwhile
                    os.close(fd)
                else:
                    self.kept_fds[name] = fd
                fd = self.kept_fds[name]
        return fd


# walks of open_dir(create=True) begun again after a folder on the way was removed under
# them; each needs another caller's rmdir in between, so a few suffice
_MAX_RESTARTS = 64


class Hops:
    """Symlinks followed so far by one operation."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def take(self) -> None:
        self.count += 1
        if self.count > MAX_HOPS:
            raise StorageError(f"the key passes more than {MAX_HOPS} symbolic links (a loop)")


def lexical(root: Root, where: Sequence[str], target: str) -> list[str]:
    """The in-root segments a link at folder ``where`` pointing to ``target`` names."""
    if target.startswith("/"):
        for prefix in root.prefixes:
            if target == prefix or target.startswith(prefix.rstrip("/") + "/"):
                base: list[str] = []
                rest = target[len(prefix) :]
                break
        else:
            raise outside()
    else:
        base, rest = list(where), target
    for seg in rest.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not base:
                raise outside()
            base.pop()
        elif "\\" in seg:  # the sidecar folder and temp files are never reached by a key
            raise StoragePermissionError("a symlink leads into the backend's own files")
        else:
            base.append(seg)
    return base


def _link_or(fd: int, name: str, create: bool) -> bool:
    """After a refused open: True when ``name`` is a symlink; else raise what it means."""
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        raise ObjectNotFoundError() from None
    if stat_mod.S_ISLNK(mode):
        return True
    if create:
        raise ObjectConflictError("an object exists where a folder is needed")
    raise ObjectNotFoundError()


def open_dir(
    root: Root,
    parts: Sequence[str],
    *,
    create: bool = False,
    follow: bool = True,
    hops: Hops | None = None,
) -> tuple[int, list[str]]:
    """Open the folder ``root/parts...``; return its descriptor (the caller closes it) and
    its real segments. ``create`` makes missing folders; ``follow`` allows in-root links."""
    hops = hops or Hops()
    restarts = 0
    base = root.fd()
    cur, where = base, list[str]()
    todo = list(reversed(parts))
    try:
        while todo:
            name = todo.pop()
            try:
                nxt = os.open(name, O_DIR, dir_fd=cur)
            except FileNotFoundError:
                if not create:
                    raise ObjectNotFoundError() from None
                # made meanwhile, or swapped for a link: the next open tells
                try:
                    os.mkdir(name, 0o777, dir_fd=cur)
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    # the folder we are in was removed meanwhile (emptied, then taken
                    # away by another key's clean-up): walk again from the root
                    if cur == base or restarts >= _MAX_RESTARTS:
                        raise
                    restarts += 1
                    todo.append(name)
                    todo.extend(reversed(where))
                    os.close(cur)
                    cur, where = base, []
                    continue
                todo.append(name)
                continue
            except OSError as exc:
                if exc.errno not in _LINK_ERRNOS or not _link_or(cur, name, create):
                    raise
                if not follow:
                    raise StoragePermissionError("a symlink where none is allowed") from None
                hops.take()
                target = lexical(root, where, os.readlink(name, dir_fd=cur))
                todo.extend(reversed(target))
                if cur != base:
                    os.close(cur)
                cur, where = base, []
                continue
            if cur != base:
                os.close(cur)
            cur = nxt
            where.append(name)
        if cur == base:
            # a new open, not a dup: a dup shares the read position, and two scans of
            # the root at once (listings, the temp-file sweep) would end each other early
            cur = os.open(".", O_DIR, dir_fd=base)
        return cur, where
    except BaseException:
        if cur != base:
            os.close(cur)
        raise


class Found(NamedTuple):
    """An opened object: its descriptor, ``fstat``, and the real folder and name holding it."""

    fd: int
    st: os.stat_result
    dir_fd: int
    name: str
    where: list[str]

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


def open_object(root: Root, key: str) -> Found:
    """Open the regular file of ``key`` for reading, following in-root links explicitly."""
    hops = Hops()
    parts = key.split("/")
    while True:
        dir_fd, where = open_dir(root, parts[:-1], hops=hops)
        name = parts[-1]
        try:
            try:
                fd = os.open(name, O_READ, dir_fd=dir_fd)
            except FileNotFoundError:
                raise ObjectNotFoundError() from None
            except OSError as exc:
                # ENXIO: a socket (or a device without its driver), never an object
                if exc.errno not in (*_LINK_ERRNOS, errno.ENXIO) or not _link_or(
                    dir_fd, name, False
                ):
                    raise
                hops.take()
                parts = lexical(root, where, os.readlink(name, dir_fd=dir_fd))
                if not parts:
                    raise ObjectNotFoundError() from None  # a link to the root folder
                os.close(dir_fd)
                continue
        except BaseException:
            os.close(dir_fd)
            raise
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            os.close(dir_fd)
            raise ObjectNotFoundError()
        return Found(fd, st, dir_fd, name, where)


SMALL_MAX = 16 * 1024 * 1024  # the largest of the backend's own files it reads


def read_small(dir_fd: int, name: str, limit: int = SMALL_MAX) -> bytes | None:
    """The bytes of the backend's own file ``name`` (a sidecar, the rules, a state file);
    ``None`` when no regular file of at most ``limit`` bytes is there: a FIFO, folder
    or device someone put in its place is neither waited on nor read, nor is a huge file
    read into memory. A link is refused (``OSError``) like a missing file's other errors."""
    try:
        fd = os.open(name, O_READ, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket
            return None
        raise
    try:
        return read_regular(fd, limit)
    finally:
        os.close(fd)


def write_small(root: Root, dir_fd: int, name: str, data: bytes) -> None:
    """Replace the backend's own file ``name`` (a record) whole: a temp file renamed over
    it, synced with its folder when the root is durable; no temp file left on failure."""
    tmp = tmp_name(name)
    out = os.open(tmp, O_NEW, 0o666, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            if root.durable:
                os.fsync(out)
        finally:
            os.close(out)
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            # a folder put in place of the record: said as such (not as the key being a
            # folder), and neither it nor what it holds is removed
            raise StorageError(
                f"the backend's own record {name!r} is a folder put there by someone else"
            ) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if root.durable:
        os.fsync(dir_fd)


def open_parent(
    root: Root, key: str, *, create: bool, follow: bool = True
) -> tuple[int, str, list[str]]:
    """The folder holding ``key`` (descriptor, owned by the caller), the key's last segment
    and the folder's real segments. The last segment itself is never followed; ``follow``:
    in-root links on the way are (else a linked folder is a StoragePermissionError)."""
    parts = key.split("/")
    dir_fd, where = open_dir(root, parts[:-1], create=create, follow=follow)
    return dir_fd, parts[-1], where


def remove_empty_parents(root: Root, where: list[str]) -> None:
    """``rmdir`` the folders ``where`` names, deepest first, up to the first that is not empty."""
    for depth in range(len(where), 0, -1):
        try:
            fd, _ = open_dir(root, where[: depth - 1], follow=False)
        except (StorageError, OSError):
            return
        try:
            os.rmdir(where[depth - 1], dir_fd=fd)
        except OSError:
            return
        finally:
            os.close(fd)


def taken(mode: int) -> ObjectConflictError | None:
    """What a write onto an entry of ``mode`` meets: a folder, or a FIFO, socket or device
    (another process's, never an object: a rename would replace it, an open might block),
    is a conflict; a file or a link (itself replaced, never followed) is not."""
    if stat_mod.S_ISDIR(mode):
        return ObjectConflictError("a folder exists at this key")
    if not (stat_mod.S_ISREG(mode) or stat_mod.S_ISLNK(mode)):
        return ObjectConflictError("a FIFO, socket or device (no object) is at this key")
    return None


def refuse_taken(dir_fd: int, name: str) -> None:
    """Raise ObjectConflictError when ``name`` is taken by what a write may not replace."""
    with contextlib.suppress(FileNotFoundError):
        conflict = taken(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        if conflict is not None:
            raise conflict


def replace_at(src: str, src_fd: int, dst: str, dst_fd: int) -> None:
    """Rename ``src`` over ``dst`` (the atomic step of every write); a link at ``dst`` is
    replaced itself, never followed. A special file at ``dst`` is looked for once more
    just before (``rename`` would replace it): one made after that is replaced."""
    refuse_taken(dst_fd, dst)
    try:
        os.replace(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise ObjectConflictError("a folder exists at this key") from exc
        raise
