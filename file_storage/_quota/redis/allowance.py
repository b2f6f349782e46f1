"""Allowances: the Redis ledger on local disk, where a process spends its share unasked.

A save on local disk costs a few hundred microseconds of CPU; two Redis round trips per
save to a Redis on the same cores cost about as much again. So on local disk each
process holds an *allowance* of every quota it writes under (a share of its free space,
reserved in Redis), draws its saves from it in memory, and sends what it spent (each
key's difference, found on disk under the key's lock every process of the machine
takes) in one call every few tens of milliseconds, which also tops the allowance up.
The Lua side and what it guarantees are in
:mod:`file_storage._quota.redis.allowance_lua`.

This module is one process's side: the :class:`Book` of what it holds, spent and has
still to send, and the task that sends it (:meth:`Book.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from itertools import chain
from typing import TYPE_CHECKING, Any, Protocol

from file_storage._loops import SharedLock
from file_storage._quota.redis.allowance_lua import ALLOW
from file_storage._quota.redis.lease import new_id
from file_storage._quota.redis.wire import RedisUnavailable
from file_storage.backends._support import run_whole

if TYPE_CHECKING:
    from file_storage._quota.redis.ledger import RedisQuotaManager

logger = logging.getLogger("file_storage")

CHUNK = 4 * 1024 * 1024  # what a member asks to hold per quota, ahead of its saves
LARGEST = 1024 * 1024  # a write past this reserves in Redis, as without allowances
INTERVAL = 0.05  # seconds between two calls while there is something to send
IDLE = 2.0  # seconds with nothing drawn (under a quota, or at all): its share given back
KNOWN = 4096  # quotas known per member at most (then they are asked again as used)
RECALLED = 1.0  # a quota recalled is not drawn on for this long
# a member's lease (at most the ledger's): a listing waits for every live member, so one
# whose event loop is stuck (a long blocking call) holds listings back this long at most
MEMBER_LEASE = 10.0


class Disk(Protocol):
    """What the backend gives the ledger: key locks every process of the machine takes,
    the sizes at keys (``None``: no object), and for a save, the size its landing
    replaced, read under the key's lock as it lands (``expect``, then ``replaced``)."""

    refused: bool  # the file system refuses the locks

    def lock(self, keys: list[str]) -> AbstractAsyncContextManager[None]: ...

    def sizes(self, keys: list[str]) -> dict[str, int | None]: ...

    def expect(self, key: str) -> None: ...

    def replaced(self, key: str) -> tuple[bool, int | None]: ...


class DiskLocksUnavailable(Exception):
    """Raised by :meth:`Disk.lock` where the file system refuses the locks: the hold
    then goes through Redis, with Redis's sizes."""


def _keys(deltas: dict[str, dict[str, int]]) -> set[str]:
    return {key for keys in deltas.values() for key in keys}


def covering(key: str) -> list[str]:
    """Every prefix a quota covering ``key`` could have: ``""`` and each folder."""
    return ["", *(key[: i + 1] for i, ch in enumerate(key) if ch == "/")]


