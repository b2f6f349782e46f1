"""The local backend's move: a rename that gives the moved object the move's time.

An object's ``last_modified`` is its file's mtime, and a rename keeps it; memory and the
cloud stores give a moved object the move's time, and expiry rules count an object's age
from it. So a move sets the file's mtime to now through the descriptor it checked
(``futimens``, never the path), under both keys' locks and the write's gate, then renames
it. The sidecar names a file version by its stamp (inode, mtime, size), which the new
mtime changes: the records of the new stamp are written before either key shows it, and a
move that does not land puts the old times back and takes the new records away.

Where the file's time may not change, its bytes are copied to a new file renamed into
place, then the source is removed (a copy, then a delete): a file with other hard links
(their time would change too), versioning on (the source's kept version is another name
of the file, and version ids are looked up by stamp), a file whose times this process may
not set (not its owner). A key that is a symlink moves as a name: its target is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat as stat_mod
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from file_storage._mime import guess_content_type
from file_storage.backends.local import _meta as meta_file
from file_storage.backends.local._cond import etag_of
from file_storage.backends.local._fs import (
    _LINK_ERRNOS,
    O_READ,
    _link_or,
    lexical,
    open_object,
    open_parent,
    refuse_taken,
    remove_empty_parents,
    replace_at,
)
from file_storage.backends.local._io import Gate, copy_fd, tmp_name
from file_storage.backends.local._meta import Meta, key_locks
from file_storage.backends.local._versions import LocalVersions, read_state
from file_storage.errors import ObjectNotFoundError, StorageError

__all__ = ["GROWN", "TRUNCATED", "LocalMoves", "guessed", "tmp_kept"]

TRUNCATED = "the object's file was truncated while it was read (rewritten in place)"
GROWN = "the object's file grew while it was copied (rewritten in place)"

# what a file system that cannot set a file's times answers (ENOTSUP is EOPNOTSUPP on Linux)
_NO_TIMES = {errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}

# the coarsest clock of a file system storing times (FAT: two seconds)
_TICK_NS = 2_000_000_000

# looks at the source again after its folder, or itself, changed under a move: each
# needs another writer's change in between, so a few suffice
_ATTEMPTS = 8


def guessed(src: str, dst: str) -> Meta | None:
    """The record a copy or move of an object stored with ``src``'s default content type
    needs at ``dst`` (``None``: ``dst``'s name defaults to the same type)."""
    content_type = guess_content_type(src)
    return None if guess_content_type(dst) == content_type else Meta(content_type, {})


@contextlib.contextmanager
def tmp_kept(dir_fd: int, tmp: str) -> Iterator[None]:
    """Around a temp file's rename: its folder is held open and not empty, so a missing
    name means the temp file itself was removed (a sweep of another process took it for
    a crashed writer's): say so, never "object not found"."""
    try:
        yield
    except FileNotFoundError:
        try:
            os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise StorageError(
                "the write's temp file was removed before its rename (by another process: "
                "see STORAGE_LOCAL_TEMP_MAX_AGE_SECONDS)"
            ) from None
        raise


class _FolderGone(Exception):
    """The folder a move was renaming into was removed (emptied by a delete) meanwhile."""


class _Again(Exception):
    """The source changed between the move's look and its locks (replaced by a writer,
    linked, versioning turned on): look again; ``copy``: copying its bytes."""

    def __init__(self, *, copy: bool) -> None:
        super().__init__()
        self.copy = copy


@contextlib.contextmanager
def _folder_kept(dir_fd: int) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        if os.fstat(dir_fd).st_nlink == 0:  # a removed folder: made again by a new attempt
            raise _FolderGone from None
        raise


def _is_file(dir_fd: int, name: str, st: os.stat_result) -> bool:
    """True when ``name`` in ``dir_fd`` is, itself (not through a link), the file ``st``."""
    try:
        own = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat_mod.S_ISREG(own.st_mode) and (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _open_entry(dir_fd: int, name: str) -> int | None:
    """A descriptor of the regular file ``name`` itself; ``None``: a symlink (moved as a
    name). A FIFO, socket, folder or nothing there is no object."""
    try:
        fd = os.open(name, O_READ, dir_fd=dir_fd)
    except FileNotFoundError:
        raise ObjectNotFoundError() from None
    except OSError as exc:
        if exc.errno not in (*_LINK_ERRNOS, errno.ENXIO):
            raise
        _link_or(dir_fd, name, create=False)  # ObjectNotFoundError unless a symlink
        return None
    if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ObjectNotFoundError()
    return fd


def _held(dir_fd: int, name: str, fd: int | None) -> os.stat_result:
    """Under the keys' locks: the source's entry is still what the move opened (``fd``,
    ``None``: a link); return its stat. Swapped for a folder or a FIFO by another process,
    or removed: no object; replaced by another file or link: looked at again."""
    try:
        entry = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise ObjectNotFoundError() from None
    if not (stat_mod.S_ISREG(entry.st_mode) or stat_mod.S_ISLNK(entry.st_mode)):
        raise ObjectNotFoundError()
    if fd is None:
        if not stat_mod.S_ISLNK(entry.st_mode):
            raise _Again(copy=False)
        return entry
    st = os.fstat(fd)
    if (entry.st_dev, entry.st_ino) != (st.st_dev, st.st_ino):
        raise _Again(copy=False)
    return st


class _Source(NamedTuple):
    dir_fd: int
    name: str
    where: list[str]
    fd: int | None  # the file itself; None: a symlink
    target: os.stat_result  # what the key leads to (a link's target)


def _refuse_same_entry(source: _Source, dst_fd: int, dst_name: str) -> None:
    """``dst`` must not name the source's own entry (a linked folder leading from one
    key's folder to the other's): a rename onto itself, then the source's removal,
    would lose the object."""
    here, there = os.fstat(source.dir_fd), os.fstat(dst_fd)
    if source.name == dst_name and (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
        raise StorageError(
            "the source and destination are one file (a linked folder leads to the other)"
        )


class LocalMoves(LocalVersions):
    """The move hook's work of :class:`~file_storage.LocalStorageBackend` (in threads)."""

    _durable: bool

    if TYPE_CHECKING:

        def _fsync_dir(self, dir_fd: int) -> None: ...

        def _unmake_folders(self, key: str) -> None: ...

        def _checkpoint_at(self, point: str, gate: Gate) -> None: ...

    def _move_sync(self, gate: Gate, src: str, dst: str) -> str | None:
        """Move ``src`` to ``dst``; return the moved object's ETag (``None``: a link)."""
        copy = read_state(self._dir) != "off"
        for _ in range(_ATTEMPTS):
            try:
                return self._move_once(gate, src, dst, copy=copy)
            except _FolderGone:
                continue
            except _Again as again:
                copy = copy or again.copy
        raise StorageError("the source or destination of the move kept changing meanwhile")

    def _move_once(self, gate: Gate, src: str, dst: str, *, copy: bool) -> str | None:
        found = open_object(self._dir, src)  # the key must lead to an object in the root
        found.close()
        src_fd, src_name, src_where = open_parent(self._dir, src, create=False)
        try:
            fd = _open_entry(src_fd, src_name)
            try:
                source = _Source(src_fd, src_name, src_where, fd, found.st)
                etag: str | None
                if fd is not None and (copy or os.fstat(fd).st_nlink != 1):
                    etag = self._move_copied(gate, src, dst, source)
                else:
                    etag = self._move_renamed(gate, src, dst, source)
            finally:
                if fd is not None:
                    os.close(fd)
        finally:
            os.close(src_fd)
        remove_empty_parents(self._dir, src_where)  # as a delete: no empty folder left
        return etag

    # ------------------------------------------------------------ renamed

    def _move_renamed(self, gate: Gate, src: str, dst: str, source: _Source) -> str | None:
        dst_fd, dst_name, dst_where = open_parent(self._dir, dst, create=True)
        try:
            _refuse_same_entry(source, dst_fd, dst_name)
            refuse_taken(dst_fd, dst_name)
            self._checkpoint_at("rename", gate)
            with key_locks(self._dir, src, dst):
                with gate.lock:
                    gate.check()
                    if source.fd is None:
                        etag = None
                        kept = self._rename_link(src, dst, source, (dst_fd, dst_name, dst_where))
                    else:
                        etag, kept = self._rename_file(src, dst, source, dst_fd, dst_name)
                    gate.landed = True
                if not kept:
                    meta_file.drop(self._dir, dst)
                meta_file.drop(self._dir, src)
            self._checkpoint_at("landed", gate)
            self._fsync_dir(dst_fd)
            if source.where != dst_where:  # the source's name gone: not back after a crash
                self._fsync_dir(source.dir_fd)
        except BaseException:
            if not gate.landed:  # the folders made for dst would block a later key
                remove_empty_parents(self._dir, dst_where)
            raise
        finally:
            os.close(dst_fd)
        return etag

    def _rename_file(
        self, src: str, dst: str, source: _Source, dst_fd: int, dst_name: str
    ) -> tuple[str, bool]:
        """Give the source's file the move's time, then rename it to ``dst`` (locks and
        gate held); return its ETag then, and whether ``dst`` has a record of it."""
        assert source.fd is not None
        st = _held(source.dir_fd, source.name, source.fd)
        if st.st_nlink != 1 or read_state(self._dir) != "off":
            raise _Again(copy=True)  # linked, or versioning turned on, since the look
        meta = meta_file.lookup(self._dir, src, st)
        dst_meta = meta or guessed(src, dst)
        now = time.time_ns()
        recorded: list[tuple[str, str]] = []
        # src's own record: a file system that keeps whole seconds (HFS+, FAT, some
        # network mounts) may give the file the time it has; never forgotten on failure
        recorded_before = (src, meta_file.stamp(st))
        touched = False

        def note(key: str, version: str, meta: Meta) -> None:
            if (key, version) not in (*recorded, recorded_before):
                meta_file.record(self._dir, key, version, meta)
                recorded.append((key, version))

        try:
            if meta is not None:  # a reader of src meanwhile: what it was written with
                note(src, meta_file.stamp_of(st.st_ino, now, st.st_size), meta)
            try:
                os.utime(source.fd, ns=(st.st_atime_ns, now))
            except OSError as exc:
                # not the file's owner, or a file system that sets no times (some FUSE
                # and network mounts): its bytes are copied, as a rename would move them
                if not isinstance(exc, PermissionError) and exc.errno not in _NO_TIMES:
                    raise
                raise _Again(copy=True) from None
            touched = True
            if self._durable:  # its records name the new time: a crash must not undo it
                os.fsync(source.fd)
            moved = os.fstat(source.fd)
            if moved.st_mtime_ns == st.st_mtime_ns and now - st.st_mtime_ns > _TICK_NS:
                # an old file's time kept: a file system that answers a time change but
                # ignores it (some FUSE mounts); renamed, it would expire as it was
                raise _Again(copy=True)
            version = meta_file.stamp(moved)
            if meta is not None:  # a coarser clock than the nanoseconds asked for
                note(src, version, meta)
            if dst_meta is not None:
                note(dst, version, dst_meta)
            with self._keeping(dst, version), self._keeping(src, None):
                if os.fstat(source.fd).st_nlink != 1:
                    # kept as a version of src (versioning turned on meanwhile): copied
                    raise _Again(copy=True)
                with _folder_kept(dst_fd):
                    replace_at(source.name, source.dir_fd, dst_name, dst_fd)
        except BaseException:
            # not moved: the source as it was, its ETag and records included
            if touched:
                with contextlib.suppress(OSError):
                    os.utime(source.fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            for key, version in recorded:
                with contextlib.suppress(OSError):
                    meta_file.forget(self._dir, key, version)
            raise
        return etag_of(moved), dst_meta is not None

    def _rename_link(
        self, src: str, dst: str, source: _Source, at: tuple[int, str, list[str]]
    ) -> bool:
        """Move the symlink ``src`` itself (its target keeps its time); return whether
        ``dst`` has records of the target."""
        dst_fd, dst_name, dst_where = at
        st = _held(source.dir_fd, source.name, None)
        link = os.readlink(source.name, dir_fd=source.dir_fd)
        moved = meta_file.stamp(st)
        with self._keeping(dst, moved), self._keeping(src, None):
            kept = meta_file.copy_versions(self._dir, src, dst)
            guess = guessed(src, dst)
            if guess is not None and meta_file.lookup(self._dir, src, source.target) is None:
                # the type was src's default: dst's name would default to another
                meta_file.record(self._dir, dst, meta_file.stamp(source.target), guess)
                kept = True
            if _is_file(dst_fd, dst_name, source.target):
                # src is a link to dst's very file: renaming would put a link to itself
                # in its place; dst holds the bytes already
                os.unlink(source.name, dir_fd=source.dir_fd)
            elif not link.startswith("/") and source.where != dst_where:
                # its relative target is rewritten so it still names the same object
                # from its new folder
                target = "/".join(lexical(self._dir, source.where, link)) or "."
                relink = posixpath.relpath(target, "/".join(dst_where) or ".")
                tmp = tmp_name()
                with _folder_kept(dst_fd):
                    os.symlink(relink, tmp, dir_fd=dst_fd)
                try:
                    replace_at(tmp, dst_fd, dst_name, dst_fd)
                except BaseException:
                    os.unlink(tmp, dir_fd=dst_fd)
                    raise
                os.unlink(source.name, dir_fd=source.dir_fd)
            else:
                with _folder_kept(dst_fd):
                    replace_at(source.name, source.dir_fd, dst_name, dst_fd)
        return kept

    # ------------------------------------------------------------ copied

    def _move_copied(self, gate: Gate, src: str, dst: str, source: _Source) -> str:
        """Copy the source's bytes to a new file at ``dst``, then remove the source, both
        under the keys' locks once the source is found unchanged."""
        assert source.fd is not None
        st = os.fstat(source.fd)
        # private while the source's bytes are copied in: its mode may not be the umask's
        (dir_fd, tmp, out), name = self._open_tmp(dst, 0o600)
        try:
            try:
                _refuse_same_entry(source, dir_fd, name)
                gate.check()
                copied = copy_fd(source.fd, out, gate)
                if copied != st.st_size:  # the size the quota reserved for dst
                    raise StorageError(TRUNCATED if copied < st.st_size else GROWN)
                # the mode the source had, as a rename keeps it (set-id bits: never ours);
                # a file system without permission bits (FAT) refuses: it has none to keep
                with contextlib.suppress(OSError):
                    os.fchmod(out, stat_mod.S_IMODE(st.st_mode) & 0o777)
                if self._durable:
                    os.fsync(out)
                made = os.fstat(out)
            finally:
                os.close(out)
            version = meta_file.stamp(made)
            self._checkpoint_at("rename", gate)
            with key_locks(self._dir, src, dst):
                with gate.lock:
                    gate.check()
                    if meta_file.stamp(_held(source.dir_fd, source.name, source.fd)) != (
                        meta_file.stamp(st)
                    ):
                        raise _Again(copy=True)  # written in place since it was copied
                    meta = meta_file.lookup(self._dir, src, st) or guessed(src, dst)
                    if meta is not None:
                        meta_file.record(self._dir, dst, version, meta)
                    try:
                        with self._keeping(dst, version), tmp_kept(dir_fd, tmp):
                            replace_at(tmp, dir_fd, name, dir_fd)
                    except BaseException:
                        if meta is not None:
                            meta_file.forget(self._dir, dst, version)
                        raise
                    gate.landed = True
                    unlinked = False
                    try:
                        with self._keeping(src, None):  # kept as a prior version of src
                            os.unlink(source.name, dir_fd=source.dir_fd)
                            unlinked = True
                    except BaseException:
                        # dst is stored, and src still is (unless only the versions'
                        # tidying after its unlink failed: then src is gone)
                        gate.source_kept = not unlinked
                        raise
                if meta is None:
                    meta_file.drop(self._dir, dst)
                meta_file.drop(self._dir, src)
            self._checkpoint_at("landed", gate)
            self._fsync_dir(dir_fd)
            self._fsync_dir(source.dir_fd)  # the source's name gone: not back after a crash
        except BaseException:
            if not gate.landed:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                self._unmake_folders(dst)
            raise
        finally:
            os.close(dir_fd)
        return etag_of(made)
