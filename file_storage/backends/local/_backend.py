"""The local-disk backend: key ``k`` lives at ``<root>/k``.

Writes go to a temp file in the destination folder and are renamed into place, so an
error or a crash never leaves a partial object. Content type and metadata that cannot
be derived from the key live in a sidecar folder whose name holds a backslash, which no
key may contain: listings never show it and no key can collide with it. Each sidecar
entry names the file version it describes, so a reader never pairs one write's bytes
with another write's content type (``local._meta``).

Nothing is read or written outside the root, even while someone renames entries under
it: every operation goes through directory descriptors, one path segment at a time, with
``O_NOFOLLOW`` (``openat``, ``mkdirat``, ``renameat``, ``unlinkat``, ``fstatat``; Linux
and macOS both have them). Symlinks that stay inside the root are followed explicitly,
each target walked again the same way; one leading out is refused (``local._fs``).

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
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr

from file_storage._settings_common import check_base_url, checked
from file_storage._streams import Progress
from file_storage.backends._pages import Entry
from file_storage.backends._router_signed import RouterSigned
from file_storage.backends._support import temp_folder, thread_ended
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.backends.local._files import TRUNCATED, LocalFiles
from file_storage.backends.local._fs import (
    O_NEW,
    Found,
    Root,
    open_object,
)
from file_storage.backends.local._io import (
    IO_BATCH,
    READ_BATCH,
    SMALL_CHUNK,
    TMP_MARK,
    Gate,
    copy_fd,
    discard_tmp,
    gated,
    in_pool,
    io_pool,
    read_batch,
    write_all,
)
from file_storage.backends.local._pages import local_entries
from file_storage.backends.local._place import fs_place
from file_storage.backends.local._rules import LocalRules
from file_storage.backends.local._walk import TmpSeen, Walk, sweep_meta, tmp_watcher
from file_storage.errors import (
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from file_storage.models import ObjectInfo

__all__ = ["LocalStorageBackend"]

# A backslash is banned from keys, so this can never be (part of) a key.
CHECK_MARK = ".file_storage\\check-"

logger = logging.getLogger("file_storage")
T = TypeVar("T")


class LocalStorageBackend(RouterSigned, LocalFiles):
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

    _draws_allowances = True

    _streams_conditional_writes = True  # checked at the temp file's rename

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
        if "\x00" in os.fspath(root):  # no file system call takes it: say so now
            raise StorageConfigError("root: must not contain a NUL character")
        self._root = Path(root).expanduser().absolute()
        super().__init__(
            max_size_bytes=max_size_bytes,
            quota_refresh_seconds=quota_refresh_seconds,
            quota_redis_url=quota_redis_url,
            quota_redis_namespace=quota_redis_namespace,
            quota_lease_seconds=quota_lease_seconds,
            quota_fail_open=quota_fail_open,
            # the folder's real path: processes reaching it through a symlink or ".." share
            # one Redis ledger (and processes behind a symlink since retargeted do not)
            quota_identity=f"local:{os.path.realpath(self._root)}",
            expire_interval_seconds=expire_interval_seconds,
        )
        self._dir = Root(self._root, on_open=self._sweep_in_background, durable=durable)
        attach = getattr(self._quotas, "attach", None)
        if attach is not None:  # the Redis ledger: its processes draw on allowances here
            from file_storage.backends.local._quota_locks import LocalDisk

            self._quota_disk = LocalDisk(self._dir)
            attach(self._quota_disk)
        self._rules = LocalRules(self._dir)
        self._sweeping: concurrent.futures.Future[None] | None = None
        self._set_signing(base_url, signing_key)
        self._public_base_url = checked("public_base_url", check_base_url, public_base_url)
        if isinstance(temp_max_age_seconds, bool) or not (
            isinstance(temp_max_age_seconds, int | float) and temp_max_age_seconds > 0
        ):
            raise StorageConfigError("temp_max_age_seconds must be a number of seconds > 0")
        self._durable = durable
        self._temp_max_age = float(temp_max_age_seconds)

    def _store_place(self) -> str:
        # the folder itself, whatever path reaches it: a symlink, "..", a bind mount (the
        # folder within its file system), its new name when renamed while held open (the
        # quota's identity, its Redis namespace, is the real path when the backend is made)
        folder = self._folder()
        return f"local:{fs_place(folder) or folder}"

    async def _signing_place(self) -> str:
        # the root folder's real path (symlinks resolved), so a URL signed by a backend
        # over another root is refused here. Not _store_place's device number: on NFS,
        # overlay or btrfs it changes with a remount (a reboot, a new pod), which would
        # void every URL still out. Read at each request (a rename is seen at once), on
        # the loop while the root is held open (a readlink in /proc: no thread hop, no
        # wait behind the app's default thread pool), else in a thread
        place = self._dir.held_path()
        if place is None:
            place = await asyncio.to_thread(self._folder)
        return "local:" + place

    def _folder(self) -> str:
        """The root folder's resolved path now (where it went, when renamed while open)."""
        return self._dir.current()

    def __repr__(self) -> str:
        return f"LocalStorageBackend(root={str(self._root)!r})"

    @property
    def root(self) -> Path:
        """The storage folder."""
        return self._root

    async def _sweep(self) -> None:
        await in_pool(self._sweep_sync)

    async def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        # the quota counts objects and the live temp files other processes are writing;
        # stale ones (left by a crash) are removed on the way
        now, foreign = time.time(), list[int]()
        watch = tmp_watcher(self._temp_max_age, now, foreign)
        async for info in self._walk_files(prefix, watch):
            yield info
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
    ) -> str:
        meta = self._meta(key, content_type, metadata, options)
        if isinstance(body, bytes):
            return await gated(self._save_bytes, key, body, meta, options)

        def discard(made: tuple[int, str, int] | None = None) -> None:
            discard_tmp(made or opened)
            self._unmake_folders(key)

        opened, name = await in_pool(self._open_tmp, key, cleanup=lambda r: discard(r[0]))
        fd = opened[2]
        pending: concurrent.futures.Future[None] | None = None
        handed = False
        try:
            # Chunks are gathered into batches written with one writev per thread hop,
            # while the next batch arrives: a hop per 1 MiB chunk costs half the speed.
            # Small chunks are joined as they come: kept one by one, a client sending
            # a byte per packet would make a batch of millions of objects (~40x its size)
            batch: list[bytes | bytearray] = []
            batched = 0
            async for chunk in body:
                if len(chunk) < SMALL_CHUNK:
                    if not batch or not isinstance(batch[-1], bytearray):
                        batch.append(bytearray())
                    batch[-1] += chunk
                else:
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
            return await gated(
                self._complete,
                key,
                opened,
                name,
                None,
                meta,
                options,
                cleanup=discard,
            )
        except BaseException:
            if not handed:
                # the descriptor may close only once no thread writes to it any more:
                # awaited to its end (the loop runs meanwhile), a second cancellation too
                if pending is not None:
                    await thread_ended(pending)
                discard()
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
    ) -> str | None:
        if progress is not None:
            return await super()._upload_file(
                local_path, key, size, content_type, metadata, progress, options
            )
        meta = self._meta(key, content_type, metadata, options)
        return await gated(self._upload_sync, local_path, key, size, meta, options)

    async def _download_file(self, key: str, local_path: Path, progress: Progress | None) -> int:
        if progress is not None:
            return await super()._download_file(key, local_path, progress)

        def copy_out(gate: Gate) -> int:
            found = open_object(self._dir, key)
            try:
                # a new file: never one, nor a link, another user planted at its name;
                # private until download_file gives it its final mode
                with open(os.open(local_path, O_NEW, 0o600), "wb") as out:
                    copy_fd(found.fd, out.fileno(), gate)
                return found.st.st_size
            finally:
                found.close()

        # gated: cancelled, the copy stops at its next batch and is waited for, so the
        # base class removes its temp file after the thread made it, never before
        return await gated(copy_out)

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
            # the size fstat gave: a short read means another program cut the file
            stop = found.st.st_size if end is None else min(end, found.st.st_size)
            per_hop = max(1, min(64, READ_BATCH // chunk_size))
            while offset < stop:
                # several chunks per thread hop: the hop, not the copy, is the cost
                chunks = await in_pool(read_batch, fd, offset, stop, chunk_size, per_hop)
                if not chunks:
                    raise StorageError(TRUNCATED)
                for chunk in chunks:
                    yield chunk
                offset += sum(len(c) for c in chunks)
        finally:
            found.close()

    async def _exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists_sync, key)

    async def _stat(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._stat_sync, key)

    async def _delete(self, key: str) -> None:
        # gated: a caller cancelled before the unlink stops it; one cancelled after it is
        # told so (mark_landed), and the base class stops counting the object
        await gated(self._delete_keys, [key])

    async def _delete_many(self, keys: list[str]) -> None:
        await gated(self._delete_keys, keys)

    async def _delete_expired(self, key: str, listed: ObjectInfo) -> bool:
        if listed.etag is None:  # every listing here carries one; kept for a subclass's
            return await super()._delete_expired(key, listed)
        return await gated(self._delete_version, key, listed.etag)

    async def _delete_prefix(self, prefix: str) -> int:
        def delete_all(gate: Gate) -> int:
            walk = self._walk(prefix, with_stat=False)
            deleted = 0
            try:
                while batch := walk.batch():
                    deleted += self._delete_keys(gate, [key for key, _ in batch])
            finally:
                walk.close()
            return deleted

        return await gated(delete_all)

    def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        return self._walk_files(prefix)

    async def _walk_files(
        self, prefix: str, on_tmp: TmpSeen | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """The objects under ``prefix``, in key order; ``on_tmp`` sees the temp files."""
        walk = await in_pool(Walk, self._dir, prefix, True, on_tmp)
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

    async def _copy(self, src: str, dst: str, options: WriteOptions = PLAIN) -> str:
        return await gated(self._copy_sync, src, dst, options)

    async def _move(self, src: str, dst: str) -> str | None:
        return await gated(self._move_sync, src, dst)

    @contextlib.asynccontextmanager
    async def _local_copy(self, key: str) -> AsyncIterator[Path]:
        # Never a path under the root: the tool opens it later, when someone renaming
        # folders there may have swapped one for a link out. The file this call opened is
        # handed instead, through a private folder: a link to its descriptor where /proc
        # has one (no copy, and that version even if the key is replaced), else a copy.
        found = await in_pool(open_object, self._dir, key, cleanup=Found.close)
        try:
            async with temp_folder("local_copy", key) as tmpdir:
                local = tmpdir / key.rsplit("/", 1)[-1]
                await asyncio.to_thread(_hand_over, found.fd, local)
                yield local
        finally:
            found.close()

    async def _check(self) -> None:
        await asyncio.to_thread(_check_root, self._root)

    async def _aclose(self) -> None:
        sweeping, self._sweeping = self._sweeping, None
        if sweeping is not None and not sweeping.cancel():
            # the sweep walks from the root descriptor: it may not outlive it
            await asyncio.wrap_future(sweeping)
        # operations of this loop still walk from the root's descriptors (in threads that
        # cannot be stopped): closed now, a number reused by another open would send
        # their writes elsewhere. They are closed once the last of them ends
        if self._in_flight.when_idle(self._close_dir):
            return
        if self._in_flight.busy_elsewhere():
            # another thread's loop is walking the root: left open (the root keeps one
            # set of descriptors, reused, never doubled), closed by a later aclose
            return
        self._close_dir()

    def _close_dir(self) -> None:
        self._dir.close()
        if self._quota_disk is not None:
            self._quota_disk.close()  # (the shared quota's lock files: opened again on use)


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
