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
import stat as stat_mod
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

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
from file_storage.backends.local._moves import GROWN, TRUNCATED, LocalMoves, guessed, tmp_kept
from file_storage.backends.local._walk import TmpSeen, Walk, sweep_meta, tmp_watcher
from file_storage.errors import (
    ObjectNotFoundError,
    StorageError,
)
from file_storage.models import ObjectInfo

if TYPE_CHECKING:
    from file_storage.backends.local._quota_locks import LocalDisk

__all__ = ["GROWN", "TRUNCATED", "LocalFiles"]

logger = logging.getLogger("file_storage")


# a folder made for a write can be removed by a delete emptying it before the temp file
# is in it: made again this many times
_FOLDER_ATTEMPTS = 8


def _checkpoint(point: str, gate: Gate) -> None:
    """A no-op the tests replace to act at a precise step of a write ("rename", "landed")."""


class LocalFiles(LocalMoves):
    """The synchronous half of :class:`LocalStorageBackend` (state set by its constructor)."""

    _root: Path
    _dir: Root
    _durable: bool
    #: the Redis ledger's side on this disk (``local._quota_locks``), when it draws there
    _quota_disk: LocalDisk | None = None

    def _quota_landing(self, key: str, dir_fd: int, name: str) -> AbstractContextManager[None]:
        """Around a save's rename into place: what the ledger's allowances read there."""
        disk = self._quota_disk
        return contextlib.nullcontext() if disk is None else disk.landing(key, dir_fd, name)

    _temp_max_age: float
    _sweeping: concurrent.futures.Future[None] | None

    # ------------------------------------------------------------ writes (sync, in threads)

    def _checkpoint_at(self, point: str, gate: Gate) -> None:
        _checkpoint(point, gate)  # looked up at each call: the tests replace it

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
        with self._quota_landing(key, dir_fd, name), key_locks(self._dir, key):
            with gate.lock:
                gate.check()
                if options.if_match is not None:  # exact within this process: see local._cond
                    check_match(self._dir, key, options.if_match)
                meta_file.record(self._dir, key, version, meta)
                try:
                    with self._keeping(key, version), tmp_kept(dir_fd, tmp):
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

    def _open_tmp(self, key: str, mode: int = 0o666) -> tuple[tuple[int, str, int], str]:
        for attempt in range(_FOLDER_ATTEMPTS):
            dir_fd, name, _ = open_parent(self._dir, key, create=True)
            try:
                refuse_taken(dir_fd, name)
                tmp = tmp_name()
                fd = os.open(tmp, O_NEW, mode, dir_fd=dir_fd)
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
            meta = meta_file.lookup(self._dir, src, found.st) or guessed(src, dst)
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

    def _delete_sync(self, key: str, gate: Gate | None = None, etag: str | None = None) -> bool:
        """Delete ``key``; with ``etag`` (an expired object), only the file of that ETag
        (compared under the key's lock, which every write takes: a file renamed there
        since stays) and only in the key's own folder: a folder reached through an
        in-root link (or swapped for one since the listing) holds an object of another
        folder, which that folder's rule judges, never this key's."""
        try:
            dir_fd, name, where = open_parent(self._dir, key, create=False, follow=etag is None)
        except (ObjectNotFoundError, StorageError):
            return False
        try:
            with key_locks(self._dir, key):
                if etag is not None and not self._same_folder(dir_fd, where):
                    return False  # moved away since it was opened: no longer the key's
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISLNK(st.st_mode)):
                        # a folder, or a FIFO, socket or device another process made:
                        # no object (exists says so), so nothing to delete, and what
                        # may be in use elsewhere is left alone (a link is only a name)
                        return False
                    if etag is not None and etag != (
                        # the file unlinked below, in the folder held: the key's path
                        # walked afresh may lead elsewhere (its folder moved meanwhile,
                        # a link left in its place); a link key's object is what it names
                        self._etag(st) if stat_mod.S_ISREG(st.st_mode) else self._etag_now(key)
                    ):
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

    def _same_folder(self, dir_fd: int, where: list[str]) -> bool:
        """Whether the folder ``dir_fd`` is still the one at ``where``, reached with no link."""
        try:
            fd, _ = open_dir(self._dir, where, follow=False)
        except (StorageError, OSError):
            return False
        try:
            held, now = os.fstat(dir_fd), os.fstat(fd)
        finally:
            os.close(fd)
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

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
