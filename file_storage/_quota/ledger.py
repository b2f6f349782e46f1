"""Quota accounting shared by every backend: O(1) per write, exact per key, race-free.

Each quota covers a prefix (``""`` is the whole backend). Its usage is learned once,
by one listing of the prefix on the first write that needs it, and then kept up to
date by this process's own writes, copies, moves and deletes. A write reserves its
bytes before any I/O; the check and the reservation happen with no ``await`` in
between, so concurrent writers on one event loop can never overshoot together.

Exact per key. An overwrite reserves only ``new - old``: it counts on ``old`` being
replaced when it lands. Anything that changes a key's recorded size in the meantime (a
delete or move of the key handing ``old`` to another writer, another save of the key
landing first on disk but committing last, a copy whose source is overwritten while it
copies) would make the ledger and the store disagree, or let the store exceed the
limit. So while any quota is set, every operation that changes a key holds that key's
lock from its reservation to its commit: save and upload_file hold the key, copy and
move hold both keys (a copy's source so that its size cannot change under it), delete,
delete_many and delete_prefix hold each key they delete. Multi-key holders take their
locks in sorted order, so no two operations can wait on each other. Locks are created
on demand and dropped when no one holds or waits for them, so the table stays as small
as the number of keys in use. Operations on one key run one after the other; different
keys never wait on each other. With no quota set nothing is counted, and nothing is
locked unless someone subscribes to the backend's events (``ordered``): then one key's
changes take turns too, so that they are announced in the order they landed. Across
processes the ledger is only as fresh as the last scan (``refresh``).

Versions. On a versioned backend an overwrite or a delete keeps the old object as a prior
version: its bytes stay stored. While versioning is on (or suspended, conservatively),
a reservation credits nothing for the object it replaces (nor for a move's source), and
its commit moves the old size into the key's ``kept`` bytes instead of dropping it; a
delete does the same. (Suspended, the store replaces a "null" version: the backend then
lists the key's versions and sets its ``kept`` bytes, see ``set_kept``.) The scanner
reports prior versions as ``<key>\\<version id>`` (a backslash: never a key), which
count as ``kept`` bytes of ``<key>``, so prefix quotas count every version. ``set_kept``
re-learns a key's prior versions after a purge.

One backend may serve several threads, each running an event loop of its own: the key
and scan locks are :class:`SharedLock` (usable from any loop in any thread), and every
change of the ledger happens under one ``threading`` lock, so a check and the
reservation it allows stay one step there too. A child forked from the process starts
with the ledger as the parent knew it, but without the parent's locks and reservations:
the operations in flight that held them do not run in the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from file_storage._loops import SharedLock
from file_storage._quota._locks import _LEDGER, _Held, _KeyLock
from file_storage.errors import StorageQuotaExceededError
from file_storage.models import ObjectInfo, Usage

Scanner = Callable[[str], AsyncIterator[ObjectInfo]]
# "off": never versioned; "enabled"; "suspended": was enabled, new writes replace
Probe = Callable[[], Awaitable[str]]
VERSION_SEP = "\\"  # a scanned name "<key>\\<version id>" is a prior version of <key>


def _version_of(name: str) -> str | None:
    """The key a scanned name is a prior version of, else ``None``."""
    key, sep, _ = name.partition(VERSION_SEP)
    return key if sep and key else None


# every ledger of this process, each reset in a child forked from it
_LEDGERS: weakref.WeakSet[QuotaManager] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child runs none of its parent's operations in flight: the locks they held
    (another thread's, caught mid-step, too) and the bytes they reserved are let go, else
    the child waits for them forever and counts them for good."""
    _LEDGER._at_fork_reinit()  # type: ignore[attr-defined]
    for ledger in list(_LEDGERS):
        ledger._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Quota:
    __slots__ = (
        "born",
        "dirty",
        "kept",
        "limit",
        "lock",
        "pending",
        "pending_kept",
        "prefix",
        "recounted",
        "reservations",
        "reserved",
        "scanned_at",
        "sizes",
        "used",
    )

    def __init__(self, prefix: str, limit: int, born: int = 0):
        self.prefix = prefix
        self.limit = limit
        self.born = born  # the ledger's count of quotas made when this one was
        self.dirty = False  # an operation begun before it was made changed a key under it
        self.used = 0
        self.reserved = 0
        # the reservations holding bytes here: those of a loop closed under them are freed
        self.reservations: set[Reservation] = set()
        self.sizes: dict[str, int] | None = None  # None until the prefix was scanned
        self.pending: dict[str, int | None] | None = None  # changes seen during a scan
        self.kept: dict[str, int] = {}  # key -> bytes of its prior versions
        self.pending_kept: dict[str, int] | None = None  # kept bytes moved during a scan
        # a key's prior versions as recounted under its lock during a scan: they win over
        # the scan's listing of them, which may have come before or after a change
        self.recounted: dict[str, int] | None = None
        self.scanned_at = 0.0
        self.lock = SharedLock()  # any event loop, one after another or in other threads

    def covers(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def record(self, key: str, size: int | None) -> None:
        """Apply a committed write (``size``) or delete (``None``) of ``key``."""
        with _LEDGER:
            self._record(key, size)

    def _record(self, key: str, size: int | None) -> None:
        if self.pending is not None:
            self.pending[key] = size
        if self.sizes is None:
            return
        old = self.sizes.pop(key, 0)
        self.used -= old
        if size is not None:
            self.sizes[key] = size
            self.used += size

    def keep(self, key: str) -> None:
        """The object at ``key`` becomes a prior version: its bytes stay counted."""
        with _LEDGER:
            self._keep(key)

    def _keep(self, key: str) -> None:
        if self.pending is not None:
            old = self.pending.get(key, self.sizes.get(key, 0) if self.sizes else 0)
            if old and self.pending_kept is not None:
                self.pending_kept[key] = self.pending_kept.get(key, 0) + old
        if self.sizes is None:
            return
        old = self.sizes.pop(key, 0)
        if old:
            self.kept[key] = self.kept.get(key, 0) + old

    def set_kept(self, key: str, total: int) -> None:
        """``key``'s prior versions now hold ``total`` bytes (after a purge)."""
        with _LEDGER:
            self._set_kept(key, total)

    def _set_kept(self, key: str, total: int) -> None:
        if self.pending_kept is not None:
            self.pending_kept.pop(key, None)  # counted in total: kept before the recount
        if self.recounted is not None:
            self.recounted[key] = total
        if self.sizes is None:
            return
        self.used += total - self.kept.pop(key, 0)
        if total:
            self.kept[key] = total


class Reservation:
    """Bytes held for one write in flight; commit on success, release on failure."""

    __slots__ = (
        "_done",
        "_keeps",
        "_loop",
        "_olds",
        "_quotas",
        "_reserved",
        "key",
        "operation",
        "relisted",
    )

    def __init__(
        self,
        quotas: list[_Quota],
        key: str,
        operation: str,
        frees: str | None = None,
        *,
        keeps: bool = False,
    ):
        self._quotas = quotas
        self.key = key
        self.operation = operation
        self._keeps = keeps
        with _LEDGER:
            self._olds = self._old_sizes(quotas, key, frees, keeps)
        self._reserved = [0] * len(quotas)
        self._done = False
        #: a shared ledger's listing overlapped the write (see _recount_versions)
        self.relisted = False
        self._loop = asyncio.get_running_loop()  # closed under the write: it ends here

    @staticmethod
    def _old_sizes(quotas: list[_Quota], key: str, frees: str | None, keeps: bool) -> list[int]:
        # what each quota gets back when the write lands: the old object at key, and for
        # a move the source too when the same quota covers it
        return [
            (q.sizes.get(key, 0) + (q.sizes.get(frees, 0) if frees and q.covers(frees) else 0))
            if q.sizes is not None and not keeps  # versioned: the old bytes stay stored
            else 0
            for q in quotas
        ]

    async def grow_to(self, total: int, requested: int | None = None) -> None:
        """Hold enough for a write of ``total`` bytes, or raise without holding more."""
        with _LEDGER:
            self._grow_to(total, requested)

    async def grow_streamed(self, total: int) -> None:
        """Hold enough for a stream that has sent ``total`` bytes so far (its length
        unknown): a shared ledger may hold ahead of it, to ask less often."""
        await self.grow_to(total)

    async def streamed(self, total: int) -> None:
        """The stream ended at ``total`` bytes, before its write lands: a shared ledger
        that held ahead of it checks that it still holds them."""

    def _grow_to(self, total: int, requested: int | None) -> None:
        extras = []
        for q, old, held in zip(self._quotas, self._olds, self._reserved, strict=True):
            extra = max(0, total - old) - held
            if extra > 0 and q.used + q.reserved + extra > q.limit:
                _free_dead(q)
            if extra > 0 and q.used + q.reserved + extra > q.limit:
                raise StorageQuotaExceededError(
                    used=q.used + q.reserved - held,  # what is stored and what others hold
                    limit=q.limit,
                    requested=total if requested is None else requested,
                    prefix=q.prefix,
                    operation=self.operation,
                    key=self.key,
                )
            extras.append(extra)
        for i, (q, extra) in enumerate(zip(self._quotas, extras, strict=True)):
            if extra > 0:
                q.reserved += extra
                self._reserved[i] += extra
                q.reservations.add(self)

    async def release(self) -> None:
        self._release()

    def _release(self) -> None:
        with _LEDGER:
            if self._done:
                return
            self._done = True
            for q, held in zip(self._quotas, self._reserved, strict=True):
                q.reserved -= held
                q.reservations.discard(self)

    async def commit(self, size: int, *, found: bool = False) -> None:
        """Count the object the write left at the key: ``size`` bytes. ``found``: an
        object found there after a write whose outcome is unknown (maybe another
        writer's): a shared ledger counts it, and never has it taken back."""
        with _LEDGER:
            if self._done:
                return
            self._release()
            for q in self._quotas:
                if self._keeps:
                    q.keep(self.key)
                q.record(self.key, size)


def _free_dead(q: _Quota) -> None:
    """Free the bytes of the writes whose event loop was closed under them: they never
    run again (looked for when bytes run short, and when usage is asked)."""
    for reservation in [r for r in q.reservations if r._loop.is_closed()]:
        reservation._release()


_NOT_LOCKED: AbstractAsyncContextManager[None] = contextlib.nullcontext()


class _Watched:
    """An operation's hold of its keys (or of a folder) that, when it ends, marks to be
    listed again the quotas made while it ran: it reserved nothing in them, nor will it
    record what it wrote or deleted there, and their listing may have run before it did."""

    __slots__ = ("_born", "_folder", "_inner", "_keys", "_ledger", "relisted")

    def __init__(
        self,
        ledger: QuotaManager,
        inner: AbstractAsyncContextManager[None],
        keys: tuple[str, ...],
        folder: str | None = None,
    ) -> None:
        self._ledger = ledger
        self._inner = inner
        self._keys = keys
        self._folder = folder
        self._born = ledger._born
        self.relisted = False  # (as a shared ledger's hold says: never in process)

    async def __aenter__(self) -> None:
        await self._inner.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        finally:
            if self._ledger._born != self._born:
                self._ledger._mark_newer(self._born, self._keys, self._folder)


class QuotaManager:
    """All quotas of one backend, and the per-key locks that keep them exact."""

    def __init__(
        self, scan: Scanner, refresh_seconds: float | None = None, probe: Probe | None = None
    ):
        self._scan = scan
        self._probe = probe
        #: the backend's versioning state, learned with each scan and kept by set_versioning
        self.versioning = "off"
        self._switches = 0  # set_versioning calls begun and ended, for the listings' probe
        self._refresh_seconds = refresh_seconds
        self._quotas: dict[str, _Quota] = {}
        self._locks: dict[str, _KeyLock] = {}
        self._born = 0  # how many quotas were made (set anew): see _Watched
        #: bumped as each listing of usage begins and ends: a versioned write that saw it
        #: change may have been listed as stored before it was counted (see set_kept)
        self.listings = 0
        #: whether keys are locked with no quota set (the backend's: while someone
        #: subscribes to its events, so that one key's changes are announced in the
        #: order they landed)
        self.ordered: Callable[[], bool] = lambda: False
        _LEDGERS.add(self)

    def _forked(self) -> None:
        """In a forked child: forget the parent's locks and reservations (its operations
        in flight do not run here). Usage stays: it is what the parent knew at the fork."""
        self._locks = {}
        for q in self._quotas.values():
            q.lock = SharedLock()
            q.reserved = 0
            q.reservations = set()
            if q.pending is not None:  # a listing of the parent's, cut short
                q.pending = q.pending_kept = q.recounted = None
                q.sizes = None  # listed again by the child

    def __bool__(self) -> bool:
        return bool(self._quotas)

    def set(self, prefix: str, limit: int | None) -> None:
        if limit is None:
            self._quotas.pop(prefix, None)
            return
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"a quota is a number of bytes >= 0, got {limit!r}")
        with _LEDGER:
            quota = self._quotas.get(prefix)
            if quota is None:
                self._born += 1
                self._quotas[prefix] = _Quota(prefix, limit, self._born)
            else:
                quota.limit = limit

    def limit(self, prefix: str) -> int | None:
        quota = self._quotas.get(prefix)
        return None if quota is None else quota.limit

    def hold(self, *keys: str, lazy: bool = False) -> AbstractAsyncContextManager[None]:
        """Lock ``keys`` from reservation to commit (see the module docstring).

        Nothing is locked when no quota is set, unless :attr:`ordered` says so. ``lazy``:
        the holder's first ledger step is its ``reserve``, before any I/O (a shared
        ledger may lock the key in that step).
        """
        locked = self._quotas or self.ordered()
        inner = _Held(self._locks, sorted(set(keys))) if locked else _NOT_LOCKED
        return _Watched(self, inner, keys)

    def recounting(self, *keys: str) -> AbstractAsyncContextManager[None]:
        """Lock ``keys`` (taken by no one here) while their versions are listed and
        counted (``set_kept``): no write to them can come in between."""
        return _Held(self._locks, sorted(set(keys))) if self._quotas else _NOT_LOCKED

    def watch(self, folder: str) -> AbstractAsyncContextManager[None]:
        """Around a change of the folder ``folder`` made without holding its keys (a
        ``delete_prefix`` no quota overlapped): a quota made meanwhile is listed again."""
        return _Watched(self, _NOT_LOCKED, (), folder)

    def _mark_newer(self, born: int, keys: tuple[str, ...], folder: str | None) -> None:
        """Mark to be listed again the quotas made after ``born`` that cover one of
        ``keys`` or overlap ``folder``."""
        with _LEDGER:
            for q in self._quotas.values():
                if q.born > born and (
                    any(q.covers(key) for key in keys)
                    or (
                        folder is not None
                        and (q.prefix.startswith(folder) or folder.startswith(q.prefix))
                    )
                ):
                    q.dirty = True

    def overlaps(self, prefix: str) -> bool:
        """True when a quota covers some key under the folder ``prefix``."""
        return any(
            q.prefix.startswith(prefix) or prefix.startswith(q.prefix)
            for q in list(self._quotas.values())  # (a copy: see _covering)
        )

    def covering(self, key: str) -> list[str]:
        """The prefixes of the quotas that cover ``key``."""
        return [q.prefix for q in self._covering(key)]

    async def prefixes_covering(self, key: str, operation: str) -> list[str]:
        """The prefixes of the quotas that cover ``key``, set by any process sharing them."""
        return self.covering(key)

    def _covering(self, key: str) -> list[_Quota]:
        # a copy first (taken at once): another thread may set a quota meanwhile, and a
        # table changing under its iteration would fail the write
        return [q for q in list(self._quotas.values()) if q.covers(key)]

    def _stale(self, q: _Quota) -> bool:
        if q.sizes is None or q.dirty:
            return True
        return (
            self._refresh_seconds is not None
            and time.monotonic() - q.scanned_at > self._refresh_seconds
        )

    async def _ensure_scanned(self, q: _Quota, *, force: bool = False) -> None:
        if not force and not self._stale(q):
            return
        grant = await q.lock.acquire()
        try:
            if not force and not self._stale(q):
                return
            if self._probe is not None:
                switches = self._switches
                state = await self._probe()
                if self._switches == switches:  # else read before a switch: it stands
                    self.versioning = state
            with _LEDGER:
                q.pending = {}
                q.pending_kept = {}
                q.recounted = {}
                q.dirty = False  # a mark from now on may have come after its key was listed
                self.listings += 1
            try:
                sizes: dict[str, int] = {}
                kept: dict[str, int] = {}
                async for info in self._scan(q.prefix):
                    if (versioned := _version_of(info.key)) is not None:
                        kept[versioned] = kept.get(versioned, 0) + info.size
                    else:
                        sizes[info.key] = info.size
                with _LEDGER:
                    # writes and deletes that committed while we listed win over the listing
                    for key, size in q.pending.items():
                        if size is None:
                            sizes.pop(key, None)
                        else:
                            sizes[key] = size
                    # a key recounted meanwhile (under its lock, after each versioned
                    # write or delete overlapping the scan) is what its recount found, plus
                    # what was kept since; (a version kept with no recount yet may be
                    # counted twice until its recount: too much, never too little)
                    for key, total in (q.recounted or {}).items():
                        kept.pop(key, None)
                        if total:
                            kept[key] = total
                    for key, extra in (q.pending_kept or {}).items():
                        kept[key] = kept.get(key, 0) + extra
                    q.sizes = sizes
                    q.kept = kept
                    q.used = sum(sizes.values()) + sum(kept.values())
                    q.scanned_at = time.monotonic()
            finally:
                with _LEDGER:
                    q.pending = None
                    q.pending_kept = None
                    q.recounted = None
                    self.listings += 1
        finally:
            q.lock.release(grant)

    async def reserve(
        self,
        key: str,
        size: int,
        operation: str,
        *,
        requested: int | None = None,
        frees: str | None = None,
    ) -> Reservation | None:
        """Reserve ``size`` bytes for writing ``key``; ``None`` when no quota covers it.

        ``frees``: a key the write removes when it lands (a move's source).
        """
        if not self._quotas:
            return None
        quotas = self._covering(key)
        if not quotas:
            return None
        for q in quotas:
            await self._ensure_scanned(q)
        reservation = Reservation(quotas, key, operation, frees, keeps=self.keeps)
        await reservation.grow_to(size, requested)  # no await inside: check and hold at once
        return reservation

    def size_of(self, key: str) -> int | None:
        """The size this process knows for ``key``, if a scanned quota covers it."""
        for q in self._covering(key):
            if q.sizes is not None and key in q.sizes:
                return q.sizes[key]
        return None

    @property
    def keeps(self) -> bool:
        """True when an overwritten or deleted object stays stored as a prior version."""
        return self.versioning != "off"

    async def forget(self, key: str) -> None:
        """``key`` was deleted (on a versioned backend: it became a prior version); a
        coroutine, as a shared ledger is remote."""
        with _LEDGER:
            for q in self._covering(key):
                if self.keeps:
                    q.keep(key)
                q.record(key, None)

    async def drop(self, key: str) -> None:
        """``key``'s object is gone for good (a purge deleted even the latest version)."""
        for q in self._covering(key):
            q.record(key, None)

    async def set_kept(self, key: str, total: int) -> None:
        """``key``'s prior versions hold ``total`` bytes now (after a purge)."""
        for q in self._covering(key):
            q.set_kept(key, total)

    async def versioning_begins(self) -> None:
        """``set_versioning`` switches the store now: a shared ledger tells the other
        processes (in one process, the backend's own count of switches does)."""
        self._switches += 1

    async def set_versioning(self, state: str | None) -> None:
        """The store's versioning became ``state`` (None: not known, as it failed; the
        next listing asks the store)."""
        self._switches += 1
        if state is not None:
            self.versioning = state

    async def usage(self, prefix: str) -> Usage:
        q = self._quotas.get(prefix)
        if q is None:
            raise LookupError(prefix)
        await self._ensure_scanned(q)
        with _LEDGER:
            _free_dead(q)
            return Usage(prefix=prefix, used=q.used + q.reserved, limit=q.limit)

    def has(self, prefix: str) -> bool:
        return prefix in self._quotas

    async def aclose(self) -> None:
        """Release the ledger's connections (none in process)."""

    async def refresh(self, prefix: str | None = None) -> None:
        for q in list(self._quotas.values()):
            if prefix is None or q.prefix == prefix:
                await self._ensure_scanned(q, force=True)
