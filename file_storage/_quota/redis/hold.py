"""A hold and a reservation of the Redis quota ledger: what one operation keeps in Redis.

A hold takes its keys' locks in this process and in Redis (each a token with a lease); a
reservation keeps a write's bytes in Redis until it commits or releases. Both are renewed
by the ledger's timer (one per event loop) while their operation runs. See
:mod:`file_storage._quota.redis.ledger` for the ledger that makes them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from types import TracebackType
from typing import TYPE_CHECKING

from file_storage._quota._locks import _Held
from file_storage._quota.ledger import Reservation
from file_storage._quota.redis import scripts as lua
from file_storage._quota.redis.lease import Renewer, new_id
from file_storage._quota.redis.wire import RedisUnavailable
from file_storage.backends._support import run_whole
from file_storage.errors import StorageQuotaExceededError

if TYPE_CHECKING:
    from file_storage._quota.redis.ledger import RedisQuotaManager

logger = logging.getLogger("file_storage")

_EXACT_STEPS = 8  # a stream's first reserve steps hold exactly what it sent
_MAX_AHEAD = 8 * 1024 * 1024  # the most a stream holds ahead of what it sent, in bytes

_current: contextvars.ContextVar[_RedisHeld | None] = contextvars.ContextVar(
    "file_storage_redis_hold", default=None
)


def _running() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _RedisHeld:
    """Holds keys in this process and in Redis for one ``async with``.

    ``lazy`` (a save or an upload, whose first ledger step is its reserve, before any
    I/O): the key's lock in Redis is taken by that reserve, in the same script call.
    Otherwise it is taken on entry, before the store is touched.
    """

    __slots__ = (
        "_ledger",
        "_local",
        "_loop",
        "_renewer",
        "_reset",
        "deleted",
        "keys",
        "lazy",
        "locked",
        "loose",
        "olds",
        "relisted",
        "reservations",
        "since",
        "token",
        "unreachable",
    )

    def __init__(self, ledger: RedisQuotaManager, keys: list[str], lazy: bool) -> None:
        self._ledger = ledger
        self.keys = keys
        self.lazy = lazy and len(keys) == 1
        self.token = new_id()
        self._local = _Held(ledger._locks, keys)
        self.locked = False  # in Redis
        self.unreachable = False  # Redis did not answer the lock: nor is it asked to unlock
        self.reservations: list[str] = []
        self.deleted: list[str] = []
        # keys written where no quota covered them when they reserved (see _loosen)
        self.loose: list[str] = []
        self.relisted = False  # the deleted keys' versions are to be counted as listed
        self.since = ""  # what LOCK answered (listings begun or ended before): see FINISH
        # local disk with allowances: the keys' sizes found on disk under their key locks
        # (None: no object), kept as this hold changes them; None: Redis's sizes are used
        self.olds: dict[str, int | None] | None = None
        self._renewer: Renewer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reset: contextvars.Token[_RedisHeld | None] | None = None

    def old_text(self, key: str) -> str:
        """The size at ``key`` found on disk, as a script argument ('': Redis's is used)."""
        if self.olds is None or key not in self.olds:
            return ""
        return str(self.olds[key] or 0)

    def unlock_args(self) -> list[object]:
        """The FINISH step's arguments that give these keys' locks back, recording nothing."""
        return [self._ledger.ns, self.token, "", 0, "", *self.keys]

    async def __aenter__(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._local.__aenter__()
        if not self.lazy:
            try:
                self.locked = await self._ledger._lock(self)
            except BaseException:
                # cancelled awaiting the answer: Redis may have taken the locks all the
                # same, which would then block every writer of these keys for a lease
                self.locked = True
                try:
                    await asyncio.shield(self._ledger._finish(self))
                finally:
                    await self._local.__aexit__(None, None, None)
                raise
            self.unreachable = not self.locked
        self._renewer = self._ledger._renewer()
        self._renewer.add(self)
        self._reset = _current.set(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._renewer is not None:
            self._renewer.remove(self)
        if _running() is not self._loop:
            # its loop was closed under it, and this is its coroutine closed as it is
            # collected (outside its task): what it holds in Redis runs out with its
            # lease, and no call can be awaited here; only this process's locks go
            await self._local.__aexit__(exc_type, exc, tb)
            return
        if self._reset is not None:
            _current.reset(self._reset)
        try:
            if self.deleted or self.locked:
                await self._ledger._finish(self)
            if self.loose:
                await self._ledger._loosen(self.loose)
        finally:
            await self._local.__aexit__(exc_type, exc, tb)


class _RedisReservation(Reservation):
    """A reservation held in Redis (a lease renewed by the hold while the write runs)."""

    __slots__ = ("_granted", "_hold", "_id", "_ledger", "_requested", "_steps", "given")

    def __init__(
        self, ledger: RedisQuotaManager, hold: _RedisHeld | None, key: str, operation: str
    ) -> None:
        self._ledger = ledger
        self._hold = hold
        self._id = new_id()
        self._loop = asyncio.get_running_loop()
        self.key = key
        self.operation = operation
        self._done = False
        self.relisted = False
        self._granted = 0  # the total Redis holds bytes for (a stream's may be ahead of it)
        self._steps = 0  # the stream's reserve steps so far
        self.given = ""  # with no hold: the size at key found on disk ('': Redis's)
        if hold is not None:
            hold.reservations.append(self._id)

    async def grow_to(self, total: int, requested: int | None = None) -> None:
        await self._grow(total, requested, None)

    async def grow_streamed(self, total: int) -> None:
        # one script per chunk would let a client sending a byte per packet cost Redis one
        # script per byte: past its first few steps (exact, as with the in-process ledger)
        # a stream holds ahead of what it sent, as much again (geometric growth, at most
        # _MAX_AHEAD), and Redis grants at most half of each quota's free space, so that
        # writers near the limit keep the other half; its commit counts the exact size
        if total <= self._granted:
            return
        self._steps += 1
        ahead = min(total, _MAX_AHEAD) if self._steps > _EXACT_STEPS else 0
        await self._grow(total, None, total + ahead if ahead else None)

    async def streamed(self, total: int) -> None:
        # what it held ahead was never asked for again: Redis may have lost it meanwhile (a
        # restart without persistence) and handed it to others, or a limit may have been
        # lowered since; one step before the write lands checks its whole size against
        # the quotas as they are now and refuses what no longer fits, where a commit could
        # only keep an overwrite past the quota
        if self._steps > _EXACT_STEPS:
            await self._grow(total, None, "=")

    async def _grow(self, total: int, requested: int | None, want: int | str | None) -> None:
        try:
            await self._ledger._reserve(self, total, requested, first=False, want=want)
        except RedisUnavailable as exc:
            self._ledger._unavailable(self.operation, self.key, exc)  # raises failing closed
            self._ledger._dirty.add(self.key)

    async def release(self) -> None:
        if self._done:
            return
        self._done = True
        if _running() is not self._loop:
            return  # collected after its loop was closed under it: its lease runs out
        # made whole when its caller is cancelled (again) meanwhile: else, cut before it
        # left (while connecting), the bytes stay held from every process for a lease
        args: list[object] = [self._ledger.ns, self._id]
        step, cancelled = await run_whole(self._ledger._client.start(lua.RELEASE, args))
        error = None if step.cancelled() else step.exception()
        if error is not None and not isinstance(error, RedisUnavailable):
            raise error  # (Redis did not answer: the lease runs out on its own)
        if cancelled is not None:
            raise cancelled

    async def commit(self, size: int, *, found: bool = False) -> None:
        if self._done:
            return
        self._done = True
        hold = self._hold
        unlock = hold.keys if hold is not None and hold.locked and hold.keys == [self.key] else []
        # a move cannot be undone (its source is gone): it is counted whatever it finds;
        # nor an object found at the key after an unsure write (maybe another writer's)
        undoable = 0 if self.operation == "move" or found else 1
        token = hold.token if hold else ""
        cancelled: asyncio.CancelledError | None = None
        while True:
            old = hold.old_text(self.key) if hold is not None else self.given
            args = [self._ledger.ns, self._id, self.key, size, token, undoable, old, *unlock]
            # the object landed: the step is made whole even when the caller is cancelled
            # meanwhile (else, cancelled before it left, the object stays uncounted by
            # every other process until this one's next step, and for good if it is
            # killed), its cancellation raised once the step's answer is used
            step, late = await run_whole(self._ledger._client.start(lua.COMMIT, args))
            cancelled = cancelled or late
            if step.cancelled() or isinstance(step.exception(), RedisUnavailable):
                # the step ran or not (Redis did not answer, or its loop shuts down): its
                # quotas are listed again, and its bytes given back with the next step
                # (else they count twice, listed and reserved, for a lease)
                if step.cancelled():
                    self._ledger._dirty.add(self.key)
                else:
                    self._ledger._missed(self.key, "save")
                self._ledger._lost(self.key, self._id)
                if cancelled is not None or step.cancelled():
                    raise cancelled or asyncio.CancelledError()
                return
            result = step.result()
            self._ledger._reachable()
            if result[0] != "over" or cancelled is None:
                break
            # the lease ran out and the new object no longer fits, but its caller is gone
            # and told it landed: it stays, counted past the quota (its key still held)
            undoable = 0
        if result[0] == "over":
            # the lease ran out and the new object no longer fits: take it back, still
            # holding its key (the hold unlocks it on exit)
            if self._ledger.undo is not None:
                await self._ledger.undo(self.key)
            raise StorageQuotaExceededError(
                used=int(result[2]),
                limit=int(result[3]),
                requested=size,
                prefix=result[1],
                operation=self.operation,
                key=self.key,
            )
        self.relisted = result[-1] == "relisted"
        if unlock and hold is not None and not self.relisted:
            hold.locked = False  # (relisted: still locked while the key is counted)
        if result[0] == "overshoot":
            logger.warning(
                "%s %r: its quota lease ran out and the overwrite landed past the quota of %r",
                self.operation,
                self.key,
                result[1],
            )
        if cancelled is not None:
            raise cancelled
