"""The plumbing every backend shares: error translation, call logging, and the hooks.

:class:`BackendCore` holds what the public methods of :class:`StorageBackend` stand on:
key and prefix checks, ``_translate`` (foreign errors mapped once, chained, logged), the
quota ledger, and the ``_hook`` methods a backend implements. The public methods live in
the mixins ``_reads``, ``_writes``, ``_transfers`` and ``_quotas`` (one concern each),
assembled in :mod:`file_storage.backends.base`; the version hooks' defaults in
:mod:`file_storage.backends._version_hooks`.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Literal, Self, TypedDict

from pydantic import SecretStr

from file_storage._events import EventHub
from file_storage._expiry import Expiry, MemoryRules, RuleStore, same_version
from file_storage._keys import KeyLike, validate_key, validate_prefix
from file_storage._loops import InFlight, SharedLock
from file_storage._quota.ledger import VERSION_SEP, QuotaManager
from file_storage._settings_common import MAX_SECONDS, check_ledger_options
from file_storage._streams import CHUNK_SIZE, Progress
from file_storage.backends import _forks, _pages
from file_storage.backends._support import (
    file_chunks,
    has_landed,
    is_caller_error,
    log_failure,
    map_os_error,
    mark_landed,
    opened,
)
from file_storage.backends._version_hooks import VersionHooks
from file_storage.backends._write_options import PLAIN, WriteOptions, passed
from file_storage.errors import (
    ObjectConflictError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
)
from file_storage.models import ObjectEvent, ObjectInfo

logger = logging.getLogger("file_storage")

Content = bytes | bytearray | memoryview | AsyncIterable[bytes]
# a Mapping's key type is invariant: name the str and path mappings so dict[str, bytes] fits
SaveItems = (
    Mapping[str, Content]
    | Mapping[PurePosixPath, Content]
    | Mapping[KeyLike, Content]
    | Iterable[tuple[KeyLike, Content]]
)
Method = Literal["GET", "PUT"]
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys a request


class CoreArgs(TypedDict, total=False):
    """The keyword arguments of :class:`BackendCore` every backend takes, for a private
    base class (ObstoreBackend) to pass through without listing them again."""

    max_size_bytes: int | None
    quota_refresh_seconds: float | None
    quota_redis_url: str | SecretStr | None
    quota_redis_namespace: str | None
    quota_lease_seconds: float
    quota_fail_open: bool
    expire_interval_seconds: float | None


def _check_quota_args(max_size_bytes: object, refresh_seconds: object, redis_url: object) -> None:
    """The quota arguments every backend takes, checked as the settings check them."""
    if max_size_bytes is not None and (
        isinstance(max_size_bytes, bool)
        or not isinstance(max_size_bytes, int)
        or max_size_bytes < 0
    ):
        raise StorageConfigError("max_size_bytes must be a whole number of bytes >= 0, or None")
    if refresh_seconds is not None and (
        isinstance(refresh_seconds, bool)
        or not isinstance(refresh_seconds, int | float)
        or not 0 <= refresh_seconds < MAX_SECONDS
    ):
        raise StorageConfigError("quota_refresh_seconds must be a number of seconds >= 0, or None")
    if redis_url is not None and not isinstance(redis_url, str | SecretStr):
        raise StorageConfigError("quota_redis_url must be a str or SecretStr")


class _Call:
    """What one public call did, for its log line: bytes moved and requests sent."""

    __slots__ = ("attempts", "size")

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.attempts = 0


_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("file_storage_call")


def count_attempt() -> None:
    """Count one request sent (a retry included) against the public call running now."""
    call = _call.get(None)
    if call is not None:
        call.attempts += 1


class BackendCore(VersionHooks, abc.ABC):
    """The shared state, plumbing and hooks of :class:`StorageBackend` (see there)."""

    #: bytes the backend puts in front of every key (the S3 prefix); keys must leave room
    _key_overhead: int = 0
    #: a write cancelled in flight may still be stored (a request the server had taken):
    #: the quota then counts what the key holds afterwards (see ``Settles._settle``)
    _cancel_may_land: bool = False
    #: a conditional write (``overwrite=False``, ``if_match``) of a stream is checked
    #: without holding the stream whole in memory: ``migrate`` then makes its copies of
    #: any size conditional (else only those of up to 8 MiB)
    _streams_conditional_writes: bool = False
    #: an ETag that looks like an MD5 (32 hex digits) is the MD5 of the bytes: ``migrate``
    #: then checks copies against it (S3 under SSE-KMS: its ETags look like one, are none)
    _md5_etags: bool = True
    #: with a Redis ledger, processes draw on allowances (the backend attaches its disk)
    _draws_allowances: bool = False

    def __init__(
        self,
        *,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
        quota_redis_url: str | SecretStr | None = None,
        quota_redis_namespace: str | None = None,
        quota_lease_seconds: float = 60.0,
        quota_fail_open: bool = False,
        quota_identity: str | None = None,
        expire_interval_seconds: float | None = None,
    ) -> None:
        """``quota_identity``: what the backend stores into (its root, or bucket and
        prefix), from which the default Redis namespace is derived."""
        _check_quota_args(max_size_bytes, quota_refresh_seconds, quota_redis_url)
        check_ledger_options(quota_lease_seconds, quota_redis_namespace)
        self._store_identity = quota_identity
        if quota_redis_url is None:
            self._quotas = QuotaManager(self._usage_scan, quota_refresh_seconds, self._versioning)
        else:
            from file_storage._quota.redis.build import redis_ledger

            self._quotas = redis_ledger(
                self._ledger_scan,
                quota_refresh_seconds,
                url=quota_redis_url,
                namespace=quota_redis_namespace,
                identity=quota_identity or f"{type(self).__name__}:{uuid.uuid4().hex}",
                lease_seconds=quota_lease_seconds,
                fail_open=quota_fail_open,
                probe=self._versioning,
                allowances=self._draws_allowances,
            )
            self._quotas.undo = self._delete
        if max_size_bytes is not None:
            self._quotas.set("", max_size_bytes)
        self._events = EventHub()
        # one key's changes take turns while someone subscribes: a write landing while
        # another's answer is on its way is announced after it, as it landed
        self._quotas.ordered = self._events.__bool__
        self._in_flight = InFlight()
        # set_versioning calls take turns: the ledger ends in the state the store ends in
        self._versioning_lock = SharedLock()
        _forks.track(self)  # calls _forked() in a forked child
        self._expiry = Expiry(expire_interval_seconds)
        #: where the expiry rules live; a backend with a place of its own replaces it
        self._rules: RuleStore = MemoryRules()

    def _forked(self) -> None:
        """Make anew, in a child forked from this process, what the parent's threads and
        loops held; a backend holding more (locks, clients) extends it."""
        # a set_versioning turn of the parent's, caught mid-way, never ends in the child
        self._versioning_lock = SharedLock()
        # the parent's background purge runs in the parent's loop, never here
        self._expiry.forked()
        self._events.forked()

    @property
    def max_size_bytes(self) -> int | None:
        """The backend-wide quota in bytes, or ``None``."""
        return self._quotas.limit("")

    def _key(self, path: KeyLike, operation: str) -> str:
        return validate_key(path, operation, reserved_bytes=self._key_overhead)

    def _prefix(self, prefix: KeyLike, operation: str) -> str:
        return validate_prefix(prefix, operation, reserved_bytes=self._key_overhead)

    def _map_error(self, exc: Exception, operation: str, key: str | None) -> StorageError | None:
        """Turn a foreign exception into a StorageError (``None``: let it through, a bug)."""
        if isinstance(exc, OSError):
            return map_os_error(exc, operation, key)
        return None

    def _not_found(self, exc: BaseException) -> bool:
        """Whether ``exc`` says there is no object at the key: ours, or what a hook raised
        (botocore's 404 to a HEAD, obstore's not-found, the disk's FileNotFoundError).

        The one test of "missing" for code that calls hooks directly (and so sees the
        SDK's errors untranslated): settling a write or delete whose answer was lost,
        listing versions, purging expired objects.
        """
        if isinstance(exc, ObjectNotFoundError):
            return True
        if not isinstance(exc, Exception) or isinstance(exc, StorageError):
            return False
        if is_caller_error(exc):
            return False
        return isinstance(self._map_error(exc, "", None), ObjectNotFoundError)

    @contextlib.contextmanager
    def _translate(
        self,
        operation: str,
        key: str | None,
        size: int | None = None,
        *,
        conflict_key: str | None = None,
    ) -> Iterator[_Call]:
        """Translate foreign errors, give every error its operation and key, and log.

        ``conflict_key``: the key an :class:`ObjectConflictError` is about when the hook
        did not say (a copy's or move's destination).
        """
        if self._expiry.interval is not None and not self._rules.applies_itself:
            self._expiry.start(self._purge_expired_now)  # lazily, in each loop that uses us
        started = time.perf_counter()
        call = _Call(size)
        token = _call.set(call)
        end = self._in_flight.enter()  # aclose closes clients only once it is over
        try:
            yield call
        except StorageError as exc:
            if not exc.operation:
                exc.operation = operation
            if exc.key is None:
                exc.key = conflict_key if isinstance(exc, ObjectConflictError) else None
                exc.key = exc.key or key
            log_failure(operation, key, exc, started)
            raise
        except Exception as exc:
            if is_caller_error(exc):
                raise
            mapped = self._map_error(exc, operation, key)
            if mapped is None:
                raise
            if not mapped.operation:
                mapped.operation = operation
            if mapped.key is None:
                mapped.key = conflict_key if isinstance(mapped, ObjectConflictError) else None
                mapped.key = mapped.key or key
            log_failure(operation, key, mapped, started)
            raise mapped from exc
        finally:
            end()
            with contextlib.suppress(ValueError):  # a generator resumed in another context
                _call.reset(token)
        if logger.isEnabledFor(logging.DEBUG):
            duration = time.perf_counter() - started
            logger.debug(
                "%s %r done in %.1f ms%s%s",
                operation,
                key,
                duration * 1000,
                "" if call.size is None else f", {call.size} bytes",
                f", {call.attempts} requests" if call.attempts else "",
                extra={
                    "operation": operation,
                    "key": key,
                    "size": call.size,
                    "duration": duration,
                    "attempts": call.attempts,
                },
            )

    async def aclose(self) -> None:
        """Release connections and clients. The backend may be used again afterwards."""
        await self._expiry.stop()
        await self._events.drain()
        try:
            await self._aclose()
        finally:
            await self._quotas.aclose()

    async def _created(self, key: str, size: int | None) -> ObjectEvent | None:
        """The event of a write that landed at ``key`` (``None``: nobody subscribed).

        Its size and ETag come from one stat right after the write (a HEAD on S3, made only
        while someone subscribes); if that fails, the write's own size and no ETag.
        """
        if not self._events:
            return None
        etag = None
        try:
            info = await self._stat(key)
        except Exception as exc:
            if not isinstance(exc, StorageError) and self._map_error(exc, "stat", key) is None:
                raise  # a bug, not a failed request
            logger.debug("no ETag for the event of %r: %s", key, type(exc).__name__)
        else:
            size, etag = info.size, info.etag
        return ObjectEvent("created", key, size, etag)

    async def _purge_expired_now(self) -> int:
        """``purge_expired()``, run by the background interval (the Lifecycle mixin's)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> str | None:
        """Store ``body`` at ``key`` atomically: on any error nothing new is visible.

        ``options``: the write's condition, checked atomically with the write
        (:class:`PreconditionFailedError` when it does not hold), and the headers to store.
        Return the stored object's ETag, or ``None`` when the store did not tell (events
        and the router's answers then stat for it). So may ``_copy`` and ``_move``.
        """

    @abc.abstractmethod
    async def _load(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` (``end`` may pass the size), chunks <= ``chunk_size``.

        With ``if_match``, every byte comes from the version with that ETag, or
        :class:`PreconditionFailedError` is raised before the first chunk.
        """

    @abc.abstractmethod
    async def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def _stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Yield the objects strictly under ``prefix`` (``""`` or ending in ``/``), sorted."""

    @abc.abstractmethod
    async def _list_dirs(self, prefix: str) -> list[str]: ...

    @abc.abstractmethod
    async def _copy(self, src: str, dst: str, options: WriteOptions = PLAIN) -> str | None:
        """Copy ``src`` to ``dst`` with its type, metadata and headers; a header set in
        ``options`` replaces the source's."""

    def _iter_entries(
        self, prefix: str, start_after: str | None, recursive: bool, page_size: int
    ) -> AsyncIterator[_pages.Entry]:
        """Yield the listing of ``prefix`` after ``start_after`` by the rule of ``_pages``:
        objects, and with ``recursive=False`` immediate sub-folders (``str`` keys).

        ``page_size`` is how many entries the caller wants (a hint for the size of page
        requests; ``0``: all). Default: a full listing, filtered; backends with a native
        way to start after a key override it.
        """
        return _pages.entries(self._iter_files(prefix), prefix, start_after, recursive)

    def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """What quotas count under ``prefix`` (first use, refresh): the objects, and any
        bytes the backend stores beside them (local: other processes' temp files)."""
        return self._iter_files(prefix)

    async def _ledger_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """What the shared ledger lists: the objects and their prior versions. Writes in
        flight are reservations in Redis, so other processes' temp files are not listed."""
        async for info in self._usage_scan(prefix):
            if not info.key.startswith(VERSION_SEP):  # a temp file, never a key
                yield info

    async def _list_files(self, prefix: str) -> list[str]:
        return [info.key async for info in self._iter_files(prefix)]

    async def _total_size(self, prefix: str) -> int:
        return sum([info.size async for info in self._iter_files(prefix)])

    def _store_place(self) -> str | None:
        """Where the objects live (a root folder, or bucket and prefix), to tell two
        backends over one store apart; ``None``: nowhere another backend could reach."""
        return self._store_identity

    async def _move(self, src: str, dst: str) -> str | None:
        return await self._copy_then_delete(src, dst, lambda: self._delete(src))

    async def _copy_then_delete(
        self, src: str, dst: str, delete_source: Callable[[], Awaitable[None]]
    ) -> str | None:
        """A move as two steps: copy ``src`` to ``dst``, then ``delete_source()``; what
        either step's error leaves (``src`` kept, or ``dst`` stored) marked on it."""
        try:
            etag = await self._copy(src, dst)
        except BaseException as exc:
            if has_landed(exc):  # a copy cancelled once it was stored: src is there too
                mark_landed(exc, source_kept=True)
            raise
        try:
            await delete_source()
        except BaseException as exc:
            # dst is stored whatever the delete did; src too, unless the delete landed
            mark_landed(exc, source_kept=not has_landed(exc))
            raise
        return etag

    async def _delete_expired(self, key: str, listed: ObjectInfo) -> bool:
        """Delete ``key`` only if it still holds the object ``listed`` (purge_expired's
        listing saw it expired); False: gone or rewritten since, nothing deleted.

        Default: a stat, a comparison, then a delete; a write landing between the stat
        and the delete is deleted too. A backend that can compare and delete in one step
        (the memory backend, local disk under the key's lock) overrides this, one that
        can make the delete conditional overrides :meth:`_delete_looked_at` (S3, GCS and
        Azure where they can); one that can neither lacks ``exact_expiry``.
        """
        try:
            current = await self._stat(key)
        except Exception as exc:
            if not self._not_found(exc):
                raise
            return False
        if not same_version(current, listed):
            return False
        return await self._delete_looked_at(key, current)

    async def _delete_looked_at(self, key: str, current: ObjectInfo) -> bool:
        """Delete ``key``, just found holding ``current``; False: nothing deleted (the
        store refused, as it was written since). Default: a plain delete; a backend that
        can make the delete conditional on ``current`` overrides this."""
        await self._delete(key)
        return True

    async def _delete_many(self, keys: list[str]) -> None:
        for key in keys:
            await self._delete(key)

    async def _delete_prefix(self, prefix: str) -> int:
        deleted = 0
        batch: list[str] = []
        async for info in self._iter_files(prefix):
            batch.append(info.key)
            if len(batch) == DELETE_BATCH:
                await self._delete_many(batch)
                deleted += len(batch)
                batch = []
        if batch:
            await self._delete_many(batch)
            deleted += len(batch)
        return deleted

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
        body = file_chunks(local_path, size, progress)
        return await self._save(key, body, content_type, metadata, *passed(options))

    async def _download_file(self, key: str, local_path: Path, progress: Progress | None) -> int:
        """Write the object into a new private (0600) file at ``local_path``, made as
        ``opened(local_path, "wb")`` makes it; return the size the store says it has."""
        expected = (await self._stat(key)).size
        done = 0
        async with opened(local_path, "wb") as out:
            async for chunk in self._stream(key, 0, None, CHUNK_SIZE, None):
                await out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, expected)
        return expected

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        """A URL for ``method`` on ``key``. GET: the response carries ``content_type`` and
        an attachment ``Content-Disposition`` naming ``filename``; PUT: the uploader must
        send ``content_type``, which is stored."""
        raise StorageConfigError(f"{type(self).__name__} cannot sign URLs")

    async def _sweep(self) -> None:
        """Remove what crashed writers left behind (the local backend's temp files)."""
        return None

    async def _check(self) -> None:
        """Raise if the store cannot be used (S3: the bucket; local: the root). Default: no check.

        Run once at start-up by ``storage_lifespan`` inside ``_translate("check", None)``,
        so a hook raises SDK or OS errors like any other hook.
        """
        return None

    async def _aclose(self) -> None:
        return None
