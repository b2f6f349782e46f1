"""The local-disk backend: key ``k`` lives at ``<root>/k``.

Writes go to a temp file in the destination folder and are renamed into place, so an
error or a crash never leaves a partial object. Content type and metadata that cannot
be derived from the key live in a sidecar folder whose name holds a backslash, which no
key may contain: listings never show it and no key can collide with it. Each sidecar
entry names the file version it describes, so a reader never pairs one write's bytes
with another write's content type (``_local_meta``).

Nothing is read or written outside the root, even while someone renames entries under
it: every operation goes through directory descriptors, one path segment at a time, with
``O_NOFOLLOW`` (``openat``, ``mkdirat``, ``renameat``, ``unlinkat``, ``fstatat``; Linux
and macOS both have them). Symlinks that stay inside the root are followed explicitly,
each target walked again the same way; one leading out is refused (``_local_fs``).

A write cancelled before its rename never lands; one cancelled after it is counted by the
quota (``mark_landed``). Small operations run as one thread hop each; streams move up to
8 MiB per hop (``writev``/``pread`` batches), the next batch overlapping the last.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import logging
import os
import posixpath
import shutil
import stat as stat_mod
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr

from file_storage._keys import is_valid_segment
from file_storage._mime import guess_content_type
from file_storage._post_policy import presign_post
from file_storage._signing import presign
from file_storage._signing import signing_key as wrap_signing_key
from file_storage._streams import Progress
from file_storage.backends import _local_meta as meta_file
from file_storage.backends._core import Method
from file_storage.backends._local_cond import check_match, etag_of, link_new
from file_storage.backends._local_fs import (
    O_NEW,
    Found,
    Root,
    lexical,
    open_dir,
    open_object,
    open_parent,
    refuse_folder,
    remove_empty_parents,
    replace_at,
)
from file_storage.backends._local_io import (
    IO_BATCH,
    READ_BATCH,
    TMP_MARK,
    Gate,
    copy_fd,
    discard_tmp,
    gated,
    in_pool,
    io_pool,
    read_batch,
    tmp_name,
    write_all,
)
from file_storage.backends._local_meta import Meta, key_locks
from file_storage.backends._local_pages import local_entries
from file_storage.backends._local_rules import LocalRules
from file_storage.backends._local_versions import LocalVersions
from file_storage.backends._local_walk import TmpSeen, Walk, sweep_meta, tmp_watcher
from file_storage.backends._pages import Entry
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from file_storage.models import ObjectInfo, PresignedPost

__all__ = ["LocalStorageBackend"]

# A backslash is banned from keys, so this can never be (part of) a key.
CHECK_MARK = ".file_storage\\check-"

logger = logging.getLogger("file_storage")
T = TypeVar("T")


def _checkpoint(point: str, gate: Gate) -> None:
    """A no-op the tests replace to act at a precise step of a write ("rename", "landed")."""


class LocalStorageBackend(LocalVersions):
    """Stores objects as files under ``root`` (created on first write).

    Args:
        root: the storage folder (settings: ``STORAGE_LOCAL_PATH``).
        max_size_bytes: backend-wide quota in bytes (``STORAGE_LOCAL_MAX_SIZE_GB``).
        quota_refresh_seconds: re-scan quota usage at most this often.
        base_url: where the app mounts ``signed_url_router`` (``STORAGE_LOCAL_BASE_URL``).
        signing_key: HMAC key for presigned URLs, at least 32 characters
            (``STORAGE_LOCAL_SIGNING_KEY``).
        durable: ``fsync`` each file and its folder before a write returns (slower;
            survives power loss, not just process crashes).
        temp_max_age_seconds: temp files of other processes older than this are left by
            a crash and removed by quota scans and ``refresh_usage``
            (``STORAGE_LOCAL_TEMP_MAX_AGE_SECONDS``).
        quota_redis_url: keep quotas in this Redis, shared by every process using it
            (``STORAGE_QUOTA_REDIS_URL``, extra ``file_storage[redis]``); ``None``: in
            this process. See the quota guide.
        quota_redis_namespace: prefix of the ledger's Redis keys
            (``STORAGE_QUOTA_REDIS_NAMESPACE``); default derived from ``root``.
        quota_lease_seconds: how long a write's reservation and key locks outlive a
            process that stopped renewing them (``STORAGE_QUOTA_LEASE_SECONDS``).
        quota_fail_open: with Redis unreachable, let writes through uncounted instead
            of failing them (``STORAGE_QUOTA_FAIL_OPEN``).
        expire_interval_seconds: run ``purge_expired`` this often in the background
            (``STORAGE_EXPIRE_INTERVAL_SECONDS``); the rules live in a file under the root.
        public_base_url: where the files are served without a signature, for
            :meth:`get_public_url` (``STORAGE_LOCAL_PUBLIC_BASE_URL``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "./storage",
        *,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
        base_url: str | None = None,
        signing_key: str | SecretStr | None = None,
        durable: bool = False,
        temp_max_age_seconds: float = 3600,
        quota_redis_url: str | SecretStr | None = None,
        quota_redis_namespace: str | None = None,
        quota_lease_seconds: float = 60.0,
        quota_fail_open: bool = False,
        expire_interval_seconds: float | None = None,
        public_base_url: str | None = None,
    ) -> None:
        self._root = Path(root).expanduser().absolute()
        super().__init__(
            max_size_bytes=max_size_bytes,
            quota_refresh_seconds=quota_refresh_seconds,
            quota_redis_url=quota_redis_url,
            quota_redis_namespace=quota_redis_namespace,
            quota_lease_seconds=quota_lease_seconds,
            quota_fail_open=quota_fail_open,
            quota_identity=f"local:{self._root}",
            expire_interval_seconds=expire_interval_seconds,
        )
        self._dir = Root(self._root, on_open=self._sweep_in_background)
        self._rules = LocalRules(self._dir, durable)
        self._sweeping: concurrent.futures.Future[None] | None = None
        self._base_url = base_url
        self._signing_key = wrap_signing_key(signing_key)
        self._public_base_url = public_base_url
        if isinstance(temp_max_age_seconds, bool) or not (
            isinstance(temp_max_age_seconds, int | float) and temp_max_age_seconds > 0
        ):
            raise StorageConfigError("temp_max_age_seconds must be a number of seconds > 0")
        self._durable = durable
        self._temp_max_age = float(temp_max_age_seconds)

    def __repr__(self) -> str:
        return f"LocalStorageBackend(root={str(self._root)!r})"

    @property
    def root(self) -> Path:
        """The storage folder."""
        return self._root

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
    ) -> None:
        """Record the sidecar of the finished temp file, then rename it into place, unless
        the caller was cancelled first."""
        try:
            version = meta_file.stamp(os.fstat(fd))
        finally:
            os.close(fd)
        _checkpoint("rename", gate)
        with key_locks(key):
            with gate.lock:
                gate.check()
                if options.if_match is not None:  # exact within this process: see _local_cond
                    check_match(self._dir, key, options.if_match)
                meta_file.record(self._dir, key, version, meta)
                try:
                    with self._keeping(key, version):
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

    def _complete(
        self,
        gate: Gate,
        key: str,
        opened: tuple[int, str, int],
        name: str,
        fill: Callable[[int], None] | None,
        meta: Meta | None,
        options: WriteOptions = PLAIN,
    ) -> None:
        """Fill the temp file, sync it and land it; it owns (and closes) both descriptors."""
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
            self._land(gate, key, dir_fd, tmp, name, meta, fd, options)
        except BaseException:
            if not gate.landed:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            raise
        finally:
            os.close(dir_fd)

    def _open_tmp(self, key: str) -> tuple[tuple[int, str, int], str]:
        dir_fd, name, _ = open_parent(self._dir, key, create=True)
        try:
            refuse_folder(dir_fd, name)
            tmp = tmp_name()
            fd = os.open(tmp, O_NEW, 0o666, dir_fd=dir_fd)
        except BaseException:
            os.close(dir_fd)
            raise
        return (dir_fd, tmp, fd), name

    def _meta(
        self, key: str, content_type: str, metadata: dict[str, str], options: WriteOptions
    ) -> Meta | None:
        headers = (options.cache_control, options.content_disposition)
        if content_type == guess_content_type(key) and not metadata and headers == (None, None):
            return None
        return Meta(content_type, metadata, *headers)

    def _save_bytes(
        self, gate: Gate, key: str, data: bytes, meta: Meta | None, options: WriteOptions
    ) -> None:
        opened, name = self._open_tmp(key)
        self._complete(gate, key, opened, name, lambda fd: write_all(fd, [data]), meta, options)

    def _upload_sync(
        self,
        gate: Gate,
        local_path: Path,
        key: str,
        size: int,
        meta: Meta | None,
        options: WriteOptions,
    ) -> None:
        src = os.open(local_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:

            def fill(fd: int) -> None:
                copied = copy_fd(src, fd, gate)
                if copied != size:
                    raise StorageError(f"local file changed size while copying: {copied} of {size}")

            opened, name = self._open_tmp(key)
            self._complete(gate, key, opened, name, fill, meta, options)
        finally:
            os.close(src)

    def _copy_sync(self, gate: Gate, src: str, dst: str, options: WriteOptions) -> None:
        found = open_object(self._dir, src)
        try:
            meta = meta_file.lookup(self._dir, src, found.st)
            if options.cache_control or options.content_disposition:
                kept = meta or Meta(guess_content_type(src), {})
                meta = kept._replace(
                    cache_control=options.cache_control or kept.cache_control,
                    content_disposition=options.content_disposition or kept.content_disposition,
                )
            opened, name = self._open_tmp(dst)
            self._complete(
                gate, dst, opened, name, lambda fd: (copy_fd(found.fd, fd, gate), None)[1], meta
            )
        finally:
            found.close()

    def _move_sync(self, gate: Gate, src: str, dst: str) -> None:
        open_object(self._dir, src).close()  # the key must lead to an object in the root
        src_fd, src_name, src_where = open_parent(self._dir, src, create=False)
        try:
            mode = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False).st_mode
            dst_fd, dst_name, dst_where = open_parent(self._dir, dst, create=True)
            try:
                refuse_folder(dst_fd, dst_name)
                link = os.readlink(src_name, dir_fd=src_fd) if stat_mod.S_ISLNK(mode) else None
                _checkpoint("rename", gate)
                moved = meta_file.stamp(os.stat(src_name, dir_fd=src_fd, follow_symlinks=False))
                with key_locks(src, dst):
                    with gate.lock, self._keeping(dst, moved), self._keeping(src, None):
                        gate.check()
                        kept = meta_file.copy_versions(self._dir, src, dst)
                        if link is not None and not link.startswith("/") and src_where != dst_where:
                            # the link itself moves; its relative target is rewritten so it
                            # still names the same object from its new folder
                            target = "/".join(lexical(self._dir, src_where, link)) or "."
                            relink = posixpath.relpath(target, "/".join(dst_where) or ".")
                            tmp = tmp_name()
                            os.symlink(relink, tmp, dir_fd=dst_fd)
                            try:
                                replace_at(tmp, dst_fd, dst_name, dst_fd)
                            except BaseException:
                                os.unlink(tmp, dir_fd=dst_fd)
                                raise
                            os.unlink(src_name, dir_fd=src_fd)
                        else:
                            replace_at(src_name, src_fd, dst_name, dst_fd)
                        gate.landed = True
                    if not kept:
                        meta_file.drop(self._dir, dst)
                    meta_file.drop(self._dir, src)
                _checkpoint("landed", gate)
                self._fsync_dir(dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        remove_empty_parents(self._dir, src_where)

    def _delete_sync(self, key: str) -> bool:
        try:
            dir_fd, name, where = open_parent(self._dir, key, create=False)
        except (ObjectNotFoundError, StorageError):
            return False
        try:
            with key_locks(key):
                try:
                    if stat_mod.S_ISDIR(
                        os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                    ):
                        return False  # a folder is not an object
                    with self._keeping(key, None):
                        os.unlink(name, dir_fd=dir_fd)  # a symlink itself, never its target
                except FileNotFoundError:
                    return False
                meta_file.drop(self._dir, key)
        finally:
            os.close(dir_fd)
        remove_empty_parents(self._dir, where)
        return True

    def _delete_keys(self, keys: list[str]) -> int:
        return sum(self._delete_sync(key) for key in keys)

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
                return src.read()
        finally:
            found.close()

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

    async def _sweep(self) -> None:
        await in_pool(self._sweep_sync)

    async def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        # the quota counts objects and the live temp files other processes are writing;
        # stale ones (left by a crash) are removed on the way
        now, foreign = time.time(), list[int]()
        watch = tmp_watcher(self._temp_max_age, now, foreign)
        walk = await in_pool(Walk, self._dir, prefix, True, watch)
        try:
            while batch := await in_pool(walk.batch):
                for key, st in batch:
                    assert st is not None
                    yield self._info(key, st, None, full=False)
        finally:
            walk.close()
        if not prefix:
            await in_pool(sweep_meta, self._dir, watch)
        async for version in self._version_sizes(prefix):
            yield version  # prior versions: a versioned backend stores them too
        epoch = datetime.fromtimestamp(0, UTC)
        for i, size in enumerate(foreign):
            # a backslash: never a key, so never mistaken for (or replaced by) an object
            yield ObjectInfo(f"{TMP_MARK}{i}", size, epoch, "", None, {})

    # ------------------------------------------------------------ hooks

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> None:
        meta = self._meta(key, content_type, metadata, options)
        if isinstance(body, bytes):
            await gated(self._save_bytes, key, body, meta, options)
            return
        opened, name = await in_pool(self._open_tmp, key, cleanup=lambda r: discard_tmp(r[0]))
        fd = opened[2]
        pending: concurrent.futures.Future[None] | None = None
        handed = False
        try:
            # Chunks are gathered into batches written with one writev per thread hop,
            # while the next batch arrives: a hop per 1 MiB chunk costs half the speed.
            batch: list[bytes] = []
            batched = 0
            async for chunk in body:
                batch.append(chunk)
                batched += len(chunk)
                if batched >= IO_BATCH:
                    if pending is not None:
                        await asyncio.wrap_future(pending)
                    pending = io_pool.submit(write_all, fd, batch)
                    batch, batched = [], 0
            if pending is not None:
                await asyncio.wrap_future(pending)
            pending = None
            await in_pool(write_all, fd, batch)
            handed = True  # from here the worker owns the descriptors and the temp file
            await gated(
                self._complete,
                key,
                opened,
                name,
                None,
                meta,
                options,
                cleanup=lambda: discard_tmp(opened),
            )
        except BaseException:
            if not handed:
                # sync on purpose: a second cancellation must not skip the clean-up, and
                # the descriptor may close only once no thread writes to it any more
                if pending is not None:
                    with contextlib.suppress(BaseException):
                        pending.result()
                discard_tmp(opened)
            raise

    async def _upload_file(
        self,
        local_path: Path,
        key: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
        progress: Progress | None,
        options: WriteOptions = PLAIN,
    ) -> None:
        if progress is not None:
            await super()._upload_file(
                local_path, key, size, content_type, metadata, progress, options
            )
            return
        meta = self._meta(key, content_type, metadata, options)
        await gated(self._upload_sync, local_path, key, size, meta, options)

    async def _download_file(self, key: str, local_path: Path, progress: Progress | None) -> int:
        if progress is not None:
            return await super()._download_file(key, local_path, progress)

        def copy_out() -> int:
            found = open_object(self._dir, key)
            try:
                with open(local_path, "wb") as out:
                    copy_fd(found.fd, out.fileno(), Gate())
                return found.st.st_size
            finally:
                found.close()

        return await asyncio.to_thread(copy_out)

    async def _load(self, key: str) -> bytes:
        return await asyncio.to_thread(self._load_sync, key)

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        # open first and read that descriptor: its inode stays readable even when a write
        # replaces the key meanwhile, so every byte comes from the version fstat describes
        found = await in_pool(open_object, self._dir, key, cleanup=Found.close)
        try:
            if if_match is not None and self._etag(found.st) != if_match:
                raise PreconditionFailedError("the object changed since that ETag")
            fd = found.fd
            offset = start
            per_hop = max(1, min(64, READ_BATCH // chunk_size))
            while end is None or offset < end:
                # several chunks per thread hop: the hop, not the copy, is the cost
                chunks = await in_pool(read_batch, fd, offset, end, chunk_size, per_hop)
                for chunk in chunks:
                    yield chunk
                if len(chunks) < per_hop or len(chunks[-1]) < chunk_size:
                    return
                offset += sum(len(c) for c in chunks)
        finally:
            found.close()

    async def _exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists_sync, key)

    async def _stat(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._stat_sync, key)

    async def _delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete_sync, key)

    async def _delete_many(self, keys: list[str]) -> None:
        await asyncio.to_thread(self._delete_keys, keys)

    async def _delete_prefix(self, prefix: str) -> int:
        def delete_all() -> int:
            walk = self._walk(prefix, with_stat=False)
            deleted = 0
            try:
                while batch := walk.batch():
                    deleted += self._delete_keys([key for key, _ in batch])
            finally:
                walk.close()
            return deleted

        return await asyncio.to_thread(delete_all)

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        walk = await in_pool(Walk, self._dir, prefix, True)
        try:
            while batch := await in_pool(walk.batch):
                for key, st in batch:
                    assert st is not None
                    yield self._info(key, st, None, full=False)
        finally:
            walk.close()

    def _iter_entries(
        self, prefix: str, start_after: str | None, recursive: bool, page_size: int
    ) -> AsyncIterator[Entry]:
        describe = functools.partial(self._info, meta=None, full=False)
        return local_entries(self._dir, describe, prefix, start_after, recursive, page_size)

    async def _list_files(self, prefix: str) -> list[str]:
        def list_all() -> list[str]:
            walk = self._walk(prefix, with_stat=False)
            keys: list[str] = []
            try:
                while batch := walk.batch():
                    keys.extend(key for key, _ in batch)
            finally:
                walk.close()
            return keys

        return await asyncio.to_thread(list_all)

    async def _total_size(self, prefix: str) -> int:
        def total() -> int:
            walk = self._walk(prefix, with_stat=True)
            size = 0
            try:
                while batch := walk.batch():
                    size += sum(st.st_size for _, st in batch if st is not None)
            finally:
                walk.close()
            return size

        return await asyncio.to_thread(total)

    async def _list_dirs(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list_dirs_sync, prefix)

    async def _copy(self, src: str, dst: str, options: WriteOptions = PLAIN) -> None:
        await gated(self._copy_sync, src, dst, options)

    async def _move(self, src: str, dst: str) -> None:
        await gated(self._move_sync, src, dst)

    @contextlib.asynccontextmanager
    async def _local_copy(self, key: str) -> AsyncIterator[Path]:
        # Never a path under the root: the tool opens it later, when someone renaming
        # folders there may have swapped one for a link out. The file this call opened is
        # handed instead, through a private folder: a link to its descriptor where /proc
        # has one (no copy, and that version even if the key is replaced), else a copy.
        found = await in_pool(open_object, self._dir, key, cleanup=Found.close)
        try:
            tmpdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="file_storage-")
            try:
                local = Path(tmpdir, key.rsplit("/", 1)[-1])
                await asyncio.to_thread(_hand_over, found.fd, local)
                yield local
            finally:
                await asyncio.to_thread(shutil.rmtree, tmpdir, True)
        finally:
            found.close()

    async def _check(self) -> None:
        await asyncio.to_thread(_check_root, self._root)

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        return presign(
            self._base_url, self._signing_key, key, method, expires_in, content_type, filename
        )

    async def _presign_post(
        self, key: str, expires_in: int, max_bytes: int | None, content_type: str
    ) -> PresignedPost:
        return presign_post(
            self._base_url, self._signing_key, key, expires_in, max_bytes, content_type
        )

    async def _aclose(self) -> None:
        sweeping, self._sweeping = self._sweeping, None
        if sweeping is not None and not sweeping.cancel():
            # the sweep walks from the root descriptor: it may not outlive it
            await asyncio.wrap_future(sweeping)
        self._dir.close()


def _hand_over(fd: int, local: Path) -> None:
    """Make ``local`` name the file open at ``fd``, for another process too."""
    by_fd = f"/proc/{os.getpid()}/fd/{fd}"
    if os.path.exists(by_fd):  # Linux: opening the link opens that very file
        os.symlink(by_fd, local)
        return
    out = os.open(local, O_NEW, 0o600)
    try:
        copy_fd(fd, out, Gate())
    finally:
        os.close(out)


def _check_root(root: Path) -> None:
    """``root`` is a folder this process can create files in (made when missing)."""
    try:
        os.makedirs(root, exist_ok=True)
        # a real write: os.access() says yes to root on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=CHECK_MARK, dir=root)  # never a key: a backslash
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError) as exc:
        raise StorageConfigError(f"the storage root {str(root)!r} is not a folder") from exc
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
            raise StoragePermissionError(
                f"cannot write in the storage root {str(root)!r} ({exc.strerror})"
            ) from exc
        raise