class Book:
    """One process's allowances under one ledger, shared by its threads and event loops
    (every field under ``_mu``)."""

    def __init__(self, ledger: RedisQuotaManager, disk: Disk) -> None:
        self.ledger = ledger
        self.disk = disk
        self.lease = min(ledger.lease_seconds, MEMBER_LEASE)
        self._mu = threading.Lock()
        self._calls = SharedLock()  # one call at a time, from any loop
        self._reset()

    def _reset(self) -> None:
        """A new member: nothing held (the old one's lease runs out in Redis, its quotas
        then listed again)."""
        self.member = new_id()
        self.fresh = True
        self.agen = ""  # the last agen Redis told
        self.acked = ""  # the last agen this member acknowledged
        self.deadline = 0.0  # monotonic time its allowances can be drawn on until
        self.plain = False  # the store keeps no prior versions (else no allowances)
        self.limits: dict[str, int | None] = {}  # prefix -> limit (None: no quota), at agen
        self.ready: set[str] = set()  # prefixes with a quota drawn on now (no listing)
        self.held: dict[str, int] = {}
        self.touched: dict[str, float] = {}  # prefix -> when a hold last drew there
        self.spent: dict[str, int] = {}
        self.pend: dict[str, int] = {}  # drawn by writes in flight
        # quota prefix -> key -> the difference its changes made, not sent yet
        self.deltas: dict[str, dict[str, int]] = {}
        self.inflight = 0  # holds drawing now
        self.recalled: dict[str, float] = {}
        self.used_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def forked(self) -> None:
        """In a child forked from the process: the parent's draws are the parent's."""
        self._mu = threading.Lock()
        self._calls = SharedLock()
        self._reset()

    # -- drawing (under the hold's key locks) -----------------------------------------

    def open_for(self, prefixes: Iterable[str]) -> bool | None:
        """Start a hold that draws on allowances (``True``), one that goes through Redis
        (``False``: a quota there is being listed, or none can be drawn now), or ``None``:
        a prefix is not known yet (ask :meth:`describe`)."""
        with self._mu:
            if self.fresh or not self.plain or self.acked != self.agen:
                return False
            if time.monotonic() >= self.deadline:
                return False
            for p in prefixes:
                if p not in self.limits:
                    return None
                if self.limits[p] is not None and p not in self.ready:
                    return False
            self.inflight += 1
            self.used_at = time.monotonic()
            return True

    def unready(self, prefixes: list[str]) -> list[str] | None:
        """The prefixes with a quota not drawn on now (being listed, or to be); ``None``:
        one is not known yet (ask :meth:`describe`)."""
        with self._mu:
            if self.fresh or any(p not in self.limits for p in prefixes):
                return None
            return [p for p in prefixes if self.limits[p] is not None and p not in self.ready]

    def quotas_of(self, key: str) -> list[str]:
        with self._mu:
            return [p for p in covering(key) if self.limits.get(p) is not None]

    def close_hold(self, member: str) -> None:
        with self._mu:
            if member != self.member:
                return  # (a member since replaced: its holds no longer count)
            self.inflight -= 1
            wake = self.inflight == 0 and self.acked != self.agen
        if wake:
            self.wake()

    def draw(self, prefixes: list[str], needs: dict[str, int]) -> dict[str, int]:
        """Take ``needs`` from what this member holds; the shortfall per prefix (empty:
        drawn)."""
        with self._mu:
            short = {}
            for p in prefixes:
                left = self.held.get(p, 0) - self.spent.get(p, 0) - self.pend.get(p, 0)
                if needs[p] > left:
                    short[p] = needs[p] - max(left, 0)
            if not short:
                for p in prefixes:
                    self.pend[p] = self.pend.get(p, 0) + needs[p]
                    self.touched[p] = self.used_at
            return short

    def trusted(self, member: str) -> bool:
        """What ``member`` drew is still its own in Redis: it was not replaced, and its
        lease, renewed by each call, has not run out (see :meth:`_answered`)."""
        with self._mu:
            return member == self.member and time.monotonic() < self.deadline

    def in_use(self, p: str) -> int:
        """What this process's writes hold under ``p`` or spent and did not send."""
        with self._mu:
            return self.pend.get(p, 0) + max(0, self.spent.get(p, 0))

    def undraw(self, needs: dict[str, int]) -> None:
        with self._mu:
            for p, n in needs.items():
                self.pend[p] = self.pend.get(p, 0) - n

    def spend(self, member: str, key: str, prefixes: list[str], delta: int) -> bool:
        """Record ``key``'s change by ``delta`` (its draws undone by the caller first);
        ``False``: drawn by a member since replaced (its quotas are listed again)."""
        with self._mu:
            if member != self.member:
                return False
            if prefixes and delta:
                for p in prefixes:
                    keys = self.deltas.setdefault(p, {})
                    keys[key] = keys.get(key, 0) + delta
                    self.spent[p] = self.spent.get(p, 0) + delta
            self.used_at = time.monotonic()
        return True

    # -- the calls ----------------------------------------------------------------------

    def start(self) -> None:
        """Run the sending task on this loop unless one runs (on this loop or another)."""
        task = self._task
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = loop.create_task(self.run())

    def stop(self) -> None:
        """The backend closes: no more calls (what was left to send was sent)."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):
                task.get_loop().call_soon_threadsafe(task.cancel)

    def wake(self) -> None:
        task, wake = self._task, self._wake
        if task is None or wake is None or task.done():
            return
        loop = task.get_loop()
        with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
            loop.call_soon_threadsafe(wake.set)

    async def run(self) -> None:
        """Send what was spent, acknowledge, renew and top up, until idle for a while."""
        try:
            await self._run()
        except asyncio.CancelledError:
            # its loop ends (``asyncio.run`` cancels what is left): a member nobody calls
            # for would hold every listing's barrier back until its lease ran out, so it
            # sends what was spent and leaves, unless another loop's writes draw (the
            # next hold there starts this task again)
            with self._mu:
                leave = not self.fresh and self.inflight == 0
            if leave:
                with contextlib.suppress(RedisUnavailable):
                    await self.call(leave=True)
            raise

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        lease = self.lease
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), INTERVAL)
            wake.clear()
            with self._mu:
                idle = (
                    not self.deltas
                    and self.inflight == 0
                    and time.monotonic() - self.used_at > IDLE
                )
                # every interval while it holds a share: a recall (another process's
                # write needing what it holds ahead) is heard within one
                # and while a quota it knows is being listed: it draws there once it ends
                waiting = [p for p, limit in self.limits.items() if limit is not None]
                waiting = [p for p in waiting if p not in self.ready]
                due = bool(
                    self.deltas
                    or self.acked != self.agen
                    or time.monotonic() > self.deadline - lease * 2 / 3
                    or any(self.held.values())
                    or any(self._low(p) for p in self.held)
                    or waiting
                )
            try:
                if idle and not self.fresh:
                    await self.call(leave=True)
                    return
                if due and not self.fresh:
                    await self.call(describe=waiting)
            except RedisUnavailable:
                await asyncio.sleep(INTERVAL)  # (the member was replaced: see call)
            if self.fresh and idle:
                return

    def _unused(self, p: str, now: float, need: dict[str, int]) -> bool:
        """Under ``_mu``: nothing drawn under ``p`` for :data:`IDLE` seconds, nor now."""
        return not self.pend.get(p) and p not in need and now - self.touched.get(p, 0.0) > IDLE

    def _low(self, p: str) -> bool:
        left = self.held.get(p, 0) - self.spent.get(p, 0) - self.pend.get(p, 0)
        return left < CHUNK // 2 and self.recalled.get(p, 0.0) <= time.monotonic()

    async def describe(self, prefixes: list[str]) -> None:
        await self.call(describe=prefixes)

    async def call(
        self,
        *,
        need: dict[str, int] | None = None,
        describe: list[str] = (),  # type: ignore[assignment]
        leave: bool = False,
    ) -> dict[str, tuple[str, int, int]]:
        """One ALLOW call; the flags of the prefixes in ``need`` that were not granted."""
        grant = await self._calls.acquire()
        try:
            return await self._call(need or {}, list(describe), leave)
        finally:
            self._calls.release(grant)

    async def _call(
        self, need: dict[str, int], describe: list[str], leave: bool
    ) -> dict[str, tuple[str, int, int]]:
        ledger = self.ledger
        if ledger._unsynced:
            await ledger._sync()
        with self._mu:
            member, fresh = self.member, self.fresh
            deltas, self.deltas = self.deltas, {}
            spent, self.spent = self.spent, {}
            ack = self.agen if self.acked != self.agen and self.inflight == 0 else ""
            now = time.monotonic()
            asks: list[object] = []
            gives: dict[str, int] = {}
            self.recalled = {p: t for p, t in self.recalled.items() if t > now}
            for p in sorted(set(self.held) | set(need)):
                left = self.held.get(p, 0) - spent.get(p, 0) - self.pend.get(p, 0)
                give = 0
                unused = self._unused(p, now, need)
                if leave or self.recalled.get(p, 0.0) > now or unused:
                    give = max(left, 0)
                elif left > 2 * CHUNK:
                    give = left - CHUNK
                gives[p] = give
                # as Redis will hold it: what was spent is sent now, what is given back
                # is not drawn on meanwhile
                self.held[p] = self.held.get(p, 0) - spent.get(p, 0) - give
                want = 0 if leave or unused else self.pend.get(p, 0) + CHUNK
                asks += [p, give, want, need.get(p, 0), self.pend.get(p, 0)]
        args: list[object] = [
            ledger.ns, member, int(self.lease * 1000), 1 if fresh else 0, ack,
            1 if leave else 0,
            len(deltas),
            *(x for p, keys in deltas.items() for x in (p, len(keys), *chain(*keys.items()))),
            len(asks) // 5, *asks, *describe,
        ]  # fmt: skip
        sent_at = time.monotonic()
        # made whole when the caller is cancelled meanwhile: its answer is used (else
        # what it sent and was given would be listed again), the cancellation raised after
        step, cancelled = await run_whole(ledger._client.start(ALLOW, args))
        error = None if step.cancelled() else step.exception()
        if step.cancelled() or error is not None:
            # it ran or not: the keys' quotas are listed again once Redis answers, and a
            # new member draws from then on (this one's lease runs out in Redis)
            ledger._dirty.update(_keys(deltas))
            with self._mu:
                if self.member == member:
                    self._forget_member()
            if error is not None and not isinstance(error, RedisUnavailable):
                raise error
            raise cancelled or RedisUnavailable("the allowance call was cut")
        reply = step.result()
        try:
            return self._answered(reply, member, deltas, need, ack, leave, sent_at)
        finally:
            if cancelled is not None:
                raise cancelled

    def _answered(
        self,
        reply: list[Any],
        member: str,
        deltas: dict[str, dict[str, int]],
        need: dict[str, int],
        ack: str,
        leave: bool,
        sent_at: float,
    ) -> dict[str, tuple[str, int, int]]:
        ledger = self.ledger
        ledger._reachable()
        refused: dict[str, tuple[str, int, int]] = {}
        with self._mu:
            if self.member != member:  # (replaced meanwhile by another loop's failure)
                ledger._dirty.update(_keys(deltas))
                return refused
            if reply[1] != "ok":
                # reset: Redis lost its data (every quota is listed again); expired: this
                # member's lease ran out, and Redis marked the keys' quotas to be listed
                if reply[1] == "reset":
                    ledger._push_all()
                self._forget_member()
                # (a write that asked goes through Redis; the next hold draws again)
                return {p: ("busy", 0, 0) for p in need}
            agen = str(reply[0])
            if ack:
                self.acked = ack
            elif self.fresh:
                self.acked = agen  # (nothing drawn yet: nothing to send first)
            self.fresh = False
            if agen != self.agen:
                self.agen = agen
                self.limits.clear()
                self.ready.clear()
            self.plain = reply[2] == 1
            self.deadline = sent_at + self.lease * 0.8
            for p, held, flag, used, limit, mine in reply[3]:
                if flag == "gone":
                    # (no quota there now, or none held: a write that asked goes
                    # through Redis rather than ask again)
                    self.held.pop(p, None)
                    if need.get(p):
                        refused[p] = ("busy", 0, 0)
                    continue
                self.held[p] = int(held)
                if flag == "recalled":
                    self.recalled[p] = time.monotonic() + RECALLED
                elif flag in ("over", "busy", "recall") and need.get(p):
                    # what this process holds for its writes is known better here
                    # (drawn ahead, or sent meanwhile): the caller adds it back
                    refused[p] = (flag, int(used) - int(mine), int(limit))
            now = time.monotonic()
            for p in [p for p, held in self.held.items() if not held]:
                if self._unused(p, now, need) and not self.spent.get(p):
                    # (not asked for at each call: a member writing under many quotas, one
                    # per user, asks only for those it wrote under lately)
                    del self.held[p]
                    self.touched.pop(p, None)
                    self.pend.pop(p, None)
            if len(self.limits) > KNOWN:
                self.limits.clear()
                self.ready.clear()
            for p, limit, ready in reply[4]:
                self.limits[p] = int(limit) if limit != "" else None
                if ready == 1 and limit != "":
                    self.ready.add(p)
                else:
                    self.ready.discard(p)
            if leave:
                self._forget_member()
        return refused

    def _forget_member(self) -> None:
        """Under ``_mu``: a new member from now (what was still to be sent is listed
        again: the caller marked its keys)."""
        task, wake, pend = self._task, self._wake, self.pend
        self._reset()
        # draws in flight stay counted here until undone (their commits find the member
        # replaced: their keys' quotas are listed again)
        self.pend = pend
        self._task, self._wake = task, wake
