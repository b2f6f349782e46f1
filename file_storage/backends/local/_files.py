"""The local backend's file-system work, run in the I/O threads.

Every method here is synchronous and goes through directory descriptors (``local._fs``):
writes land a temp file with one ``renameat`` (or a no-replace link for create-only
writes), copies and moves keep the sidecar paired with the file version, and the walks
behind listings and quota scans skip what is not an object. :class:`LocalStorageBackend`
runs them in the I/O pool (``local._io``) from its async hooks.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import posixpath
import stat as stat_mod
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from file_storage._keys import is_valid_segment
from file_storage._mime import guess_content_type
from file_storage.backends._support import check_unchanged, file_version
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.backends.local import _meta as meta_file
from file_storage.backends.local._cond import check_match, etag_of, link_new
from file_storage.backends.local._fs import (
    O_LOCAL,
    O_NEW,
    Found,
    Root,
    lexical,
    open_dir,
    open_object,
    open_parent,
    refuse_taken,
    remove_empty_parents,
    replace_at,
)
from file_storage.backends.local._io import (
    Gate,
    copy_fd,
    io_pool,
    tmp_name,
    write_all,
)
from file_storage.backends.local._meta import Meta, key_locks
from file_storage.backends.local._versions import LocalVersions
from file_storage.backends.local._walk import TmpSeen, Walk, sweep_meta, tmp_watcher
from file_storage.errors import (
    ObjectNotFoundError,
    StorageError,
)
from file_storage.models import ObjectInfo

__all__ = ["LocalFiles"]

logger = logging.getLogger("file_storage")


TRUNCATED = "the object's file was truncated while it was read (rewritten in place)"
GROWN = "the object's file grew while it was copied (rewritten in place)"

# a folder made for a write can be removed by a delete emptying it before the temp file
# is in it: made again this many times
_FOLDER_ATTEMPTS = 8


def _checkpoint(point: str, gate: Gate) -> None:
    """A no-op the tests replace to act at a precise step of a write ("rename", "landed")."""


def _guessed(src: str, dst: str) -> Meta | None:
    """The record a copy or move of an object stored with ``src``'s default content type
    needs at ``dst`` (``None``: ``dst``'s name defaults to the same type)."""
    content_type = guess_content_type(src)
    return None if guess_content_type(dst) == content_type else Meta(content_type, {})


class _FolderGone(Exception):
    """The folder a move was renaming into was removed (emptied by a delete) meanwhile."""


@contextlib.contextmanager
def _folder_kept(dir_fd: int) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        if os.fstat(dir_fd).st_nlink == 0:  # a removed folder: made again by a new attempt
            raise _FolderGone from None
        raise


@contextlib.contextmanager
def _tmp_kept(dir_fd: int, tmp: str) -> Iterator[None]:
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


def _is_file(dir_fd: int, name: str, st: os.stat_result) -> bool:
    """True when ``name`` in ``dir_fd`` is, itself (not through a link), the file ``st``."""
    try:
        own = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat_mod.S_ISREG(own.st_mode) and (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _same_kind(looked: int, now: int) -> bool:
    """The key's entry is still the regular file or link a move looked at."""
    kind = stat_mod.S_IFMT(looked)
    return kind in (stat_mod.S_IFREG, stat_mod.S_IFLNK) and stat_mod.S_IFMT(now) == kind


class LocalFiles(LocalVersions):
    """The synchronous half of :class:`LocalStorageBackend` (state set by its constructor)."""

    _root: Path
    _dir: Root
    _durable: bool
    _temp_max_age: float
    _sweeping: concurrent.futures.Future[None] | None

    # ------------------------------------------------------------ writes (sync, in threads)

    def _fsync_dir(self, dir_fd: int) -> None:
        if self._durable:
            os.fsync(dir_fd)

    def _land(
        self,
        gate: Gate,
        key: str,
        dir_fd: int,
        tmp: str,
        name: str,
        meta: Meta | None,
        fd: int,
        options: WriteOptions,
    ) -> str:
        """Record the sidecar of the finished temp file, then rename it into place, unless
        the caller was cancelled first; return its ETag (a rename keeps what it is made of)."""
        try:
            st = os.fstat(fd)
            version = meta_file.stamp(st)
        finally:
            os.close(fd)
        _checkpoint("rename", gate)
        with key_locks(self._dir, key):
            with gate.lock:
                gate.check()
                if options.if_match is not None:  # exact within this process: see local._cond
                    check_match(self._dir, key, options.if_match)
                meta_file.record(self._dir, key, version, meta)
                try:
                    with self._keeping(key, version), _tmp_kept(dir_fd, tmp):
                        if options.overwrite:
                            replace_at(tmp, dir_fd, name, dir_fd)
                        else:
                            link_new(tmp, dir_fd, name)  # atomic: EEXIST when anything is there
                except BaseException:
                    if meta is not None:
                        meta_file.forget(self._dir, key, version)
                    raise
                gate.landed = True
            if meta is None:
                meta_file.drop(self._dir, key)
        _checkpoint("landed", gate)
        self._fsync_dir(dir_fd)
        return etag_of(st)

    def _complete(
        self,
        gate: Gate,
        key: str,
        opened: tuple[int, str, int],
        name: str,
        fill: Callable[[int], None] | None,
        meta: Meta | None,
        options: WriteOptions = PLAIN,
    ) -> str:
        """Fill the temp file, sync it and land it; it owns (and closes) both descriptors.
        Return the landed file's ETag."""
        dir_fd, tmp, fd = opened
        try:
            try:
                gate.check()
                if fill is not None:
                    fill(fd)
                if self._durable:
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            return self._land(gate, key, dir_fd, tmp, name, meta, fd, options)
        except BaseException:
            if not gate.landed:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                self._unmake_folders(key)
            raise
        finally:
            os.close(dir_fd)

    def _open_tmp(self, key: str) -> tuple[tuple[int, str, int], str]:
        for attempt in range(_FOLDER_ATTEMPTS):
            dir_fd, name, _ = open_parent(self._dir, key, create=True)
            try:
                refuse_taken(dir_fd, name)
                tmp = tmp_name()
                fd = os.open(tmp, O_NEW, 0o666, dir_fd=dir_fd)
            except FileNotFoundError:
                os.close(dir_fd)
                # a delete (or a refused write) emptied the folder and removed it after
                # it was opened: make it again
                if attempt + 1 == _FOLDER_ATTEMPTS:
                    raise
                continue
            except BaseException:
                os.close(dir_fd)
                self._unmake_folders(key)  # made for it: they would block a later key
                raise
            return (dir_fd, tmp, fd), name
        raise AssertionError("unreachable")

    def _unmake_folders(self, key: str) -> None:
        """After a write that did not land: remove the folders of ``key`` left empty, so
        none blocks a later object of that name (they are not objects, and never listed)."""
        remove_empty_parents(self._dir, key.split("/")[:-1])

    def _meta(
        self, key: str, content_type: str, metadata: dict[str, str], options: WriteOptions
    ) -> Meta | None:
        headers = (options.cache_control, options.content_disposition)
        if content_type == guess_content_type(key) and not metadata and headers == (None, None):
            return None
        return Meta(content_type, metadata, *headers)

    def _save_bytes(
        self, gate: Gate, key: str, data: bytes, meta: Meta | None, options: WriteOptions
    ) -> str:
        opened, name = self._open_tmp(key)
        return self._complete(
            gate, key, opened, name, lambda fd: write_all(fd, [data]), meta, options
        )

    def _upload_sync(
        self,
        gate: Gate,
        local_path: Path,
        key: str,
        size: int,
        meta: Meta | None,
        options: WriteOptions,
    ) -> str:
        src = os.open(local_path, O_LOCAL)  # swapped for a FIFO since upload_file looked
        try:
            if not stat_mod.S_ISREG(os.fstat(src).st_mode):
                raise ObjectNotFoundError(f"local file {local_path.name!r} is not a regular file")
            version = file_version(src)

            def fill(fd: int) -> None:
                copied = copy_fd(src, fd, gate)
                if copied != size:
                    raise StorageError(f"local file changed size while copying: {copied} of {size}")
                # written in place meanwhile: the copy holds two versions of it
                check_unchanged(src, version)

            opened, name = self._open_tmp(key)
            return self._complete(gate, key, opened, name, fill, meta, options)
        finally:
            os.close(src)

    def _copy_sync(self, gate: Gate, src: str, dst: str, options: WriteOptions) -> str:
        found = open_object(self._dir, src)
        try:
            meta = meta_file.lookup(self._dir, src, found.st) or _guessed(src, dst)
            if options.cache_control or options.content_disposition:
                kept = meta or Meta(guess_content_type(src), {})
                meta = kept._replace(
                    cache_control=options.cache_control or kept.cache_control,
                    content_disposition=options.content_disposition or kept.content_disposition,
                )

            def fill(fd: int) -> None:
                copied = copy_fd(found.fd, fd, gate)
                if copied != found.st.st_size:  # the size the quota reserved for dst
                    raise StorageError(TRUNCATED if copied < found.st.st_size else GROWN)

            opened, name = self._open_tmp(dst)
            return self._complete(gate, dst, opened, name, fill, meta)
        finally:
            found.close()

    def _move_sync(self, gate: Gate, src: str, dst: str) -> str | None:
        for _ in range(_FOLDER_ATTEMPTS):
            with contextlib.suppress(_FolderGone):
                return self._move_once(gate, src, dst)
        raise StorageError("the destination folder kept being removed")

    def _move_once(self, gate: Gate, src: str, dst: str) -> str | None:
        """Rename ``src`` to ``dst``; return the moved file's ETag (``None``: a link)."""
        etag = None
        found = open_object(self._dir, src)  # the key must lead to an object in the root
        found.close()
        src_fd, src_name, src_where = open_parent(self._dir, src, create=False)
        try:
            mode = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False).st_mode
            dst_fd, dst_name, dst_where = open_parent(self._dir, dst, create=True)
            try:
                refuse_taken(dst_fd, dst_name)
                link = os.readlink(src_name, dir_fd=src_fd) if stat_mod.S_ISLNK(mode) else None
                _checkpoint("rename", gate)
                moved = meta_file.stamp(os.stat(src_name, dir_fd=src_fd, follow_symlinks=False))
                with key_locks(self._dir, src, dst):
                    with gate.lock, self._keeping(dst, moved), self._keeping(src, None):
                        gate.check()
                        src_st = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False)
                        if not _same_kind(mode, src_st.st_mode):
                            # swapped since it was looked at (a folder, a FIFO): no object
                            raise ObjectNotFoundError()
                        kept = meta_file.copy_versions(self._dir, src, dst)
                        guessed = _guessed(src, dst)
                        if guessed is not None and meta_file.lookup(self._dir, src, src_st) is None:
                            # the type was src's default: dst's name would default to another
                            meta_file.record(self._dir, dst, moved, guessed)
                            kept = True
                        if _is_file(dst_fd, dst_name, found.st):
                            # src is a link to dst's very file (or a hard link of it):
                            # renaming would put a link to itself in its place (or, for a
                            # hard link, do nothing); dst holds the bytes already
                            os.unlink(src_name, dir_fd=src_fd)
                        elif link and not link.startswith("/") and src_where != dst_where:
                            # the link itself moves; its relative target is rewritten so it
                            # still names the same object from its new folder
                            target = "/".join(lexical(self._dir, src_where, link)) or "."
                            relink = posixpath.relpath(target, "/".join(dst_where) or ".")
                            tmp = tmp_name()
                            with _folder_kept(dst_fd):
                                os.symlink(relink, tmp, dir_fd=dst_fd)
                            try:
                                replace_at(tmp, dst_fd, dst_name, dst_fd)
                            except BaseException:
                                os.unlink(tmp, dir_fd=dst_fd)
                                raise
                            os.unlink(src_name, dir_fd=src_fd)
                        else:
                            with _folder_kept(dst_fd):
                                replace_at(src_name, src_fd, dst_name, dst_fd)
                            if stat_mod.S_ISREG(src_st.st_mode):
                                # a rename keeps inode, mtime and size: dst's ETag now,
                                # which a stat after the lock could find replaced
                                etag = etag_of(src_st)
                        gate.landed = True
                    if not kept:
                        meta_file.drop(self._dir, dst)
                    meta_file.drop(self._dir, src)
                _checkpoint("landed", gate)
                self._fsync_dir(dst_fd)
                if src_where != dst_where:  # the source's name gone: not back after a crash
                    self._fsync_dir(src_fd)
            except BaseException:
                if not gate.landed:  # the folders made for dst would block a later key
                    remove_empty_parents(self._dir, dst_where)
                raise
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        remove_empty_parents(self._dir, src_where)  # as a delete: no empty folder left
        return etag

    def _delete_sync(self, key: str, gate: Gate | None = None, etag: str | None = None) -> bool:
        """Delete ``key``; with ``etag``, only the file of that ETag (compared under the
        key's lock, which every write takes: a file renamed there since stays)."""
        try:
            dir_fd, name, where = open_parent(self._dir, key, create=False)
        except (ObjectNotFoundError, StorageError):
            return False
        try:
            with key_locks(self._dir, key):
                try:
                    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                    if not (stat_mod.S_ISREG(mode) or stat_mod.S_ISLNK(mode)):
                        # a folder, or a FIFO, socket or device another process made:
                        # no object (exists says so), so nothing to delete, and what
                        # may be in use elsewhere is left alone (a link is only a name)
                        return False
                    if etag is not None and self._etag_now(key) != etag:
                        return False  # rewritten since the caller looked
                    with gate.lock if gate else contextlib.nullcontext():
                        if gate is not None:
                            gate.check()  # its caller was cancelled: delete no more
                        with self._keeping(key, None):
                            os.unlink(name, dir_fd=dir_fd)  # a symlink, never its target
                        if gate is not None:
                            gate.landed = True
                except FileNotFoundError:
                    return False
                meta_file.drop(self._dir, key)
            self._fsync_dir(dir_fd)  # durable: the object does not come back after a crash
        finally:
            os.close(dir_fd)
        remove_empty_parents(self._dir, where)
        return True

    def _etag_now(self, key: str) -> str | None:
        """The ETag ``stat`` gives ``key`` now (of what an in-root link names); ``None``:
        no object there."""
        try:
            found = open_object(self._dir, key)
        except StorageError:  # ObjectNotFoundError among them
            return None
        try:
            return self._etag(found.st)
        finally:
            found.close()

    def _delete_keys(self, gate: Gate | None, keys: list[str]) -> int:
        return sum(self._delete_sync(key, gate) for key in keys)

    def _delete_version(self, gate: Gate, key: str, etag: str) -> bool:
        return self._delete_sync(key, gate, etag)

    # ------------------------------------------------------------ reads (sync, in threads)

    _etag = staticmethod(etag_of)

    def _info(self, key: str, st: os.stat_result, meta: Meta | None, *, full: bool) -> ObjectInfo:
        if meta is None:
            meta = Meta(guess_content_type(key), {}) if full else None
        return ObjectInfo(
            key=key,
            size=st.st_size,
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            etag=self._etag(st),
            content_type=None if meta is None else meta.content_type,
            metadata={} if meta is None else meta.metadata,
            cache_control=None if meta is None else meta.cache_control,
            content_disposition=None if meta is None else meta.content_disposition,
        )

    @staticmethod
    def _current(found: Found) -> bool:
        try:
            st = os.stat(found.name, dir_fd=found.dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (found.st.st_dev, found.st.st_ino)

    def _stat_sync(self, key: str) -> ObjectInfo:
        for attempt in range(3):
            found = open_object(self._dir, key)
            try:
                meta = meta_file.lookup(self._dir, key, found.st)
                # no record of this version: right when it is still the key's file; else
                # a newer write replaced it (and its record) meanwhile: read that one
                if meta is None and attempt < 2 and not self._current(found):
                    continue
            finally:
                found.close()
            return self._info(key, found.st, meta, full=True)
        raise AssertionError("unreachable")

    def _load_sync(self, key: str) -> bytes:
        found = open_object(self._dir, key)
        try:
            with open(found.fd, "rb", closefd=False) as src:
                data = src.read(found.st.st_size)  # the version fstat described
        finally:
            found.close()
        if len(data) < found.st.st_size:
            raise StorageError(TRUNCATED)
        return data

    def _exists_sync(self, key: str) -> bool:
        try:
            open_object(self._dir, key).close()
        except StorageError:
            return False
        return True

    def _walk(self, prefix: str, *, with_stat: bool, on_tmp: TmpSeen | None = None) -> Walk:
        return Walk(self._dir, prefix, with_stat, on_tmp)

    def _has_file(self, prefix: str) -> bool:
        """True when a valid key lives somewhere below ``prefix`` (empty folders are not listed)."""
        try:
            walk = self._walk(prefix, with_stat=False)
        except StorageError:
            return False
        try:
            return bool(walk.batch(1))
        finally:
            walk.close()

    def _list_dirs_sync(self, prefix: str) -> list[str]:
        try:
            fd, _ = open_dir(self._dir, prefix.rstrip("/").split("/") if prefix else [])
        except ObjectNotFoundError:
            return []
        try:
            with os.scandir(fd) as it:
                names = [
                    e.name
                    for e in it
                    if is_valid_segment(e.name)
                    and (e.is_symlink() or e.is_dir(follow_symlinks=False))
                ]
        finally:
            os.close(fd)
        return [prefix + name for name in names if self._has_file(prefix + name + "/")]

    def _sweep_sync(self) -> None:
        """Remove the temp files crashed writers of other processes left (older than the
        temp max age) anywhere under the root, the sidecar folder included."""
        watch = tmp_watcher(self._temp_max_age, time.time(), [])
        walk = Walk(self._dir, "", False, watch)
        try:
            while walk.batch():
                pass
        finally:
            walk.close()
        sweep_meta(self._dir, watch)

    def _sweep_in_background(self) -> None:
        # on first use in each process: one walk in the I/O pool, never in the caller's way
        def sweep() -> None:
            try:
                self._sweep_sync()
            except Exception:  # a sweep that fails is retried by refresh_usage
                logger.warning("sweeping stale temp files failed", exc_info=True)

        self._sweeping = io_pool.submit(sweep)
