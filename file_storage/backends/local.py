"""The local-disk backend: key ``k`` lives at ``<root>/k``.

Writes go to a temp file in the destination folder and are renamed into place, so an
error or a crash never leaves a partial object. Content type and metadata that cannot
be derived from the key live in a sidecar folder whose name holds a backslash, which no
key may contain: listings never show it and no key can collide with it. Every path is
resolved (symlinks included) and must stay inside the root.

Small operations run as one thread hop each (open, write, rename together); streams move
up to 8 MiB per hop (``writev``/``pread`` batches), the next batch overlapping the last.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat as stat_mod
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from file_storage._keys import is_valid_segment
from file_storage._mime import guess_content_type
from file_storage._streams import Progress
from file_storage.backends._local_io import (
    IO_BATCH,
    READ_BATCH,
    TMP_MARK,
    Walk,
    discard_tmp,
    in_pool,
    io_pool,
    read_batch,
    tmp_name,
    write_all,
)
from file_storage.backends.base import Method, StorageBackend
from file_storage.errors import (
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from file_storage.models import ObjectInfo

__all__ = ["LocalStorageBackend"]

# A backslash is banned from keys, so neither of these can ever be (part of) a key.
META_DIR = ".file_storage\\meta"
CHECK_MARK = ".file_storage\\check-"


class LocalStorageBackend(StorageBackend):
    """Stores objects as files under ``root`` (created on first write).

    Args:
        root: the storage folder (settings: ``STORAGE_LOCAL_PATH``).
        max_size_bytes: backend-wide quota in bytes (``STORAGE_LOCAL_MAX_SIZE_GB``).
        quota_refresh_seconds: re-scan quota usage at most this often.
        base_url: where the app mounts ``signed_url_router`` (``STORAGE_LOCAL_BASE_URL``).
        signing_key: HMAC key for presigned URLs (``STORAGE_LOCAL_SIGNING_KEY``).
        durable: ``fsync`` each file and its folder before a write returns (slower;
            survives power loss, not just process crashes).
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
    ) -> None:
        super().__init__(max_size_bytes=max_size_bytes, quota_refresh_seconds=quota_refresh_seconds)
        self._root = Path(root).expanduser().absolute()
        self._real_root: str | None = None
        self._base_url = base_url
        self._signing_key = SecretStr(signing_key) if isinstance(signing_key, str) else signing_key
        self._durable = durable

    def __repr__(self) -> str:
        return f"LocalStorageBackend(root={str(self._root)!r})"

    @property
    def root(self) -> Path:
        """The storage folder."""
        return self._root

    # ------------------------------------------------------------ paths (sync, in threads)

    def _root_dir(self) -> str:
        if self._real_root is None:
            os.makedirs(self._root, exist_ok=True)
            self._real_root = os.path.realpath(self._root)
        return self._real_root

    def _escape(self, path: str) -> str:
        """Resolve a symlink met on the way; refuse one that leads out of the root."""
        real = os.path.realpath(path)
        if not real.startswith(self._root_dir() + os.sep):
            raise StoragePermissionError("the key resolves outside the storage root (symlink)")
        return real

    def _parent(self, key: str, *, create: bool) -> str:
        """The real folder holding ``key``, checked one ``lstat`` per key segment.

        Cheaper than ``realpath`` of the whole absolute path, and it refuses a symlink
        leading out of the root. ``create`` makes missing folders (writes); otherwise a
        missing folder means the object is missing.
        """
        folder = self._root_dir()
        parts = key.split("/")[:-1]
        for i, name in enumerate(parts):
            step = folder + os.sep + name
            try:
                mode = os.lstat(step).st_mode
            except FileNotFoundError:
                if not create:
                    raise ObjectNotFoundError() from None
                rest = os.path.join(folder, *parts[i:])
                self._makedirs(rest)
                return rest
            if stat_mod.S_ISLNK(mode):
                step = self._escape(step)
                mode = os.stat(step).st_mode
            if not stat_mod.S_ISDIR(mode):
                if create:
                    raise StorageError("an object exists where a folder is needed")
                raise ObjectNotFoundError()
            folder = step
        return folder

    def _path(self, key: str) -> str:
        """Where a write of ``key`` lands (parents created); a rename there replaces a link."""
        return self._parent(key, create=True) + os.sep + key.rsplit("/", 1)[-1]

    def _file_path(self, key: str) -> str:
        """The real path of the existing regular file of ``key``."""
        path = self._parent(key, create=False) + os.sep + key.rsplit("/", 1)[-1]
        try:
            mode = os.lstat(path).st_mode
            if stat_mod.S_ISLNK(mode):
                path = self._escape(path)
                mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError() from None
        if not stat_mod.S_ISREG(mode):
            raise ObjectNotFoundError()
        return path

    def _folder(self, prefix: str) -> str | None:
        """The real folder of a prefix (``""`` is the root), or ``None`` when there is none."""
        if not prefix:
            return self._root_dir()
        try:
            return self._parent(prefix + "x", create=False)
        except ObjectNotFoundError:
            return None

    def _meta_path(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return os.path.join(self._root_dir(), META_DIR, digest[:2], digest)

    @staticmethod
    def _makedirs(folder: str) -> None:
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageError("an object exists where a folder is needed") from exc

    def _fsync_dir(self, folder: str) -> None:
        if self._durable:
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _place(self, tmp: str, path: str) -> None:
        """Rename a finished temp file over ``path`` (the atomic step of every write)."""
        try:
            os.replace(tmp, path)
        except IsADirectoryError as exc:
            raise StorageError("a folder exists at this key") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise StorageError("a folder exists at this key") from exc
            raise
        self._fsync_dir(os.path.dirname(path))

    def _remove_empty_parents(self, path: str) -> None:
        root = self._root_dir()
        folder = os.path.dirname(path)
        while folder != root and folder.startswith(root + os.sep):
            try:
                os.rmdir(folder)
            except OSError:
                return
            folder = os.path.dirname(folder)

    # ------------------------------------------------------------ sidecar

    def _write_meta(self, key: str, content_type: str, metadata: dict[str, str]) -> None:
        meta_path = self._meta_path(key)
        if content_type == guess_content_type(key) and not metadata:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(meta_path)
            return
        os.makedirs(os.path.dirname(meta_path), exist_ok=True)
        body = json.dumps({"key": key, "content_type": content_type, "metadata": metadata})
        tmp = meta_path + TMP_MARK + uuid.uuid4().hex
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                out.write(body)
            os.replace(tmp, meta_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _read_meta(self, key: str) -> tuple[str, dict[str, str]]:
        try:
            with open(self._meta_path(key), encoding="utf-8") as src:
                raw = json.load(src)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return guess_content_type(key), {}
        return str(raw["content_type"]), {str(k): str(v) for k, v in raw["metadata"].items()}

    def _move_meta(self, src: str, dst: str, *, keep_src: bool) -> None:
        src_meta = self._meta_path(src)
        dst_meta = self._meta_path(dst)
        if not os.path.exists(src_meta):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dst_meta)
            return
        content_type, metadata = self._read_meta(src)
        self._write_meta(dst, content_type, metadata)
        if not keep_src:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src_meta)

    def _drop_meta(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self._meta_path(key))

    # ------------------------------------------------------------ sync operations

    def _save_bytes(self, key: str, data: bytes, content_type: str, meta: dict[str, str]) -> None:
        path = self._path(key)
        tmp = os.path.join(os.path.dirname(path), tmp_name())
        try:
            with open(tmp, "xb") as out:
                out.write(data)
                if self._durable:
                    out.flush()
                    os.fsync(out.fileno())
            self._place(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._write_meta(key, content_type, meta)

    def _open_tmp(self, key: str) -> tuple[str, str, int]:
        path = self._path(key)
        tmp = os.path.join(os.path.dirname(path), tmp_name())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        return path, tmp, fd

    def _finish(
        self, tmp: str, path: str, key: str, content_type: str, meta: dict[str, str]
    ) -> None:
        if self._durable:
            with open(tmp, "rb+") as out:
                os.fsync(out.fileno())
        self._place(tmp, path)
        self._write_meta(key, content_type, meta)

    def _info(self, key: str, st: os.stat_result, *, full: bool) -> ObjectInfo:
        content_type, metadata = self._read_meta(key) if full else (None, {})
        return ObjectInfo(
            key=key,
            size=st.st_size,
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            etag=f'"{st.st_mtime_ns:x}-{st.st_size:x}"',
            content_type=content_type,
            metadata=metadata,
        )

    def _stat_sync(self, key: str) -> ObjectInfo:
        path = self._file_path(key)
        return self._info(key, os.stat(path), full=True)

    def _open_read(self, key: str) -> int:
        return os.open(self._file_path(key), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def _load_sync(self, key: str) -> bytes:
        with open(self._file_path(key), "rb") as src:
            return src.read()

    def _exists_sync(self, key: str) -> bool:
        try:
            self._file_path(key)
        except (ObjectNotFoundError, StoragePermissionError):
            return False
        return True

    def _delete_sync(self, key: str) -> bool:
        try:
            path = self._parent(key, create=False) + os.sep + key.rsplit("/", 1)[-1]
            if stat_mod.S_ISDIR(os.lstat(path).st_mode):
                return False  # a folder is not an object
            os.unlink(path)  # a symlink is removed itself, never its target
        except (ObjectNotFoundError, FileNotFoundError, NotADirectoryError):
            return False
        self._drop_meta(key)
        self._remove_empty_parents(path)
        return True

    def _copy_sync(self, src: str, dst: str) -> None:
        src_path = self._file_path(src)
        dst_path = self._path(dst)
        tmp = os.path.join(os.path.dirname(dst_path), tmp_name())
        try:
            shutil.copyfile(src_path, tmp)
            self._place(tmp, dst_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._move_meta(src, dst, keep_src=True)

    def _move_sync(self, src: str, dst: str) -> None:
        src_path = self._file_path(src)
        dst_path = self._path(dst)
        self._place(src_path, dst_path)
        self._move_meta(src, dst, keep_src=False)
        self._remove_empty_parents(src_path)

    def _list_dirs_sync(self, prefix: str) -> list[str]:
        folder = self._folder(prefix)
        if folder is None:
            return []
        try:
            with os.scandir(folder) as it:
                return [
                    prefix + e.name
                    for e in it
                    if e.is_dir() and is_valid_segment(e.name) and self._has_file(e.path)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _has_file(self, folder: str) -> bool:
        """True when a valid key lives somewhere below ``folder`` (empty folders are not listed)."""
        return bool(
            Walk(self._root_dir(), os.path.relpath(folder, self._root_dir()) + "/", False).batch(1)
        )

    def _walk(self, prefix: str, *, with_stat: bool) -> Walk:
        root = self._root_dir()
        if prefix:
            self._folder(prefix)  # refuse a prefix that a symlink leads out of the root
        return Walk(root, prefix, with_stat)

    def _delete_keys(self, keys: list[str]) -> int:
        return sum(self._delete_sync(key) for key in keys)

    # ------------------------------------------------------------ hooks

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        if isinstance(body, bytes):
            await asyncio.to_thread(self._save_bytes, key, body, content_type, metadata)
            return
        path, tmp, fd = await in_pool(self._open_tmp, key, cleanup=discard_tmp)
        pending: concurrent.futures.Future[None] | None = None
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
            await asyncio.to_thread(write_all, fd, batch)
            os.close(fd)
            fd = -1
            await asyncio.to_thread(self._finish, tmp, path, key, content_type, metadata)
        except BaseException:
            # sync on purpose: a second cancellation must not skip the clean-up, and the
            # descriptor may close only once no thread writes to it any more
            if pending is not None:
                with contextlib.suppress(BaseException):
                    pending.result()
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def _upload_file(
        self,
        local_path: Path,
        key: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
        progress: Progress | None,
    ) -> None:
        if progress is not None:
            await super()._upload_file(local_path, key, size, content_type, metadata, progress)
            return

        def copy_in() -> None:
            path, tmp, fd = self._open_tmp(key)
            os.close(fd)
            try:
                shutil.copyfile(local_path, tmp)
                copied = os.stat(tmp).st_size
                if copied != size:
                    raise StorageError(f"local file changed size while copying: {copied} of {size}")
                self._finish(tmp, path, key, content_type, metadata)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

        await asyncio.to_thread(copy_in)

    async def _download_file(self, key: str, local_path: Path, progress: Progress | None) -> int:
        if progress is not None:
            return await super()._download_file(key, local_path, progress)

        def copy_out() -> int:
            src = self._file_path(key)
            shutil.copyfile(src, local_path)
            return os.stat(src).st_size

        return await asyncio.to_thread(copy_out)

    async def _load(self, key: str) -> bytes:
        return await asyncio.to_thread(self._load_sync, key)

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        # TODO(#12): open first, fstat the descriptor, compare if_match, stream that inode
        fd = await in_pool(self._open_read, key, cleanup=os.close)
        try:
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
            os.close(fd)

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
            while batch := walk.batch():
                deleted += self._delete_keys([key for key, _ in batch])
            return deleted

        return await asyncio.to_thread(delete_all)

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        walk = await asyncio.to_thread(self._walk, prefix, with_stat=True)
        while batch := await asyncio.to_thread(walk.batch):
            for key, st in batch:
                assert st is not None
                yield self._info(key, st, full=False)

    async def _list_files(self, prefix: str) -> list[str]:
        def list_all() -> list[str]:
            walk = self._walk(prefix, with_stat=False)
            keys: list[str] = []
            while batch := walk.batch():
                keys.extend(key for key, _ in batch)
            return keys

        return await asyncio.to_thread(list_all)

    async def _total_size(self, prefix: str) -> int:
        def total() -> int:
            walk = self._walk(prefix, with_stat=True)
            size = 0
            while batch := walk.batch():
                size += sum(st.st_size for _, st in batch if st is not None)
            return size

        return await asyncio.to_thread(total)

    async def _list_dirs(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list_dirs_sync, prefix)

    async def _copy(self, src: str, dst: str) -> None:
        await asyncio.to_thread(self._copy_sync, src, dst)

    async def _move(self, src: str, dst: str) -> None:
        await asyncio.to_thread(self._move_sync, src, dst)

    @contextlib.asynccontextmanager
    async def _local_copy(self, key: str) -> AsyncIterator[Path]:
        # the object is already a local file: hand it over without copying (read-only)
        yield Path(await asyncio.to_thread(self._file_path, key))

    async def _check(self) -> None:
        await asyncio.to_thread(_check_root, self._root)

    async def _presign(self, key: str, expires_in: int, method: Method) -> str:
        if not self._base_url or self._signing_key is None:
            raise StorageConfigError(
                "the local backend signs URLs only when STORAGE_LOCAL_BASE_URL and "
                "STORAGE_LOCAL_SIGNING_KEY are set (base_url= and signing_key=), and the app "
                "mounts file_storage.fastapi.signed_url_router at that URL"
            )
        from file_storage._signing import sign_url

        return sign_url(
            self._base_url, key, method, expires_in, self._signing_key.get_secret_value()
        )


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
