"""The S3 backend's fallback: writes S3 cannot take after retries go to the local spool.

:class:`Fallback` sits between the backend's hooks and S3. Without a spool it only passes
calls through. With one, ``save``/``upload_file``/``copy`` that fail because S3 is
unavailable (:func:`is_outage`: 5xx, throttling, timeouts, refused or dropped connections,
after botocore's retries) are written to the spool instead, and succeed. Reads look in the
spool first (a spooled version is newer than S3's); listings merge both. A direct write
that reaches S3 drops the key's spooled version, under the key's lock, so a flush can
never put an older spooled version over it. Permission, configuration and caller errors
are never absorbed: they fail fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Literal

from file_storage._loops import LoopLock, Periodic
from file_storage._spool import Entry, Spool, intact, unlock
from file_storage._streams import closing
from file_storage.backends._support import is_caller_error
from file_storage.backends.s3._errors import is_outage
from file_storage.backends.s3._parts import run_bounded
from file_storage.models import ObjectInfo

__all__ = ["Fallback", "Outcome"]

logger = logging.getLogger("file_storage.spool")

Upload = Callable[[Entry, Path], Awaitable[str | None]]
#: what a conditional delete did: ``gone`` (nothing there), ``changed`` (another version)
Outcome = Literal["deleted", "gone", "changed"]
Flush = Callable[[Entry, Path], Awaitable[bool]]  # False: not sent, S3 has a newer object
Send = Callable[[bytes | AsyncIterator[bytes]], Awaitable[str | None]]


def _absorbed(exc: Exception) -> bool:
    return not is_caller_error(exc) and is_outage(exc)


class Fallback:
    """The optional spool behind one backend (``spool=None``: calls pass through)."""

    def __init__(self, spool: Spool | None, flush_interval: float | None) -> None:
        self.spool = spool
        self.flush_interval = flush_interval
        self._flushing = LoopLock()
        self._flusher = Periodic("periodic flush of the fallback spool failed", logger)

    # ------------------------------------------------------------ writes

    async def _spooled(self, exc: Exception, key: str, write: Awaitable[Entry]) -> None:
        """Finish a spool write after S3 failed with ``exc``; if the spool fails too,
        the caller gets the S3 error (the cause) and the log says why nothing was kept."""
        try:
            entry = await write
        except OSError as spool_error:
            logger.error("fallback spool failed too for %r: %s", key, spool_error)
            exc.add_note(f"the fallback spool failed too: {spool_error}")
            raise exc from None  # S3's error is the cause; the spool's is in the note
        logger.warning(
            "S3 unavailable (%s): %r spooled, %d bytes, until flush_spool() uploads it",
            type(exc).__name__,
            key,
            entry.size,
            extra={"operation": "spool", "key": key, "size": entry.size},
        )

    async def save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        send: Send,
    ) -> str | None:
        """``send(body)`` to S3; when S3 is unavailable, spool the body instead. Return
        the ETag S3 answered (``None``: spooled, or not said).

        A stream cannot be read twice: it is copied to the spool while it is sent, so a
        failure even after some parts leaves the whole object on local disk.
        """
        if self.spool is None:
            return await send(body)
        async with self.spool.locked(key), self.spool.writer(key, content_type, metadata) as out:
            try:
                etag = await send(body if isinstance(body, bytes) else out.tee(body))
            except Exception as exc:
                if not _absorbed(exc) or out.broken is not None:
                    raise
                await self._spooled(exc, key, out.finish(body))
                return None
            await self.spool.discard(key)
        return etag

    async def upload_file(
        self,
        key: str,
        local_path: Path,
        content_type: str,
        metadata: dict[str, str],
        send: Callable[[], Awaitable[str | None]],
    ) -> str | None:
        """``send()`` the file to S3; when S3 is unavailable, spool a copy of it. Return
        the ETag S3 answered (``None``: spooled, or not said)."""
        if self.spool is None:
            return await send()
        async with self.spool.locked(key), self.spool.writer(key, content_type, metadata) as out:
            try:
                etag = await send()
            except Exception as exc:
                if not _absorbed(exc):
                    raise
                await self._spooled(exc, key, out.finish_from(local_path))
                return None
            await self.spool.discard(key)
        return etag

    async def copy(
        self,
        src: str,
        dst: str,
        server_copy: Callable[[], Awaitable[str | None]],
        upload: Upload,
    ) -> str | None:
        """Copy within S3, or from the spooled ``src`` (to S3, else to the spool). Return
        the ETag S3 answered (``None``: spooled, or not said)."""
        if self.spool is None:
            return await server_copy()
        spool = self.spool
        async with spool.locked(src, dst):
            entry = await spool.get(src)
            if entry is None:
                etag = await server_copy()
            else:
                try:
                    etag = await upload(dataclasses.replace(entry, key=dst), spool.path(entry))
                except Exception as exc:
                    if not _absorbed(exc):
                        raise
                    async with spool.writer(dst, entry.content_type, entry.metadata) as out:
                        await self._spooled(exc, dst, out.finish_from(spool.path(entry)))
                    return None
            await spool.discard(dst)
        return etag

    async def direct(self, key: str, write: Callable[[], Awaitable[str | None]]) -> str | None:
        """``write()`` straight to S3 (never spooled), then drop the key's spooled
        version, which that write replaced. Return what ``write()`` did (its ETag)."""
        if self.spool is None:
            return await write()
        async with self.spool.locked(key):
            etag = await write()
            await self.spool.discard(key)
        return etag

    async def delete(self, keys: list[str], delete: Callable[[], Awaitable[None]]) -> None:
        """``delete()`` from S3, then drop the spooled versions of ``keys``."""
        if self.spool is None:
            await delete()
            return
        spooled = await self.spool.spooled(keys)
        async with self.spool.locked(*spooled):
            await delete()
            for key in spooled:
                await self.spool.discard(key)

    async def delete_unchanged(
        self,
        key: str,
        looked_at: ObjectInfo,
        on_s3: Callable[[], Awaitable[Outcome]],
        under_spooled: Callable[[], Awaitable[Outcome]],
    ) -> Outcome:
        """Delete ``key`` only while it holds ``looked_at``: S3's object (``on_s3()``,
        conditional where the server checks), or the spooled version, which S3's older
        object goes with (``under_spooled()``, conditional on what S3 holds then where
        checked: ``"changed"`` keeps both). Never spooled: S3 unavailable raises, nothing
        deleted, as a condition cannot wait in the spool for a later flush."""
        if self.spool is None:
            return await on_s3()
        async with self.spool.locked(key):  # no write or flush of the key meanwhile
            entry = await self.spool.get(key)
            if entry is None:
                return await on_s3()
            spooled = entry.info()
            if (spooled.etag, spooled.last_modified) != (looked_at.etag, looked_at.last_modified):
                return "changed"  # another spooled version, or S3's looked at before it
            # a direct write to S3 through this spool drops the spooled version under
            # this lock: what S3 holds is older than the spooled version looked at, but a
            # process outside this spool may write S3 meanwhile, and that write stays
            if await under_spooled() == "changed":
                return "changed"
            await self.spool.discard(key)
            return "deleted"

    # ------------------------------------------------------------ reads

    async def get(self, key: str) -> Entry | None:
        return None if self.spool is None else await self.spool.get(key)

    async def read(self, key: str) -> bytes | None:
        return None if self.spool is None else await self.spool.read(key)

    async def open(self, key: str) -> tuple[Entry, IO[bytes]] | None:
        return None if self.spool is None else await self.spool.open(key)

    async def copy_to(self, key: str, local_path: Path) -> int | None:
        return None if self.spool is None else await self.spool.copy_to(key, local_path)

    def merge(self, prefix: str, listing: AsyncIterator[ObjectInfo]) -> AsyncIterator[ObjectInfo]:
        """Merge the spooled objects into S3's sorted listing; a spooled version wins."""
        return listing if self.spool is None else self._merged(self.spool, prefix, listing)

    @staticmethod
    async def _merged(
        spool: Spool, prefix: str, listing: AsyncIterator[ObjectInfo]
    ) -> AsyncIterator[ObjectInfo]:
        spooled = [entry.info() for entry in await spool.entries(prefix)]
        i = 0
        async with closing(listing):
            async for info in listing:
                while i < len(spooled) and spooled[i].key <= info.key:
                    i += 1
                    yield spooled[i - 1]
                if i == 0 or spooled[i - 1].key != info.key:
                    yield info
        for info in spooled[i:]:
            yield info

    async def folders(self, prefix: str) -> set[str]:
        """The immediate sub-folders of ``prefix`` that hold spooled objects."""
        found: set[str] = set()
        for entry in [] if self.spool is None else await self.spool.entries(prefix):
            name, slash, _ = entry.key[len(prefix) :].partition("/")
            if slash:
                found.add(prefix + name)
        return found

    # ------------------------------------------------------------ flushing

    async def flush_key(self, key: str, upload: Flush) -> bool:
        """Upload the spooled ``key`` and drop it; False when there was nothing to send, or
        ``upload`` sent nothing because S3 has a newer object (the entry is dropped too)."""
        if self.spool is None:
            return False
        async with self.spool.locked(key):
            entry = await self.spool.get(key)
            if entry is None:
                return False
            path = self.spool.path(entry)
            if not await asyncio.to_thread(intact, path, entry):
                logger.error("fallback spool: the copy of %r is damaged; kept, not sent", key)
                return False
            sent = await upload(entry, path)
            # only now that S3 has it (or a newer one); a crash before this line only means
            # a re-upload
            removed = await self.spool.remove(entry)
            logger.debug("flushed spooled %r (%d bytes, sent: %s)", key, entry.size, sent)
            return sent and removed

    async def flush(self, upload: Flush, concurrency: int) -> int:
        """Upload every spooled object, in key order, ``concurrency`` at a time."""
        if self.spool is None:
            return 0
        spool = self.spool
        async with self._flushing:  # one flush per loop at a time, one per spool
            lock = await asyncio.to_thread(spool.try_flush_lock)
            if lock is None:
                return 0  # another process is flushing this spool
            try:
                entries = await spool.entries()
                flushed = 0

                async def one(key: str) -> None:
                    nonlocal flushed
                    sent = await self.flush_key(key, upload)  # not "+= await": a lost update
                    flushed += sent

                async def jobs() -> AsyncGenerator[Awaitable[None], None]:
                    for entry in entries:
                        yield one(entry.key)

                await run_bounded(jobs(), concurrency)
                await asyncio.to_thread(spool.sweep)
                return flushed
            finally:
                unlock(lock)  # sync: never blocks, and a second cancel must not skip it

    def start(self, flush: Callable[[], Awaitable[int]]) -> None:
        """Run ``flush`` every ``flush_interval`` seconds in the background (idempotent)."""
        if self.spool is not None and self.flush_interval is not None:
            self._flusher.start(self.flush_interval, flush)

    def forked(self) -> None:
        """In a forked child: the parent's flusher task is not this process's."""
        self._flusher.forked()

    async def stop(self) -> None:
        await self._flusher.stop()
