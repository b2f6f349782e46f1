"""The shared quota ledger: limits, usage and reservations in Redis, for many processes.

Same interface as :class:`~file_storage._quota.ledger.QuotaManager`; each ledger step is one Lua
script (see :mod:`file_storage._quota.redis.scripts`), so reserve, commit, release and the
deletes of copies, moves and deletes check and change every quota covering a key in one
atomic step, whichever process on whichever machine runs it.

Exact per key across processes: an operation holds its keys' locks in Redis (a token
with a lease, renewed while it runs) as well as in this process, so two writes of one key
never land in one order and commit in the other. A reservation is a lease too: a process
killed mid-write stops renewing it, and its bytes are freed when it runs out. A commit
whose lease ran out checks the quota again.

Usage is learned by one listing per quota, under a Redis lock (N processes starting
together list once), kept in Redis and so kept across restarts. Prior versions count as
in process: the store's versioning (probed by each listing, set by ``set_versioning``:
see :mod:`file_storage._quota.redis.switches`) is kept in Redis, where the scripts read
it. Redis unreachable: a write fails with :class:`StorageUnavailableError` naming Redis
(or, failing open, proceeds uncounted after one WARNING per outage); deletes go on
without it. A silent Redis (a call timed out) is not asked again for a timeout. What
this process changed while Redis was away, or while a step's answer was lost or
cancelled, is listed again once it is back, and the reservations and locks such a step
may have left are given back then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from pydantic import SecretStr

from file_storage._loops import Backoff
from file_storage._quota.ledger import Probe, Reservation, Scanner
from file_storage._quota.redis import scripts as lua
from file_storage._quota.redis import seeding
from file_storage._quota.redis.hold import _current, _RedisHeld, _RedisReservation
from file_storage._quota.redis.lease import Renewer, new_id
from file_storage._quota.redis.switches import Switches
from file_storage._quota.redis.wire import Client, RedisUnavailable, Script
from file_storage.errors import (
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from file_storage.models import Usage

logger = logging.getLogger("file_storage")

_SEED_BATCH = 1000  # keys staged per script call while a quota is listed
_MAX_DIRTY = 10_000  # past this many unrecorded keys, every quota is listed again
_MAX_WAIT = 0.05  # seconds between two tries of a busy key lock or a listing in progress
RECALL_SECONDS = 2.0  # a write waits this long for recalled allowances, then is refused


class RedisQuotaManager(Switches):
    """All quotas of one backend, kept in Redis and shared by every process using it."""

    def __init__(
        self,
        scan: Scanner,
        refresh_seconds: float | None,
        *,
        url: SecretStr,
        namespace: str,
        lease_seconds: float = 60.0,
        fail_open: bool = False,
        timeout: float = 5.0,
        probe: Probe | None = None,
    ) -> None:
        super().__init__(scan, refresh_seconds, probe)
        self.ns = "{" + namespace + "}"
        self.lease_seconds = lease_seconds
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._fail_open = fail_open
        self._client = Client(url, timeout)
        self._renewers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Renewer] = (
            weakref.WeakKeyDictionary()
        )
        self._limits: dict[str, int] = {}  # the limits this process set: pushed again after a reset
        self._unpushed: dict[str, int | None] = {}
        self._dirty: set[str] = set()  # keys changed while Redis was away
        # steps whose answer was lost or cancelled, run again with the next ledger step
        # (each a no-op if it ran): a reservation's release, once its key's quotas are
        # marked to be listed again (which counts the object), and an unlock (key None)
        self._replay: list[tuple[str | None, Script, list[object]]] = []
        self._unpushed_versioning: str | None = None  # set_versioning while Redis was away
        # the token of this process's set_versioning under way, then of its end to send
        self._switching: str | None = None
        self._switch_ends: str | None = None
        self._outage = False
        self._refreshed: dict[str, float] = {}
        self._epoch = ""  # the epoch this process's limits went into (see lua.SET_LIMITS)
        self._repush = False  # mark the epoch even with no limit to push
        #: deletes an object the ledger refused after it landed (set by the backend)
        self.undo: Callable[[str], Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"RedisQuotaManager(namespace={self.ns!r})"  # never the URL

    def __bool__(self) -> bool:
        return True  # other processes may have set quotas: every write asks Redis

    def set(self, prefix: str, limit: int | None) -> None:
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ValueError(f"a quota is a number of bytes >= 0, got {limit!r}")
        if limit is None:
            self._limits.pop(prefix, None)
        else:
            self._limits[prefix] = limit
        self._unpushed[prefix] = limit  # sent with this process's next ledger step

    def limit(self, prefix: str) -> int | None:
        return self._limits.get(prefix)

    def hold(self, *keys: str, lazy: bool = False) -> AbstractAsyncContextManager[None]:
        return _RedisHeld(self, sorted(set(keys)), lazy)

    def recounting(self, *keys: str) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # (as before: its recounts follow FINISH's word)

    def _renewer(self) -> Renewer:
        loop = asyncio.get_running_loop()
        renewer = self._renewers.get(loop)
        if renewer is None:
            renewer = self._renewers[loop] = Renewer(self, loop)
        return renewer

    def _forked(self) -> None:
        super()._forked()
        # the parent's holds are renewed by the parent alone (else a child keeps the
        # leases of a dead parent's writes alive), on connections of its own
        for renewer in list(self._renewers.values()):
            renewer.holds.clear()
            renewer.cancel()
        self._renewers = weakref.WeakKeyDictionary()
        self._client.forked()

    def overlaps(self, prefix: str) -> bool:
        return True

    def size_of(self, key: str) -> int | None:
        return None  # sizes live in Redis; a copy asks the store

    def has(self, prefix: str) -> bool:
        return True  # Redis knows; usage() raises LookupError when it has no quota there

    async def aclose(self) -> None:
        # what changed while Redis did not answer: told now, or the process takes it along
        if self._unsynced:
            with contextlib.suppress(RedisUnavailable):
                await self._sync()
        with contextlib.suppress(RuntimeError):
            renewer = self._renewers.pop(asyncio.get_running_loop(), None)
            if renewer is not None:
                renewer.cancel()
        await self._client.aclose()

    async def set_kept(self, key: str, total: int) -> None:
        await self._purged([self.ns, key, total, 0])

    async def drop(self, key: str) -> None:
        await self._purged([self.ns, key, "", 1])  # the latest version was purged too

    async def _purged(self, args: list[object]) -> None:
        try:
            await self._client.run(lua.PURGED, args)
        except RedisUnavailable:
            self._missed(str(args[1]), "purge_versions")

    # -- failure handling ---------------------------------------------------------------

    def _reachable(self) -> None:
        if self._outage:
            self._outage = False
            logger.warning("quota ledger: Redis is reachable again")

    def _unavailable(self, operation: str, key: str | None, exc: RedisUnavailable) -> None:
        """Fail closed (raise), or fail open (log once per outage and go on)."""
        first = not self._outage
        self._outage = True
        if not self._fail_open:
            raise StorageUnavailableError(
                "quota ledger: Redis unavailable", operation=operation, key=key
            ) from exc
        if first:
            logger.warning(
                "quota ledger: Redis unavailable (%s); writes proceed unchecked "
                "(STORAGE_QUOTA_FAIL_OPEN) until it is back",
                exc,
            )

    def _missed(self, key: str, operation: str) -> None:
        """``key`` changed and Redis could not be told: list its quotas again later."""
        if not self._outage:
            self._outage = True
            logger.warning("quota ledger: Redis unavailable during %s of %r", operation, key)
        self._dirty.add(key)

    @property
    def _unsynced(self) -> bool:
        """Something set or changed here that Redis has not been told yet."""
        return bool(
            self._unpushed
            or self._repush
            or self._dirty
            or self._replay
            or self._unpushed_versioning is not None
        )

    async def _sync(self) -> None:
        """Push limits set here and report keys changed while Redis was away."""
        if self._unpushed_versioning is not None:
            await self._push_versioning()
        while self._unpushed or self._repush:
            pushed = dict(self._unpushed)
            args: list[object] = [self.ns]
            for prefix, limit in pushed.items():
                args += [prefix, "" if limit is None else limit]
            epoch = str(await self._client.run(lua.SET_LIMITS, args))
            self._repush = False
            for prefix, limit in pushed.items():
                if self._unpushed.get(prefix, limit) == limit:
                    self._unpushed.pop(prefix, None)
            if self._epoch and epoch != self._epoch:
                self._push_all()  # Redis lost what was pushed before: all of it again
            self._epoch = epoch
        if self._dirty:
            keys = sorted(self._dirty)
            marks = keys
            if len(keys) > _MAX_DIRTY:
                # every quota instead (a prefix is covered by its own quota)
                marks = ["", *await self._quota_prefixes()]
            await self._client.run(lua.INVALIDATE, [self.ns, *marks])
            self._dirty.difference_update(keys)
            logger.warning(
                "quota ledger: usage will be listed again (changed while Redis was away)"
            )
        # a release only once its key's quotas are marked: never a moment when its
        # object is neither reserved nor counted
        for step in [step for step in self._replay if step[0] not in self._dirty]:
            try:
                # taken in one call: the sync of another thread's loop may take it too
                self._replay.remove(step)
            except ValueError:
                continue  # it did: it runs it
            try:
                await self._client.run(step[1], step[2])
            except BaseException:
                self._replay.append(step)
                raise

    def _lost(self, key: str, reservation: str) -> None:
        """A commit may not have reached Redis: its reservation is given back later."""
        self._replay.append((key, lua.RELEASE, [self.ns, reservation]))

    def _push_all(self) -> None:
        """Redis lost its data (a restart without persistence): send our limits again."""
        for prefix, limit in list(self._limits.items()):  # (another thread may set one)
            self._unpushed.setdefault(prefix, limit)
        self._repush = True  # marks the epoch (with no limit too), so writes stop asking

    # -- the ledger steps -------------------------------------------------------------

    async def _lock(self, hold: _RedisHeld) -> bool:
        """Take ``hold.keys`` in Redis, waiting while another process has one of them."""
        backoff = Backoff(_MAX_WAIT)
        while True:
            quiet = self._client.quiet
            try:
                await self._sync()
                got = await self._client.run(
                    lua.LOCK, [self.ns, hold.token, self.lease_ms, *hold.keys]
                )
            except RedisUnavailable:
                # deletes go on, a write fails (or fails open) at reserve; locks taken with
                # the answer lost are given back (a timeout: with the next step answered)
                unlock = hold.unlock_args()
                if not self._client.quiet:
                    with contextlib.suppress(RedisUnavailable):
                        await self._client.run(lua.FINISH, unlock)
                elif not quiet:
                    self._replay.append((None, lua.FINISH, unlock))
                return False
            self._reachable()
            if got:
                hold.since = str(got)
                return True
            await backoff.wait()

    async def _finish(self, hold: _RedisHeld) -> None:
        olds = [hold.old_text(key) for key in hold.deleted]
        found = ",".join(olds) if all(olds) else ""  # (every size found on disk, or none)
        args: list[object] = [
            self.ns, hold.token, hold.since, len(hold.deleted), *hold.deleted, found,
        ]  # fmt: skip
        if hold.locked:
            args += hold.keys
        try:
            if hold.unreachable:  # asking again would wait a whole timeout more
                raise RedisUnavailable("unreachable at lock")
            hold.relisted = await self._client.run(lua.FINISH, args) == 2
        except (RedisUnavailable, asyncio.CancelledError) as exc:
            # the step ran or not (cancelled before its answer, or before it was sent while
            # connecting): the deletes' quotas are listed again, the locks given back with
            # this process's next step (else they hold for a lease)
            if hold.locked:
                self._replay.append((None, lua.FINISH, hold.unlock_args()))
                hold.locked = False
            if isinstance(exc, asyncio.CancelledError):
                self._dirty.update(hold.deleted)
                raise
            for key in hold.deleted:
                self._missed(key, "delete")
            return
        self._reachable()
        hold.locked = False

    async def forget(self, key: str) -> None:
        hold = _current.get()
        if hold is not None and key in hold.keys:
            hold.deleted.append(key)  # recorded with the unlock, in one step
            return
        try:
            await self._client.run(lua.FINISH, [self.ns, "", "", 1, key, ""])
        except RedisUnavailable:
            self._missed(key, "delete")

    async def reserve(
        self,
        key: str,
        size: int,
        operation: str,
        *,
        requested: int | None = None,
        frees: str | None = None,
    ) -> Reservation | None:
        reservation = _RedisReservation(self, _current.get(), key, operation)
        try:
            found = await self._reserve(reservation, size, requested, first=True, frees=frees)
        except RedisUnavailable as exc:
            # the answer may be what was lost (a timeout): the step may have run, so undo
            # it while Redis answers; else its lease runs out on its own
            await reservation.release()
            self._unavailable(operation, key, exc)  # raises when failing closed
            self._dirty.add(key)  # lands uncounted: list its quotas again once Redis is back
            return None
        except asyncio.CancelledError:
            # cancelled awaiting the answer: the step may have run all the same, its bytes
            # held for a lease (the hold's exit frees the key's lock)
            await asyncio.shield(reservation.release())
            raise
        if not found and reservation._hold is not None:
            reservation._hold.loose.append(key)
        return reservation if found else None

    async def _loosen(self, keys: list[str]) -> None:
        """Writes of ``keys`` that no quota covered when they reserved are over: a quota
        set meanwhile (by any process) covering one of them may have been listed before
        it landed, and it records none of them, so it is listed again on next use."""
        try:
            await self._client.run(lua.INVALIDATE, [self.ns, *keys])
        except RedisUnavailable:
            self._dirty.update(keys)  # marked with the next step Redis answers
        except asyncio.CancelledError:
            self._dirty.update(keys)
            raise

    async def _reserve(
        self,
        reservation: _RedisReservation,
        total: int,
        requested: int | None,
        *,
        first: bool,
        frees: str | None = None,
        want: int | str | None = None,
    ) -> bool:
        """One reserve step; ``False`` when no quota covers the key. ``want``: a total
        past ``total`` to hold ahead, as far as the quotas allow, or ``"="``: check the
        whole ``total`` against the quotas as they are now (see RESERVE)."""
        key = reservation.key
        hold = reservation._hold
        backoff = Backoff(_MAX_WAIT)
        recalled: float | None = None  # when the allowances were first recalled for it
        while True:
            if self._unsynced:
                await self._sync()
            if self._refresh_seconds is not None:
                await self._refresh_due(key)
            # a share still held after RECALL_SECONDS (a process that died holding it,
            # until its lease ends) counts as used: refused, as a draw is, not retried
            now = asyncio.get_running_loop().time()
            recall = recalled is None or now - recalled < RECALL_SECONDS
            # a lazy hold's lock is taken here, in the same step as the reservation
            take = hold is not None and hold.lazy and not hold.locked and hold.keys == [key]
            try:
                result = await self._client.run(
                    lua.RESERVE,
                    [self.ns, reservation._id, key, total, frees or "", self.lease_ms,
                     1 if first else 0, hold.token if take and hold is not None else "",
                     self._epoch, "" if want is None else want,
                     hold.old_text(key) if hold is not None else "",
                     hold.old_text(frees) if hold is not None and frees else "",
                     "" if recall else "0"],
                )  # fmt: skip
            except BaseException:  # a lost answer, or cancelled awaiting it
                if take and hold is not None:
                    hold.locked = True  # it may be ours: the hold's exit unlocks it
                raise
            self._reachable()
            state = result[0]
            if take and hold is not None and state not in ("none", "reset", "locked"):
                hold.locked = True
            if state == "ok":
                reservation._granted = int(result[1])
                return True
            if state == "none":
                return False
            if state == "reset":
                self._push_all()
            elif state in ("locked", "recall"):  # another process has this key, or
                # holds an allowance it is asked to give back now
                if state == "recall" and recalled is None:
                    recalled = now
                await backoff.wait()
            elif state == "unseeded":
                await self._seed(result[1], force=False)
            elif state == "over":
                raise StorageQuotaExceededError(
                    used=int(result[2]),
                    limit=int(result[3]),
                    requested=total if requested is None else requested,
                    prefix=result[1],
                    operation=reservation.operation,
                    key=key,
                )

    async def _refresh_due(self, key: str) -> None:
        """``STORAGE_QUOTA_REFRESH_SECONDS``: list the quotas this process set again."""
        for prefix in self._due(key):
            self._refreshed[prefix] = asyncio.get_running_loop().time()
            await self._seed(prefix, force=True)

    def _due(self, key: str) -> list[str]:
        """The quotas this process set over ``key`` whose refresh interval has run out."""
        if self._refresh_seconds is None:
            return []
        now = asyncio.get_running_loop().time()
        return [
            prefix
            for prefix in list(self._limits)
            if key.startswith(prefix)
            and now - self._refreshed.setdefault(prefix, now) > self._refresh_seconds
        ]

    async def _seed(self, prefix: str, *, force: bool) -> None:
        """List ``prefix`` once (one process does, the others wait) and swap its usage in."""
        token = new_id()
        self.listings += 1
        try:
            await self._list(prefix, token, force)
        except BaseException:
            # cancelled, or the scan failed: the next user lists at once, not after a lease
            with contextlib.suppress(RedisUnavailable):
                await asyncio.shield(self._client.run(seeding.SEED_ABORT, [self.ns, prefix, token]))
            raise
        finally:
            self.listings += 1

    async def _list(self, prefix: str, token: str, force: bool) -> None:
        backoff = Backoff(_MAX_WAIT)
        while True:
            state = await self._client.run(
                seeding.SEED_BEGIN, [self.ns, prefix, token, self.lease_ms, 1 if force else 0]
            )
            if state == "seeded":
                return
            if state == "go":
                break
            if (
                force and state == "wait"
            ):  # another process is listing it now: that listing is as fresh
                force = False
            await backoff.wait()
        if self._probe is not None:  # learned with each listing, as the in-process ledger does
            await self._probed(self._probe)
        total = 0
        batch: list[object] = []
        async for info in self._scan(prefix):
            total += info.size
            batch += [info.key, info.size]
            if len(batch) >= 2 * _SEED_BATCH:
                await self._client.run(
                    seeding.SEED_STAGE, [self.ns, prefix, token, self.lease_ms, *batch]
                )
                batch = []
        if batch:
            await self._client.run(
                seeding.SEED_STAGE, [self.ns, prefix, token, self.lease_ms, *batch]
            )
        await self._client.run(seeding.SEED_END, [self.ns, prefix, token, total])

    async def usage(self, prefix: str) -> Usage:
        try:
            await self._sync()
            while True:
                limit, used, reserved, seeded, epoch, allowed = await self._client.run(
                    lua.USAGE, [self.ns, prefix]
                )
                if not epoch or (self._epoch and epoch != self._epoch):
                    self._push_all()
                    await self._sync()
                    continue
                if limit is None:
                    raise LookupError(prefix)
                if seeded:
                    # (the allowances processes hold are not in use: see allowance_lua)
                    in_use = int(used) + int(reserved) - int(allowed)
                    return Usage(prefix=prefix, used=in_use, limit=int(limit))
                await self._seed(prefix, force=False)
        except RedisUnavailable as exc:
            raise StorageUnavailableError(
                "quota ledger: Redis unavailable", operation="get_usage", key=prefix
            ) from exc

    async def refresh(self, prefix: str | None = None) -> None:
        try:
            await self._sync()
            prefixes = [prefix] if prefix is not None else await self._quota_prefixes()
            for p in prefixes:
                await self._seed(p, force=True)
        except RedisUnavailable as exc:
            raise StorageUnavailableError(
                "quota ledger: Redis unavailable", operation="refresh_usage", key=prefix
            ) from exc

    async def prefixes_covering(self, key: str, operation: str) -> list[str]:
        # limits live in Redis, set by any process: ours pushed first, kept here (a reset)
        prefixes = ["", *(key[: i + 1] for i, ch in enumerate(key) if ch == "/")]
        try:
            await self._sync()
            limits = await self._client.call("HMGET", self.ns + ":limits", *prefixes)
        except RedisUnavailable as exc:
            self._unavailable(operation, key, exc)  # raises failing closed
            limits = [None] * len(prefixes)
        return [
            p
            for p, limit in zip(prefixes, limits, strict=True)
            if limit is not None or p in self._limits
        ]

    async def _quota_prefixes(self) -> list[str]:
        prefixes: list[str] = await self._client.call("HKEYS", self.ns + ":limits")
        return sorted(prefixes)
