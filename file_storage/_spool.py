"""The fallback spool: local disk that keeps the writes S3 could not take.

Layout of the spool folder::

    entries/<sha256 of key>.json        one manifest per spooled object: the commit point
    data/<sha256 of key>.<uuid>.data    its bytes; every version gets a new name
    data/*.part                         a write in progress, removed when it fails
    flush.lock                          held (flock) by the process flushing
    keys.lock                           a byte per key, locked (lockf) while a process
                                        writes, deletes or flushes that key
    store                               the bucket and prefix the spool belongs to

A data file is written and fsynced before its manifest is written (to a temp name,
fsynced, renamed): a crash at any moment leaves the previous version or the new one,
never a mix. Replacing an entry writes a new data file, swaps the manifest, then deletes
the old data file. An entry is removed only after the store confirmed the upload, and
only if its manifest still names the data file that was uploaded.

A lock per key orders writes, deletes and flushes of that key, so a flush can never put
an older spooled version over a newer write, nor bring back a key deleted meanwhile. It
is taken in this process (one per folder, not per :class:`Spool`: two backends of one
process on one folder share it, whatever path each reaches it by), then across
processes: a POSIX record lock on one byte of ``keys.lock`` chosen by the key's hash, so
every process on the folder (``uvicorn --workers N`` sharing ``STORAGE_S3_FALLBACK_PATH``)
waits for the others (:mod:`file_storage._spool_keys`: one descriptor of the file per
process, since closing any drops them all). A key is waited for at most ``wait`` seconds:
a holder that hangs alive fails the other operations of that key, typed, not for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeVar

from file_storage._json import parse_json
from file_storage._loops import Backoff
from file_storage._quota._locks import _Held, _KeyLock
from file_storage._spool_keys import (
    busy,
    byte,
    keys_file,
    let_go,
    lock_file,
    refused,
    refuses,
    took,
    unlock_key,
)
from file_storage._spool_records import owner_of, read_record
from file_storage._streams import CHUNK_SIZE
from file_storage.backends import _forks
from file_storage.errors import StorageConfigError
from file_storage.models import ObjectInfo

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: flushes are serialized per process only
    fcntl = None  # type: ignore[assignment]

__all__ = ["Entry", "Spool", "Writer", "intact", "read_range", "unlock"]

logger = logging.getLogger("file_storage.spool")

T = TypeVar("T")

STALE_SECONDS = 24 * 3600  # crash leftovers (.part, unreferenced .data) older than this go

# a folder -> its keys' turns (each dropped when nobody holds or waits); the folder is
# known by its keys.lock (device, inode), or by its real path where there are no record locks
_LOCKS: dict[tuple[int, int] | str, dict[str, _KeyLock]] = {}
# a forked child: a lock its parent held at the fork is released in the parent only
_forks.renew(_LOCKS.clear)

_MAX_WAIT = 0.05  # seconds between two tries of a key another process holds


@dataclass(frozen=True, slots=True)
class Entry:
    """One spooled object: the manifest's content."""

    key: str
    data: str  # the data file's name in data/
    size: int
    sha256: str
    content_type: str
    metadata: dict[str, str]
    spooled_at: datetime

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    def info(self) -> ObjectInfo:
        return ObjectInfo(
            key=self.key,
            size=self.size,
            last_modified=self.spooled_at,
            etag=self.etag,
            content_type=self.content_type,
            metadata=dict(self.metadata),
        )


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Writer:
    """Bytes of one object on their way into the spool, hashed as they are written."""

    def __init__(self, spool: Spool, key: str, content_type: str, metadata: dict[str, str]):
        self.spool = spool
        self.key = key
        self.content_type = content_type
        self.metadata = metadata
        self.part = spool.data_dir / f"{_name(key)}.{uuid.uuid4().hex}.part"
        self.file: IO[bytes] | None = None
        self.hash = hashlib.sha256()
        self.size = 0
        self.broken: OSError | None = None
        # a write still running in its thread after close() (its caller was cancelled)
        # must not create the .part file that close() already removed
        self._opening = threading.Lock()
        self._closed = False

    def _write(self, chunk: bytes) -> None:
        if self.file is None:
            with self._opening:
                if self._closed:
                    raise OSError(errno.ECANCELED, "the spool write was dropped")
                self.spool.data_dir.mkdir(parents=True, exist_ok=True)
                self.file = self.part.open("xb")
        self.file.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._write, chunk)

    async def tee(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass ``source`` through, keeping a copy; a failing local disk only stops the
        copy (a healthy upload must not fail because the spool's disk is full)."""
        async for chunk in source:
            if self.broken is None:
                try:
                    await self.write(chunk)
                except OSError as exc:
                    self.broken = exc
                    logger.warning("fallback spool cannot keep a copy of %r: %s", self.key, exc)
            yield chunk

    async def finish(self, rest: AsyncIterator[bytes] | bytes) -> Entry:
        """Write ``rest`` (what is left of a stream, or all the bytes), then commit."""
        if isinstance(rest, bytes):
            await self.write(rest)
        else:
            async for chunk in rest:
                await self.write(chunk)
        return await asyncio.to_thread(self._commit)

    async def finish_from(self, local_path: Path) -> Entry:
        """Copy the local file ``local_path``, then commit."""

        def copy() -> Entry:
            with local_path.open("rb") as src:
                while chunk := src.read(CHUNK_SIZE):
                    self._write(chunk)
            return self._commit()

        return await asyncio.to_thread(copy)

    def _commit(self) -> Entry:
        if self.file is None:  # an empty object
            self._write(b"")
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        data = self.part.with_suffix(".data")
        os.replace(self.part, data)
        entry = Entry(
            key=self.key,
            data=data.name,
            size=self.size,
            sha256=self.hash.hexdigest(),
            content_type=self.content_type,
            metadata=self.metadata,
            spooled_at=datetime.now(UTC),
        )
        try:
            self.spool.commit_sync(entry)
        except BaseException:
            current = self.spool._load(_name(self.key))
            if current is None or current.data != data.name:  # no manifest names it
                with contextlib.suppress(OSError):
                    data.unlink()
            raise
        return entry

    def close(self) -> None:
        """Drop an uncommitted write (sync: a second cancellation must not skip it)."""
        with self._opening:
            self._closed = True
        if self.file is not None and not self.file.closed:
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


class Spool:
    """The spool folder at ``root`` (created on first write) of the store ``store``.

    Entries name keys, not stores: a backend of another bucket or prefix on the same
    folder would read and upload them as its own. So the folder records its store on
    first use, and a backend of another store refuses it (:class:`StorageConfigError`).
    """

    def __init__(self, root: Path, store: str = "", wait: float | None = None) -> None:
        self.root = root
        self.store = store
        # the longest a key's lock is waited for (``None``: for ever); a holder can hang
        # alive (a stalled worker), and a write must not wait for it for ever
        self.wait = wait
        self._claimed = False
        self.entries_dir = root / "entries"
        self.data_dir = root / "data"
        self._folder = os.path.realpath(root)  # the locks' key: one folder, one set of locks

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # ------------------------------------------------------------ the owner

    def _claim(self, create: bool) -> None:
        marker = self.root / "store"
        try:
            owner = owner_of(marker)
        except FileNotFoundError:
            if not create:  # a read: nothing to claim yet (a folder from before, or none)
                return
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_name(f"store.{uuid.uuid4().hex}.tmp")
            tmp.write_text(self.store, "utf-8")
            try:  # a link appears whole: a reader never sees the name half written
                os.link(tmp, marker)
            except FileExistsError:  # another backend claimed it first
                pass
            except OSError:  # a file system without hard links: create it in place
                with contextlib.suppress(FileExistsError), marker.open("x") as out:
                    out.write(self.store)
            finally:
                tmp.unlink()
            owner = owner_of(marker)
        if owner != self.store:
            raise StorageConfigError(
                "fallback_path is the spool folder of another bucket or prefix: give each "
                "backend its own folder"
            )
        self._claimed = True

    def _read(self, read: Callable[..., T], *args: object) -> T:
        """``read(*args)`` once the folder is known to be this store's, or no store's yet
        (a read claims nothing): the check and the read in one thread hop."""
        if not self._claimed:
            self._claim(False)
        return read(*args)

    # ------------------------------------------------------------ locks

    @contextlib.asynccontextmanager
    async def locked(self, *keys: str) -> AsyncIterator[None]:
        """Hold every key (taken in sorted order: no deadlock) against coroutines of any
        event loop in any thread of this process (one backend serving a threaded worker),
        then against every other process using the folder. Waited for at most
        :attr:`wait` seconds in all, then :class:`StorageUnavailableError`: nothing held."""
        deadline = None if self.wait is None else asyncio.get_running_loop().time() + self.wait
        if not self._claimed:  # before a write: claimed if no store has yet
            await asyncio.to_thread(self._claim, True)
        ordered = sorted(set(keys))
        if fcntl is None:  # not POSIX: ordered in this process only
            held = _Held(_LOCKS.setdefault(self._folder, {}), ordered)
            await self._turn(held, deadline)
            try:
                yield
            finally:
                await held.__aexit__(None, None, None)
            return
        with lock_file("keys.lock"):
            used = keys_file(self.root)
        try:
            # one set of turns per keys.lock: two paths to one folder (a link switched
            # since the other backend was made, a bind mount) share them, as they share
            # the record locks, which never exclude each other within a process
            held = _Held(_LOCKS.setdefault(used.file, {}), ordered)
            await self._turn(held, deadline)
            taken: list[str] = []
            try:
                if refuses(self._folder):
                    yield  # no record locks there: ordered in this process only
                    return
                for key in ordered:  # sorted in every process: none waits on another
                    if await self._lock_key(used.fd, byte(key), deadline):
                        taken.append(key)
                yield
            finally:
                for key in reversed(taken):
                    # a key taken over in this process since (this holder's loop was
                    # closed under it, and its exit runs as it is collected): the
                    # byte, one per process, is the new holder's to unlock
                    if held.holds(key):
                        unlock_key(used.fd, key)
                await held.__aexit__(None, None, None)
        finally:
            let_go(used)

    async def _turn(self, held: _Held, deadline: float | None) -> None:
        """Wait for the keys' turns in this process until ``deadline`` (the loop's time);
        a wait cut short gives back the turns it had (then ``held`` holds nothing)."""
        try:
            async with asyncio.timeout_at(deadline):
                await held.__aenter__()
        except TimeoutError:
            raise busy(self.wait) from None

    async def _lock_key(self, fd: int, offset: int, deadline: float | None = None) -> bool:
        """Take the key's byte, trying again while another process holds it (never a
        thread blocked in ``lockf``: a cancelled wait must not take it later), until
        ``deadline`` (the loop's time). ``False`` when the file system refuses record
        locks (some network mounts): warned once, tried again after a while."""
        assert fcntl is not None
        backoff = Backoff(_MAX_WAIT)
        loop = asyncio.get_running_loop()
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                took(self._folder)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EINTR):
                    refused(self._folder, exc)
                    return False
            await self._waiting_for_key()
            if deadline is not None and loop.time() >= deadline:
                raise busy(self.wait)
            await backoff.wait()

    async def _waiting_for_key(self) -> None:
        """Called each time a key is found held by another process (a hook for tests)."""

    # ------------------------------------------------------------ reading

    def _load(self, name: str) -> Entry | None:
        try:
            raw = parse_json(read_record(self.entries_dir / f"{name}.json"))
            return Entry(
                key=str(raw["key"]),
                data=str(raw["data"]),
                size=int(raw["size"]),
                sha256=str(raw["sha256"]),
                content_type=str(raw["content_type"]),
                metadata={str(k): str(v) for k, v in raw["metadata"].items()},
                spooled_at=datetime.fromisoformat(raw["spooled_at"]),
            )
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValueError, KeyError, TypeError, AttributeError):  # nested too deeply too
            logger.error("fallback spool: unreadable manifest %s.json, skipped", name)
            return None

    async def get(self, key: str) -> Entry | None:
        """The spooled version of ``key``, or ``None``."""
        entry = await asyncio.to_thread(self._read, self._load, _name(key))
        return entry if entry is not None and entry.key == key else None

    def _entries(self, prefix: str) -> list[Entry]:
        try:
            names = [p.stem for p in self.entries_dir.iterdir() if p.suffix == ".json"]
        except FileNotFoundError:
            return []
        found = (self._load(name) for name in names)
        return sorted(
            (e for e in found if e is not None and e.key.startswith(prefix)), key=lambda e: e.key
        )

    async def entries(self, prefix: str = "") -> list[Entry]:
        """Every spooled object under ``prefix``, sorted by key."""
        return await asyncio.to_thread(self._read, self._entries, prefix)

    async def spooled(self, keys: list[str]) -> list[str]:
        """Which of ``keys`` have a spooled version (one directory listing)."""

        def names() -> set[str]:
            try:
                return {p.stem for p in self.entries_dir.iterdir()}
            except FileNotFoundError:
                return set()

        present = await asyncio.to_thread(self._read, names)
        return [key for key in keys if _name(key) in present] if present else []

    def path(self, entry: Entry) -> Path:
        return self.data_dir / entry.data

    async def read(self, key: str) -> bytes | None:
        """The spooled bytes of ``key``; ``None`` when not spooled (or flushed meanwhile)."""
        entry = await self.get(key)
        if entry is None:
            return None
        with contextlib.suppress(FileNotFoundError):
            return await asyncio.to_thread(self.path(entry).read_bytes)
        return None

    async def open(self, key: str) -> tuple[Entry, IO[bytes]] | None:
        """The spooled ``key``'s entry and an open file of exactly that version (readable
        even if a flush removes it, or a newer write replaces it)."""
        entry = await self.get(key)
        if entry is None:
            return None
        with contextlib.suppress(FileNotFoundError):
            return entry, await asyncio.to_thread(self.path(entry).open, "rb")
        return None

    async def copy_to(self, key: str, local_path: Path) -> int | None:
        """Copy the spooled ``key`` to ``local_path``; its size, or ``None`` if not spooled."""
        spooled = await self.open(key)
        if spooled is None:
            return None
        _, src = spooled

        def copy() -> int:
            # a new file (a download's temp file): never one, nor a link, planted there;
            # private until download_file gives it its final mode
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with src, open(os.open(local_path, flags, 0o600), "wb") as out:
                shutil.copyfileobj(src, out, CHUNK_SIZE)
                return out.tell()

        return await asyncio.to_thread(copy)

    # ------------------------------------------------------------ writing

    def commit_sync(self, entry: Entry) -> None:
        """Make ``entry`` the spooled version of its key (its data file is in place)."""
        name = _name(entry.key)
        previous = self._load(name)
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.entries_dir / f"{name}.json"
        tmp = manifest.with_name(f"{name}.{uuid.uuid4().hex}.tmp")
        body = dataclasses.asdict(entry) | {"spooled_at": entry.spooled_at.isoformat()}
        try:
            with tmp.open("x", encoding="utf-8") as out:
                json.dump(body, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, manifest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self.data_dir)
        _fsync_dir(self.entries_dir)
        if previous is not None and previous.data != entry.data:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / previous.data).unlink()

    @contextlib.asynccontextmanager
    async def writer(
        self, key: str, content_type: str, metadata: dict[str, str]
    ) -> AsyncIterator[Writer]:
        out = Writer(self, key, content_type, metadata)
        try:
            yield out
        finally:
            out.close()

    def _remove(self, entry: Entry) -> bool:
        """Drop ``entry`` if it is still the spooled version of its key."""
        current = self._load(_name(entry.key))
        if current is None or current.data != entry.data:
            return False
        (self.entries_dir / f"{_name(entry.key)}.json").unlink()
        with contextlib.suppress(FileNotFoundError):
            self.path(entry).unlink()
        return True

    async def remove(self, entry: Entry) -> bool:
        """Drop ``entry`` if it is still the spooled version of its key."""
        return await asyncio.to_thread(self._remove, entry)

    async def discard(self, key: str) -> None:
        """Forget the spooled version of ``key``: the store has a newer one (lock held)."""
        entry = await self.get(key)
        if entry is not None:
            await asyncio.to_thread(self._remove, entry)

    # ------------------------------------------------------------ flushing

    def try_flush_lock(self) -> int | None:
        """Take the cross-process flush lock without waiting; its fd, or ``None`` if busy."""
        if not self._claimed:
            self._claim(create=True)
        # never through a link planted in its place: O_CREAT would make its target
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
        with lock_file("flush.lock"):
            fd = os.open(self.root / "flush.lock", flags, 0o600)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
        return fd

    def sweep(self) -> None:
        """Remove what crashes left: old .part, data no manifest names, manifest temps."""
        named = {entry.data for entry in self._entries("")}
        cutoff = time.time() - STALE_SECONDS
        for folder in (self.data_dir, self.entries_dir):
            with contextlib.suppress(FileNotFoundError):
                for path in folder.iterdir():
                    if path.suffix == ".json" or path.name in named:
                        continue
                    if path.stat().st_mtime < cutoff:
                        path.unlink(missing_ok=True)
                        logger.info("fallback spool: removed leftover %s", path.name)


async def read_range(
    src: IO[bytes], start: int, end: int | None, chunk_size: int
) -> AsyncIterator[bytes]:
    """Yield bytes ``[start, end)`` of the open file ``src``, then close it."""
    try:
        await asyncio.to_thread(src.seek, start)
        left = None if end is None else end - start
        while left is None or left > 0:
            size = chunk_size if left is None else min(chunk_size, left)
            chunk = await asyncio.to_thread(src.read, size)
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
    finally:
        src.close()


def intact(path: Path, entry: Entry) -> bool:
    """True when the data file still has the bytes the manifest describes."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as src:
            while chunk := src.read(CHUNK_SIZE):
                digest.update(chunk)
    except FileNotFoundError:
        return False
    return digest.hexdigest() == entry.sha256


def unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
