"""Leases of the Redis ledger: ids of reservations and lock tokens, and their renewal."""

from __future__ import annotations

import asyncio
import itertools
import os
import weakref
from typing import TYPE_CHECKING

from file_storage._quota.redis import scripts as lua

if TYPE_CHECKING:
    from file_storage._quota.redis.hold import _RedisHeld as RedisHeld
    from file_storage._quota.redis.ledger import RedisQuotaManager


def _new_prefix() -> str:
    return os.urandom(8).hex() + ":"


# ids of reservations and lock tokens: unique across processes (a random prefix, drawn
# again in a forked child) and cheap within one (a counter). The prefix is drawn again
# as a child's first id is made, not by a hook of its own: the hooks that reset the
# ledgers in a child run in the order they were registered, and one that makes an id
# (a new allowance member: allowance.Book.forked) would otherwise make the parent's next
_ids: dict[str, object] = {"prefix": _new_prefix(), "pid": os.getpid()}
_counter = itertools.count()


def new_id() -> str:
    if _ids["pid"] != os.getpid():
        _ids.update(prefix=_new_prefix(), pid=os.getpid())
    return f"{_ids['prefix']}{next(_counter)}"


class Renewer:
    """Renews the leases of the holds of one event loop that outlive a third of a lease.

    One timer per loop, not a task per write: a write that ends within a third of its
    lease (nearly all do) is never renewed. A hold older than that at a tick is renewed
    then and at each tick after, so a lease is renewed before two thirds of it have run.
    """

    def __init__(self, ledger: RedisQuotaManager, loop: asyncio.AbstractEventLoop) -> None:
        self._ledger = ledger
        # weakly: the ledger keeps a renewer per loop, which must not keep its loop alive
        # once it ended (a script calling asyncio.run per job would keep them all)
        self._loop = weakref.ref(loop)
        self._interval = ledger.lease_seconds / 3
        self.holds: dict[RedisHeld, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, hold: RedisHeld) -> None:
        loop = asyncio.get_running_loop()  # (this renewer's)
        self.holds[hold] = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(self._interval, self._tick)

    def remove(self, hold: RedisHeld) -> None:
        self.holds.pop(hold, None)
        if not self.holds and self._timer is not None:
            # no tick while idle; and a pending one would keep a loop that ends alive
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        loop = self._loop()
        if not self.holds or loop is None:
            return
        due = loop.time() - self._interval * 0.9
        old = [hold for hold, since in self.holds.items() if since <= due]
        if old:
            task = loop.create_task(self._renew(old))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._timer = loop.call_later(self._interval, self._tick)

    async def _renew(self, holds: list[RedisHeld]) -> None:
        ledger = self._ledger
        calls = []
        for h in holds:
            if h.locked or h.reservations:
                args = [ledger.ns, h.token, ledger.lease_ms, len(h.reservations)]
                calls.append(ledger._client.run(lua.RENEW, [*args, *h.reservations, *h.keys]))
        # a lease that runs out is checked again at commit
        await asyncio.gather(*calls, return_exceptions=True)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
