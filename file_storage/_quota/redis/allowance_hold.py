"""A hold and a reservation drawing on the process's allowances (local disk).

The hold takes its keys' locks in this process and on disk (every process of the
machine takes them), and reads the keys' sizes there: while it holds them no other
process changes them, so the difference its write or delete makes is exact. It draws
on the allowances when every quota covering its keys can be drawn on (none is being
listed), else it goes through Redis as a :class:`_RedisHeld` does, giving Redis the
sizes it found. A write past :data:`~file_storage._quota.redis.allowance.LARGEST`, and a
stream, reserve in Redis: a listing waits for the draws in flight, and one that takes
long (a client sending slowly) would hold every listing back.

A listing waits for every process's draws in flight, and its lister may hold keys
locked on disk (a write whose quota must be listed again mid-hold). So a hold counts as
drawing only once it holds every lock it takes (in this process, then on disk, a save's
key too), and while it draws it waits for no lock and no listing: the only wait is for
allowances recalled from other processes, bounded (``_RECALL_TRIES``). Whatever a
listing waits for ends without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import TYPE_CHECKING

from file_storage._quota.ledger import Reservation
from file_storage._quota.redis.allowance import LARGEST, Book, DiskLocksUnavailable, covering
from file_storage._quota.redis.hold import _current, _RedisHeld, _RedisReservation
from file_storage._quota.redis.wire import RedisUnavailable
from file_storage.errors import StorageQuotaExceededError

if TYPE_CHECKING:
    from file_storage._quota.redis.ledger import RedisQuotaManager

_RECALL_TRIES = 40  # a draw refused until allowances are given back: tries, 50 ms apart


class _LeaseHeld(_RedisHeld):
    """Holds keys in this process and on disk; draws on allowances when it can."""

    __slots__ = ("_book", "_disk", "_member", "_quotas", "_read", "leased")

    def __init__(self, ledger: RedisQuotaManager, book: Book, keys: list[str], lazy: bool):
        super().__init__(ledger, keys, lazy)
        self._book = book
        self._disk: contextlib.AbstractAsyncContextManager[None] | None = None
        self._read = False  # the keys' sizes were read under their disk locks
        self._member = ""
        self._quotas: dict[str, list[str]] = {}  # key -> the prefixes of its quotas
        self.leased = False

    async def __aenter__(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._local.__aenter__()
        try:
            if self.lazy and not self._book.disk.refused and await self._lock_disk():
                # a save: its key locked on disk before it draws (a hold that draws
                # waits for nothing: see the module), the size it replaces read as it
                # lands (see local._quota_locks), unless it must know it first (pin)
                self.leased = await self._open()
                if not self.leased:
                    await self._unpin()  # (a listing may be due: never waited for locked)
            if not self.leased:
                await self._listed()
                pinned = await self.pin()
                if pinned and not self.lazy and not self.unreachable:
                    self.leased = await self._open()
                if not self.leased:
                    await self._enter_redis()  # (with no sizes pinned: Redis's)
        except BaseException:
            await self._unpin()
            await self._local.__aexit__(None, None, None)
            raise
        self._reset = _current.set(self)

    async def _listed(self) -> None:
        """List the quotas of these keys that are due (first use, a refresh) before the
        keys are locked on disk: a listing waits for every process's draws, and one of
        them may be a save waiting to land on one of these keys."""
        ledger = self._ledger
        if self.unreachable or self._book.disk.refused:
            return  # (no disk locks: nothing waits for them)
        prefixes = sorted({p for key in self.keys for p in covering(key)})
        try:
            if ledger._refresh_seconds is not None:
                for key in self.keys:
                    await ledger._refresh_due(key)
            book = self._book
            unready = None if ledger._unsynced else book.unready(prefixes)
            if unready is None:
                book.start()
                await book.describe(prefixes)
                unready = book.unready(prefixes) or []
            for p in unready:
                await ledger._seed(p, force=False)
        except RedisUnavailable:
            self.unreachable = True  # (not asked again to lock: a delete goes on)

    async def pin(self) -> bool:
        """Lock the keys on disk and read their sizes (once); ``False``: the file system
        refuses the locks."""
        if self._read:
            return True
        if not await self._lock_disk():
            return False
        try:
            found = await self._sizes()
        except BaseException:
            await self._unpin()
            raise
        self.olds = {**found, **(self.olds or {})}  # (what this hold changed stays)
        self._read = True
        return True

    async def _lock_disk(self) -> bool:
        """Lock the keys on disk (once); ``False``: the file system refuses the locks."""
        if self._disk is not None:
            return True
        disk = self._book.disk.lock(self.keys)
        try:
            await disk.__aenter__()
        except DiskLocksUnavailable:
            return False
        self._disk = disk
        return True

    async def _unpin(self) -> None:
        disk, self._disk = self._disk, None
        self._read = False
        if disk is not None:
            await disk.__aexit__(None, None, None)

    async def _sizes(self) -> dict[str, int | None]:
        if len(self.keys) <= 4:
            return self._book.disk.sizes(self.keys)
        return await asyncio.to_thread(self._book.disk.sizes, self.keys)

    def _refresh_due(self) -> bool:
        """``STORAGE_QUOTA_REFRESH_SECONDS`` has run out for a quota of these keys: the
        hold goes through Redis, whose reserve lists it again (a listing waits for the
        draws in flight, this one's too)."""
        return any(self._ledger._due(key) for key in self.keys)

    async def _open(self) -> bool:
        book = self._book
        if self._refresh_due():
            return False
        prefixes = sorted({p for key in self.keys for p in covering(key)})
        book.start()
        # a limit set here and not pushed yet: pushed first (the cached ones may miss it)
        state = None if self._ledger._unsynced else book.open_for(prefixes)
        if state is None or (state is False and book.fresh):
            try:
                await book.describe(prefixes)
            except RedisUnavailable:
                self.unreachable = True  # (not asked again to lock: a delete goes on)
                return False
            state = book.open_for(prefixes)
        if not state:
            return False
        self._member = book.member
        self._quotas = {key: book.quotas_of(key) for key in self.keys}
        return True

    async def _enter_redis(self) -> None:
        """The hold goes through Redis from here (as a :class:`_RedisHeld` does)."""
        if (not self.lazy or self.reservations) and not self.unreachable:
            try:
                self.locked = await self._ledger._lock(self)
            except BaseException:
                self.locked = True
                await asyncio.shield(self._ledger._finish(self))
                raise
            self.unreachable = not self.locked
        self._renewer = self._ledger._renewer()
        self._renewer.add(self)

    async def unlease(self) -> None:
        """Draw no more: what is left goes through Redis (a large write, a stream)."""
        if self.leased:
            await self.pin()
            self.leased = False
            self._book.close_hold(self._member)
            self.lazy = False  # (its keys are locked in Redis now: since is known)
            await self._enter_redis()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.leased:
                if self._reset is not None:
                    _current.reset(self._reset)
                self.leased = False
                self._book.close_hold(self._member)
                await self._local.__aexit__(exc_type, exc, tb)
            else:
                await super().__aexit__(exc_type, exc, tb)  # (its local locks too)
        finally:
            await self._unpin()

    # -- what a drawing hold does --------------------------------------------------------

    def quotas(self, key: str) -> list[str]:
        return self._quotas.get(key, [])

    def spend(self, key: str, size: int | None, *, replaced: tuple[bool, int | None]) -> None:
        """``key`` now holds ``size`` bytes (``None``: deleted); ``replaced``: the size
        its landing replaced, if it read it (else the one pinned)."""
        olds = self.olds if self.olds is not None else {}
        read, old = replaced
        if not read and key not in olds:
            # neither read nor pinned (a landing that did not read it): listed again
            self._ledger._dirty.add(key)
            olds[key] = size
            return
        delta = (size or 0) - ((old if read else olds.get(key)) or 0)
        olds[key] = size
        self.olds = olds
        if not self._book.spend(self._member, key, self.quotas(key), delta):
            self._ledger._dirty.add(key)  # drawn by a member since replaced


class _LeaseReservation(Reservation):
    """A write's bytes drawn from the allowances (or, past ``LARGEST``, held in Redis)."""

    __slots__ = (
        "_book",
        "_exact",
        "_expects",
        "_frees",
        "_hold",
        "_ledger",
        "_needs",
        "_requested",
    )

    def __init__(
        self,
        ledger: RedisQuotaManager,
        hold: _LeaseHeld,
        key: str,
        operation: str,
        frees: str | None,
    ) -> None:
        self._ledger = ledger
        self._book = hold._book
        self._hold = hold
        self.key = key
        self.operation = operation
        self._frees = frees
        self._loop = asyncio.get_running_loop()
        self._done = False
        self.relisted = False
        self._needs: dict[str, int] = {}
        self._exact: _RedisReservation | None = None
        self._requested: int | None = None
        self._expects = False  # its landing reads the size it replaces (see draw)

    def _needs_for(self, total: int) -> dict[str, int]:
        olds = self._hold.olds or {}
        old = olds.get(self.key) or 0
        frees = self._frees
        needs = {}
        for p in self._hold.quotas(self.key):
            credit = old + (olds.get(frees) or 0 if frees and frees.startswith(p) else 0)
            needs[p] = max(0, total - credit)
        return needs

    async def draw(self, total: int, requested: int | None) -> None:
        """Hold ``total`` bytes for the write (more than drawn so far, or as much)."""
        if self._exact is not None:
            await self._exact.grow_to(total, requested)
            return
        if total > LARGEST:
            await self._to_redis(total, requested)
            return
        hold = self._hold
        if hold.olds is None or self.key not in hold.olds:
            # the size it replaces is read as it lands (0 meanwhile: it draws the most)
            self._book.disk.expect(self.key)
            self._expects = True
        last = ("over", "", 0, 0)
        for _ in range(_RECALL_TRIES):
            if self._book.member != hold._member:
                # its member was replaced meanwhile (its lease ran out, Redis lost its
                # data: a call of another write answered so): the new one's share is
                # not this hold's to draw on, and asking it would never be granted
                await self._to_redis(total, requested)
                return
            needs = self._needs_for(total)
            more = {p: max(0, n - self._needs.get(p, 0)) for p, n in needs.items()}
            prefixes = list(more)
            short = self._book.draw(prefixes, more)
            if not short:
                for p, n in more.items():
                    self._needs[p] = self._needs.get(p, 0) + n
                return
            if not hold._read and await hold.pin():
                continue  # the size it replaces, read now, may be enough of a credit
            try:
                refused = await self._book.call(need=short)
            except RedisUnavailable as exc:
                self._ledger._unavailable(self.operation, self.key, exc)  # raises closed
                return  # failing open: the write lands uncounted (listed again later)
            for p, (flag, others, limit) in refused.items():
                # stored and held by other writes: this process's own, but this one's
                used = others + self._book.in_use(p) - self._needs.get(p, 0)
                last = (flag, p, used, limit)
                if flag == "over":
                    raise StorageQuotaExceededError(
                        used=used,
                        limit=limit,
                        requested=total if requested is None else requested,
                        prefix=p,
                        operation=self.operation,
                        key=self.key,
                    )
                if flag == "busy":  # a listing began there: through Redis instead
                    await self._to_redis(total, requested)
                    return
            if refused:  # recalled from the others: they give back within a call or two
                await asyncio.sleep(0.05)
        # still held by others (a process that died holding them, until its lease ends)
        raise StorageQuotaExceededError(
            used=last[2],
            limit=last[3],
            requested=total if requested is None else requested,
            prefix=last[1],
            operation=self.operation,
            key=self.key,
        )

    async def _to_redis(self, total: int, requested: int | None) -> None:
        """Give the draws back and reserve ``total`` in Redis (the hold too goes there)."""
        self._book.undraw(self._needs)
        self._needs = {}
        self._book.disk.replaced(self.key)  # (pinned below: its size is known first)
        await self._hold.unlease()
        exact = _RedisReservation(self._ledger, self._hold, self.key, self.operation)
        self._exact = exact
        try:
            found = await self._ledger._reserve(
                exact, total, requested, first=True, frees=self._frees
            )
        except RedisUnavailable as exc:
            await exact.release()
            self._exact = None
            self._ledger._unavailable(self.operation, self.key, exc)  # raises failing closed
            self._ledger._dirty.add(self.key)
            return
        if not found:
            exact._done = True
            self._exact = None

    async def grow_to(self, total: int, requested: int | None = None) -> None:
        await self.draw(total, requested)

    async def grow_streamed(self, total: int) -> None:
        # a stream reserves in Redis from its first bytes: it may last as long as its
        # client sends (a byte a second), and a listing would wait for it to end
        if self._exact is None:
            await self._to_redis(total, None)
        if self._exact is not None:
            await self._exact.grow_streamed(total)

    async def streamed(self, total: int) -> None:
        if self._exact is not None:
            await self._exact.streamed(total)

    async def release(self) -> None:
        if self._done:
            return
        self._done = True
        if self._exact is not None:
            await self._exact.release()
            return
        self._book.undraw(self._needs)
        self._book.disk.replaced(self.key)

    async def commit(self, size: int, *, found: bool = False) -> None:
        if self._done:
            return
        if self._exact is not None:
            self._done = True
            await self._exact.commit(size, found=found)
            if self._hold.olds is not None:
                self._hold.olds[self.key] = size
            return
        self._done = True
        self._book.undraw(self._needs)
        replaced = self._book.disk.replaced(self.key)
        if not self._expects:
            replaced = (False, None)  # (never read for it: its pinned size counts)
        if not self._hold.leased:
            # its hold went through Redis meanwhile (another write of it, past LARGEST)
            self._ledger._dirty.add(self.key)
        elif any(self._needs.values()) and not self._book.trusted(self._hold._member):
            await self._checked(size, replaced, found)
        else:
            self._hold.spend(self.key, size, replaced=replaced)

    async def _checked(self, size: int, replaced: tuple[bool, int | None], found: bool) -> None:
        """Count a write whose draw Redis may no longer hold: its process froze past its
        member's lease (or Redis lost its data) between the draw and the landing, and its
        bytes may have been given to other writes since. Checked again as a write whose
        reservation ran out (see ``COMMIT``): a new object that no longer fits is taken
        back and refused; an overwrite is kept, counted past the quota, with a WARNING."""
        hold = self._hold
        olds = hold.olds if hold.olds is not None else {}
        read, old = replaced
        if not read and self.key not in olds:
            self._ledger._dirty.add(self.key)  # (nothing known of what it replaced)
            olds[self.key] = size
            hold.olds = olds
            return
        old = old if read else olds.get(self.key)
        # (no reservation in Redis by that id: the step checks the quota again)
        reservation = _RedisReservation(self._ledger, None, self.key, self.operation)
        reservation.given = str(old or 0)
        olds[self.key] = size
        hold.olds = olds
        try:
            await reservation.commit(size, found=found)
        except StorageQuotaExceededError:
            olds[self.key] = None  # (taken back: nothing there now)
            raise
