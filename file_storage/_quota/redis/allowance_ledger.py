"""The Redis ledger with allowances: what the local backend uses (see
:mod:`file_storage._quota.redis.allowance`)."""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Any

from file_storage._quota.ledger import Reservation
from file_storage._quota.redis.allowance import Book, Disk
from file_storage._quota.redis.allowance_hold import _LeaseHeld, _LeaseReservation
from file_storage._quota.redis.hold import _current
from file_storage._quota.redis.ledger import RedisQuotaManager
from file_storage._quota.redis.wire import RedisUnavailable
from file_storage.models import Usage


class AllowanceQuotaManager(RedisQuotaManager):
    """A :class:`RedisQuotaManager` whose holds draw on the process's allowances."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._book: Book | None = None

    def attach(self, disk: Disk) -> None:
        """Draw on allowances from now on, locking keys and reading sizes on ``disk``."""
        self._book = Book(self, disk)

    def __repr__(self) -> str:
        return f"AllowanceQuotaManager(namespace={self.ns!r})"  # never the URL

    def hold(self, *keys: str, lazy: bool = False) -> AbstractAsyncContextManager[None]:
        if self._book is None:
            return super().hold(*keys, lazy=lazy)
        return _LeaseHeld(self, self._book, sorted(set(keys)), lazy)

    async def reserve(
        self,
        key: str,
        size: int,
        operation: str,
        *,
        requested: int | None = None,
        frees: str | None = None,
    ) -> Reservation | None:
        hold = _current.get()
        if not isinstance(hold, _LeaseHeld) or not hold.leased or key not in hold.keys:
            return await super().reserve(key, size, operation, requested=requested, frees=frees)
        if not hold.quotas(key):
            return None  # (a quota set meanwhile is listed after this hold: see Book)
        reservation = _LeaseReservation(self, hold, key, operation, frees)
        try:
            await reservation.draw(size, requested)
        except BaseException:
            # refused or cut: no commit nor release follows, and the size its landing was
            # to read would stay, for a later write of the key to take as its own
            await reservation.release()
            raise
        return reservation

    async def forget(self, key: str) -> None:
        hold = _current.get()
        if isinstance(hold, _LeaseHeld) and hold.leased and key in hold.keys:
            hold.spend(key, None, replaced=(False, None))
            return
        await super().forget(key)

    async def usage(self, prefix: str) -> Usage:
        if self._book is not None and not self._book.fresh:
            with contextlib.suppress(RedisUnavailable):
                await self._book.call()  # (what this process spent: counted first)
        return await super().usage(prefix)

    async def aclose(self) -> None:
        if self._book is not None:
            if not self._book.fresh:
                with contextlib.suppress(RedisUnavailable):
                    await self._book.call(leave=True)
            self._book.stop()
        await super().aclose()

    def _forked(self) -> None:
        super()._forked()
        if self._book is not None:
            self._book.forked()
